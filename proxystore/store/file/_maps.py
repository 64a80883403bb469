"""The reading side of page reuse: this process's memory mappings of a FileStore's objects.

A zero-copy :class:`~proxystore.store.file.backend.FileBackend` on a memory file system maps
each object's file. Two things make that as cheap as Ray's object store, whose workers keep
one arena mapped:

* **Locks say who reads.** Every reader holds a shared ``flock`` on the file for as long as
  anything rebuilt on its pages is alive (:func:`open_locked` takes it and checks that the
  file is still the one under the key; a key replaced meanwhile is opened again, until
  :data:`REPLACED_WAIT` seconds have passed). A writer reuses or truncates the pages of a
  file only when it can take the exclusive lock (``_pool``),
  so no live array ever sees its bytes change or vanish.
* **Mappings are parked, not torn down.** When the last object rebuilt on a mapping is
  garbage collected, the mapping is *parked*: its locked descriptor is closed (the mapping
  itself was made from another, unlocked, description of the file) and its page table
  kept. The next object written into the same pages (the writer reuses them) is then
  resolved without a single page fault. A copy-on-write mapping is parked only if no page
  of it was written (read from ``/proc/self/pagemap``), so a reused mapping always shows
  the file.

**Fork.** A ``flock`` belongs to the open file description, which a forked child shares. So a
mapping is never unlocked with ``LOCK_UN`` (that would unlock the child's copy too): closing
the locked descriptor drops this process's hold only, and the lock stays while a child still
holds its copy (the mapping is made from a second, unlocked description, since a mapping
keeps its description, and so a lock on it, alive). A child never parks what it inherited;
it closes it when its objects die.

**Memory.** Parked mappings are bounded (:data:`PARKED_MAX` per process) and dropped, by a
map (at most once a second), when unused for :data:`PARKED_IDLE` seconds or when their file was
deleted. They never keep memory the store gave back: a file is deleted (evicted, replaced or
given back by a pool) after truncating it to zero whenever nobody holds a lock on it, and when
a file was deleted under a reader, the last reader to let go truncates it (nobody else holds a
lock then, and parked mappings are never read again), so parked mappings elsewhere keep no
memory either.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import mmap
import os
import threading
import time
import weakref
from typing import Any

from proxystore.serialize import Buffer
from proxystore.store._filesystem import populate_mmap

__all__ = [
    "PARKED_IDLE",
    "PARKED_MAX",
    "REPLACED_WAIT",
    "drop_parked",
    "export_mapping",
    "is_mapped",
    "map_file",
    "open_locked",
    "parked_count",
    "populate",
    "populate_export",
]

PARKED_MAX = 8
"""Most parked mappings a process keeps (least recently used dropped first)."""
PARKED_IDLE = 30.0
"""Seconds a parked mapping is kept unused before it is unmapped."""

_PAGE = mmap.PAGESIZE
_MAP_FAILED = ctypes.c_void_p(-1).value
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+
REPLACED_WAIT = 30.0
"""Seconds a reader keeps opening a key that is replaced between its open and its lock (each
retry sees a newer version) before it gives up with :class:`TimeoutError`."""
_SWEEP_EVERY = 1.0  # seconds between sweeps of the parked mappings on the read path

_LIBC = ctypes.CDLL(None, use_errno=True)  # ctypes calls release the interpreter lock
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

# The top byte of a /proc/self/pagemap entry: bit 63 (0x80) "present", bit 61 (0x20) "file
# page or shared anonymous". A present page without 0x20 is a private copy: it was written.
_WRITTEN = bytes(1 if (b & 0xA0) == 0x80 else 0 for b in range(256))


def raw_map(fd: int, length: int, *, private: bool, writable: bool) -> int:
    """``mmap`` ``length`` bytes of ``fd`` (shared or private); return the address.

    Raises:
        OSError: If the kernel refuses.
    """
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable or private else 0)
    flags = mmap.MAP_PRIVATE if private else mmap.MAP_SHARED
    address = _LIBC.mmap(None, length, prot, flags, fd, 0)
    if address is None or address == _MAP_FAILED:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(address)


def raw_unmap(address: int, length: int) -> None:
    """``munmap`` a mapping made by :func:`raw_map`."""
    _LIBC.munmap(address, length)


def raw_populate(address: int, length: int, advice: int = _MADV_POPULATE_READ) -> None:
    """Fill the page table of a mapping (``MADV_POPULATE_*``, Linux 5.14+; else nothing)."""
    _LIBC.madvise(address, length, advice)


class _Mapping:
    """One mapping of one file in this process.

    Two descriptors: ``fd`` holds the shared lock while the mapping is in use (``-1`` while
    parked), and ``watch``, another open file description without a lock, is what the
    mapping was made from (a mapping keeps its description alive, so a lock on it would
    outlive every descriptor) and tells whether the file was deleted.
    """

    __slots__ = (
        "address",
        "fd",
        "ident",
        "length",
        "pid",
        "populated",
        "private",
        "used",
        "watch",
    )

    def __init__(self, fd: int, ident: tuple[int, int], length: int, *, private: bool) -> None:
        self.ident = ident
        self.length = length
        self.private = private
        self.pid = os.getpid()
        self.used = time.monotonic()
        self.populated = False  # the page table was filled (a reused mapping keeps it)
        self.address = 0
        self.watch = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)  # a new description
        try:
            self.address = raw_map(self.watch, length, private=private, writable=False)
        except BaseException:
            os.close(self.watch)
            raise
        self.fd = fd  # owned from here on

    def close(self) -> None:
        """Unmap and close (closing never unlocks a descriptor a child still holds)."""
        if self.address:
            raw_unmap(self.address, self.length)
            self.address = 0
        for fd in (self.fd, self.watch):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self.watch = -1

    def let_go(self) -> None:
        """Close a mapping in use until now (its objects died).

        If its file was deleted meanwhile and this was the last lock on it, truncate it: its
        memory returns although parked mappings elsewhere still refer to it (see the module).
        """
        if self.watch < 0 or self.pid != os.getpid() or not _deleted(self.watch):
            self.close()
            return
        try:
            writable = os.open(f"/proc/self/fd/{self.watch}", os.O_RDWR)
        except OSError:
            self.close()  # not ours to truncate (another user's object)
            return
        self.close()  # this process's hold; a forked child may still hold its copy
        try:
            fcntl.flock(writable, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new description
        except OSError:
            pass  # another reader (or a child) still holds it: the last one truncates
        else:
            with contextlib.suppress(OSError):
                os.ftruncate(writable, 0)
        finally:
            os.close(writable)

    def detach(self) -> None:
        """Close the locked descriptor (to park): the lock goes unless a child holds a copy."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = -1

    def adopt(self, fd: int) -> None:
        """Take over ``fd`` (opened and locked on this mapping's file) when leaving the park."""
        self.detach()
        self.fd = fd

    def clean(self) -> bool:
        """Whether no page of a private mapping was written (always true for shared ones)."""
        if not self.private:
            return True
        first = self.address // _PAGE
        pages = (self.length + _PAGE - 1) // _PAGE
        try:
            with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
                pagemap.seek(first * 8)
                entries = pagemap.read(pages * 8)
        except OSError:
            return False
        if len(entries) != pages * 8:
            return False
        return 1 not in entries[7::8].translate(_WRITTEN)


@functools.lru_cache(maxsize=64)
def _export_type(length: int) -> type[Any]:
    # A Python subclass of a ctypes array: weak references and attributes allowed.
    return type(f"_Export{length}", (ctypes.c_char * length,), {})


class _Registry:
    """The parked mappings of this process."""

    def __init__(self) -> None:
        # Reentrant: a garbage collection inside a locked section may park a mapping.
        self.lock = threading.RLock()
        self.parked: dict[tuple[tuple[int, int], bool], _Mapping] = {}
        self.swept = 0.0  # when sweep() last ran (monotonic)

    def take(self, ident: tuple[int, int], private: bool, length: int) -> _Mapping | None:
        with self.lock:
            found = self.parked.pop((ident, private), None)
        if found is None:
            return None
        if found.length < length or found.pid != os.getpid():
            found.close()
            return None
        return found

    def park(self, mapping: _Mapping) -> None:
        if mapping.pid != os.getpid() or _deleted(mapping.watch) or not mapping.clean():
            mapping.let_go()
            return
        mapping.detach()
        mapping.used = time.monotonic()
        dropped: list[_Mapping] = []
        with self.lock:
            old = self.parked.pop((mapping.ident, mapping.private), None)
            if old is not None:
                dropped.append(old)
            self.parked[(mapping.ident, mapping.private)] = mapping
            while len(self.parked) > PARKED_MAX:
                dropped.append(self.parked.pop(next(iter(self.parked))))
        for each in dropped:
            each.close()

    def sweep_now_and_then(self) -> None:
        """Run :meth:`sweep` at most once every ``_SWEEP_EVERY`` seconds.

        It is on the read path, and parked mappings of deleted files hold no memory (see the
        module), so they need not go at once.
        """
        now = time.monotonic()
        if now - self.swept >= _SWEEP_EVERY:
            self.swept = now
            self.sweep()

    def sweep(self, *, everything: bool = False) -> None:
        """Drop parked mappings unused for :data:`PARKED_IDLE` s or whose file is deleted."""
        now = time.monotonic()
        dropped = []
        with self.lock:
            for slot, mapping in list(self.parked.items()):
                stale = everything or now - mapping.used >= PARKED_IDLE or _deleted(mapping.watch)
                if stale and self.parked.get(slot) is mapping:
                    dropped.append(self.parked.pop(slot))
        for mapping in dropped:
            mapping.close()

    def forget(self) -> None:
        """In a forked child: drop (unmap, close) every inherited parked mapping."""
        self.lock = threading.RLock()
        parked, self.parked = self.parked, {}
        for mapping in parked.values():
            mapping.close()


_REGISTRY = _Registry()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_REGISTRY.forget)


def _deleted(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True


def parked_count() -> int:
    """How many mappings this process has parked (for tests and diagnostics)."""
    with _REGISTRY.lock:
        return len(_REGISTRY.parked)


def drop_parked() -> None:
    """Unmap every parked mapping of this process now."""
    _REGISTRY.sweep(everything=True)


def open_locked(path: str, wait: float = REPLACED_WAIT) -> tuple[int, os.stat_result] | None:
    """Open ``path`` read-only with a shared lock; ``None`` if it is missing.

    The lock is taken without waiting: a file another process holds exclusively is being
    rewritten from a pool of evicted objects or deleted, so the key no longer names it. After
    locking, the file must still be the one at ``path`` (a file leaves its key by a rename
    first); otherwise the key was replaced meanwhile and is opened again, until it holds
    still: a replaced key always names the old or the new version, so a reader never reports
    it missing. ``None`` only when the key itself is missing (never written, or evicted).

    Raises:
        TimeoutError: If the key was replaced under every open for ``wait`` seconds.
        OSError: Any other error but a missing file.
    """
    deadline = None
    tries = 0
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                os.close(fd)
            else:
                opened = os.fstat(fd)
                try:
                    named = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    os.close(fd)
                    return None  # evicted since the open
                if (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino):
                    return fd, opened
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        tries += 1
        now = time.monotonic()
        if deadline is None:
            deadline = now + wait
        elif now >= deadline:
            raise TimeoutError(
                errno.ETIMEDOUT, f"replaced under each of {tries} opens in {wait:g} s", path
            )
        if tries > 3:
            time.sleep(min(0.01, 0.0001 * tries))  # let the writers finish a version


def map_file(fd: int, info: os.stat_result, *, private: bool) -> memoryview:
    """Map the locked file ``fd`` (from :func:`open_locked`; this call owns it) for reading.

    Reuses a parked mapping of the same file when there is one (no page faults), else maps
    it. The returned view is read-only for a shared mapping and writable (copy-on-write) for a
    private one; the mapping is parked once nothing rebuilt on the view is alive.

    Raises:
        OSError: If the file cannot be mapped.
    """
    ident = (info.st_dev, info.st_ino)
    size = info.st_size
    mapping = _REGISTRY.take(ident, private, size)
    if mapping is not None:
        mapping.adopt(fd)  # the descriptor that holds our lock now
    else:
        try:
            mapping = _Mapping(fd, ident, size, private=private)
        except BaseException:
            os.close(fd)
            raise
    _REGISTRY.sweep_now_and_then()
    return export_mapping(mapping, size)


def export_mapping(mapping: _Mapping, size: int) -> memoryview:
    """A view of the first ``size`` bytes of ``mapping``; parks it when the view's users die."""
    export = _export_type(mapping.length).from_address(mapping.address)
    export.mapping = mapping
    weakref.finalize(export, _REGISTRY.park, mapping).atexit = False
    view = memoryview(export).cast("B")[:size]
    return view if mapping.private else view.toreadonly()


def is_mapped(owner: object) -> bool:
    """Whether ``owner`` (a buffer's exporter, ``memoryview.obj``) is a store file's mapping."""
    return isinstance(getattr(owner, "mapping", None), _Mapping)


def populate_export(view: memoryview) -> bool:
    """Fill the page table of a view from :func:`map_file`; ``False`` if it is not one.

    Done once per mapping: a parked and reused mapping keeps its page table.
    """
    mapping = getattr(view.obj, "mapping", None)
    if not isinstance(mapping, _Mapping):
        return False
    if mapping.address and not mapping.populated:
        raw_populate(mapping.address, mapping.length)
        mapping.populated = True
    return True


def populate(data: Buffer) -> None:
    """Fill the page table of a writable memory mapping without holding the interpreter lock.

    Used by the background half of a resolve (``MADV_POPULATE_READ``, Linux 5.14+), so a
    task's first pass over a copy-on-write array does not fault every few pages. Anything but a
    writable mapping is left alone.
    """
    if isinstance(data, memoryview) and populate_export(data):
        return
    populate_mmap(data)
