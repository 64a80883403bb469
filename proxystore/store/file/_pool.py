"""The writing side of page reuse: evicted objects' pages kept for the next writes.

Faulting fresh pages into a memory file system costs several times the copy itself (each
4 KiB page is allocated, zeroed and mapped). Ray's object store avoids it by keeping its
memory; a :class:`PagePool` does the same for a zero-copy
:class:`~proxystore.store.file.backend.FileBackend`.

**The claim.** A file has exactly one name at any time (nothing here makes hard links). A
file leaves a key only by an atomic rename of the key's name to a fresh name of this process
(``evict``), or by an atomic exchange with the new version's file (``renameat2`` with
``RENAME_EXCHANGE``, :func:`~proxystore.store.file.directory.install`: the key names the
new file, and the old one comes back under the writer's name, so the key is never missing).
Only one process can win a rename of a given name, so whoever holds the file under its own
name owns it alone: it is in at most one pool, and no key names it. That owner may then
:meth:`PagePool.adopt` it (files of :data:`MIN_POOLED` bytes up to the pool's bound) or
delete it.

**A write never touches a file anything can still read.** Readers hold a shared ``flock``
while anything rebuilt on a file's pages is alive, in this process, another, or a forked
child (see ``_maps``). A write takes the smallest pooled
file that is large enough and whose exclusive lock it gets, truncates it to the new size,
copies the bytes in through a mapping, releases the lock, and the caller installs it under
the key. Files are truncated (to shrink, or to give memory back) only by their owner and only
under the exclusive lock.

**Bounded**: the pool holds at most ``limit`` bytes (oldest files go first), and when the
store has been idle for ``idle`` seconds a background thread gives everything back. A file
leaving the pool is truncated first when nobody reads it, so its memory returns even if a
parked mapping in another process still refers to it. Every pooled byte is counted in
:attr:`PagePool.pooled_bytes`. A writer also keeps the writable mappings of the last
:data:`KEPT_MAPPINGS` files it wrote, which now hold objects under keys (they own no memory of
their own), to skip mapping them again if it pools them later; they go when the pool is idle.
If such a file is deleted by another process meanwhile, its memory still returns: the deleter
truncates it when nobody reads it, else the last reader does. Pool files
are named ``.pool-<pid>-s<start>-<host>-...``: those of a process that died are removed like
its unfinished writes, at the next open of the directory.

Each process has its own pool per store directory; a forked child starts with an empty one.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import stat as stat_mode
import threading
import time
import weakref
from collections.abc import Sequence

from proxystore.store.backends.base import new_key
from proxystore.store.file._maps import raw_map, raw_populate, raw_unmap
from proxystore.store.file.directory import pool_name

__all__ = [
    "DEFAULT_IDLE",
    "DEFAULT_LIMIT",
    "KEPT_MAPPINGS",
    "MIN_POOLED",
    "PagePool",
    "default_limit",
    "delete_file",
]

MIN_POOLED = 1 << 20
"""Smallest object whose pages are kept (smaller ones cost little to write fresh)."""
DEFAULT_LIMIT = 1 << 30
"""Default bound of a pool, in bytes (at most a quarter of the file system, see
:func:`default_limit`)."""
DEFAULT_IDLE = 30.0
"""Default seconds without a write or an eviction after which a pool gives its memory back."""

KEPT_MAPPINGS = 8
"""Most writable mappings of written objects a process keeps, to reuse when it evicts them."""
_PREMAP_WAIT = 1.0  # seconds a write waits for a file being mapped in the background
_DRAIN_WAIT = 10.0  # seconds a drain waits for a file being mapped in the background
_MADV_POPULATE_WRITE = 23  # Linux 5.14+; older kernels answer EINVAL and pages fault instead


def default_limit(directory: str) -> int:
    """:data:`DEFAULT_LIMIT`, or a quarter of the file system holding ``directory``."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return DEFAULT_LIMIT
    return min(DEFAULT_LIMIT, info.f_blocks * info.f_frsize // 4)


def delete_file(path: str) -> None:
    """Delete ``path``, truncating it first when nobody reads it (no lock held on it).

    ``path`` is a name only this process knows. Never called on a key's name: a key's file
    is first renamed to a name of this process (see the module), so no other process can be
    rewriting the file being truncated.

    The truncation returns the memory at once even if another process keeps a parked mapping
    of the file (see ``_maps``); a file somebody reads is
    only unlinked, and its memory returns when its last reader lets go.

    Raises:
        OSError: If the file exists but cannot be deleted.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError:
        os.unlink(path)  # not ours to truncate (another user's object): unlink only
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass
        else:
            os.ftruncate(fd, 0)
        os.unlink(path)
    finally:
        os.close(fd)


class _File:
    """A file this process may rewrite: its descriptor, size and (once used) mapping."""

    __slots__ = ("address", "fd", "ident", "mapped", "path", "size", "used")

    def __init__(self, fd: int, path: str, info: os.stat_result) -> None:
        self.fd = fd
        self.path = path
        self.ident = (info.st_dev, info.st_ino)
        self.size = info.st_size
        self.address = 0
        self.mapped = 0
        self.used = time.monotonic()

    def unmap(self) -> None:
        if self.address:
            raw_unmap(self.address, self.mapped)
            self.address = self.mapped = 0

    def close(self) -> None:
        self.unmap()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def release(self) -> None:
        """Delete a pooled file and give its memory back (truncated first if nobody reads)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # still read somewhere: the last reader frees it
        else:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.close()


class PagePool:
    """Evicted objects' files of one store directory, kept for reuse by this process.

    Args:
        directory: The store directory (on a memory file system).
        limit: Most bytes kept (``0``: keep nothing).
        idle: Seconds without activity after which everything kept is given back.
    """

    def __init__(self, directory: str, *, limit: int, idle: float) -> None:
        self.directory = directory
        self.limit = limit
        self.idle = idle
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pooled: list[_File] = []
        # Writable mappings of files this process wrote, by file (a mapping keeps its file,
        # so the number is never another file's): reused if this process pools them again.
        self._mapped: dict[tuple[int, int], tuple[int, int]] = {}
        self._last = time.monotonic()
        self._generation = 0  # bumped when the pool is emptied at once (drain, fork)
        self._premapping: _File | None = None  # out of the list while the thread maps it
        self._reaper: threading.Thread | None = None
        self._pid = os.getpid()
        _POOLS.add(self)

    @property
    def kept_mappings(self) -> int:
        """How many writable mappings of written objects this process keeps (see module)."""
        with self._lock:
            return len(self._mapped)

    @property
    def pooled_bytes(self) -> int:
        """Bytes kept in the pool now."""
        with self._lock:
            mapping = self._premapping.size if self._premapping is not None else 0
            return mapping + sum(each.size for each in self._pooled)

    def _adopt(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's files are not ours
            self.forget()

    def write(self, views: Sequence[memoryview], size: int) -> str | None:
        """Write ``views`` (``size`` bytes in all) into a pooled file; return its name.

        The file leaves the pool: the caller installs it under the key (``directory.install``)
        (it is named by this process only, unlocked, its pages mapped by nobody here). Returns
        ``None`` (nothing done) when no pooled file fits or is free; the caller then writes a
        new file.

        Raises:
            OSError: If the reused file could not be written (it is deleted).
        """
        if size < MIN_POOLED:
            return None
        self._adopt()
        while True:
            found = self._take(size)
            if found is None:
                return None
            try:
                try:
                    info = os.fstat(found.fd)
                    if info.st_nlink != 1 or info.st_size < size:
                        found.size = -1  # never expected (the file is ours alone): drop it
                    else:
                        if info.st_size > size:
                            os.ftruncate(found.fd, size)
                        found.size = size
                        if found.address and found.mapped < size:
                            found.unmap()
                        if not found.address:
                            found.address = raw_map(found.fd, size, private=False, writable=True)
                            found.mapped = size
                            raw_populate(found.address, size, _MADV_POPULATE_WRITE)
                        target = (ctypes.c_char * size).from_address(found.address)
                        view = memoryview(target).cast("B")
                        offset = 0
                        for part in views:
                            view[offset : offset + part.nbytes] = part
                            offset += part.nbytes
                        view.release()
                        del target
                        now = time.time_ns()
                        os.utime(found.fd, ns=(now, now))
                finally:
                    fcntl.flock(found.fd, fcntl.LOCK_UN)
            except BaseException:
                found.release()
                raise
            if found.size < 0:
                found.release()
                continue
            dropped = []
            with self._lock:
                self._last = time.monotonic()
                if found.address:  # kept for when this process evicts the object again
                    self._mapped[found.ident] = (found.address, found.mapped)
                    found.address = found.mapped = 0
                    while len(self._mapped) > KEPT_MAPPINGS:
                        dropped.append(self._mapped.pop(next(iter(self._mapped))))
                self._ensure_reaper()
            found.close()
            for address, length in dropped:
                raw_unmap(address, length)
            return found.path

    def _take(self, size: int) -> _File | None:
        """Take the smallest free pooled file of at least ``size`` bytes, locked exclusively.

        A file the background thread is mapping is waited for (briefly): reusing it beats
        faulting a new file in.
        """
        deadline = time.monotonic() + _PREMAP_WAIT
        with self._wake:
            while True:
                fitting = sorted(
                    (each for each in self._pooled if each.size >= size), key=lambda f: f.size
                )
                for each in fitting:
                    try:
                        fcntl.flock(each.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue  # read somewhere (a live array on it): try another
                    self._pooled.remove(each)
                    self._last = time.monotonic()
                    return each
                soon = self._premapping
                left = deadline - time.monotonic()
                if soon is None or soon.size < size or left <= 0:
                    return None
                self._wake.wait(timeout=left)

    def _new_pool_path(self) -> str:
        """A fresh pool name in the store directory (see ``directory.pool_name``)."""
        return os.path.join(self.directory, pool_name(new_key()[:16]))

    def private_path(self) -> str:
        """A fresh name to rename a key's file to before it is adopted (or deleted)."""
        return self._new_pool_path()

    def adopt(self, path: str) -> bool:
        """Pool the file ``path``, which only this process names (see the module).

        Returns ``False`` if the caller should delete it instead: too small or too large to
        keep (or the pool is off), or not ours to rewrite.
        """
        if self.limit <= 0:
            return False
        try:
            if not MIN_POOLED <= os.lstat(path).st_size <= self.limit:
                return False  # the common case of small objects: no need to open it
        except OSError:
            return False
        self._adopt()
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            return False  # gone, or not ours to rewrite (another user's object)
        try:
            info = os.fstat(fd)
            keep = (
                stat_mode.S_ISREG(info.st_mode)
                and info.st_nlink == 1
                and MIN_POOLED <= info.st_size <= self.limit
            )
            if keep and not os.path.basename(path).startswith(".pool-"):
                pooled = self._new_pool_path()
                os.rename(path, pooled)
                path = pooled
        except OSError:
            keep = False
        if not keep:
            os.close(fd)
            return False
        claimed = _File(fd, path, info)
        with self._lock:
            kept = self._mapped.pop(claimed.ident, None)
        if kept is not None:  # written by this process: its pages are mapped already
            claimed.address, claimed.mapped = kept
        self.admit(claimed)
        return True

    def admit(self, claimed: _File) -> None:
        """Add a file, already under its pool name, to the pool."""
        claimed.used = time.monotonic()
        with self._lock:
            self._pooled.append(claimed)
            self._last = claimed.used
            released = self._trim()
            self._ensure_reaper()
            self._wake.notify_all()  # to map the new file ahead of the next write
        for each in released:
            each.release()

    def _trim(self) -> list[_File]:
        released = []
        total = sum(each.size for each in self._pooled)
        if self._premapping is not None:  # counted: it comes back to the pool
            total += self._premapping.size
        while self._pooled and total > self.limit:
            oldest = self._pooled.pop(0)
            total -= oldest.size
            released.append(oldest)
        return released

    def _ensure_reaper(self) -> None:
        """Start the idle timer's thread if it is not running (with the lock held)."""
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap, name="proxystore-page-pool", daemon=True
            )
            self._reaper.start()

    def _reap(self) -> None:
        """Run the pool's background thread until nothing is kept.

        It maps newly pooled files ahead of the next write, and gives everything back after
        :attr:`idle` seconds without activity.
        """
        while True:
            with self._wake:
                job = None
                while job is None:
                    if not self._pooled and not self._mapped:
                        self._reaper = None
                        return
                    left = self._last + self.idle - time.monotonic()
                    if left <= 0:
                        self._reaper = None
                        pooled, self._pooled = self._pooled, []
                        mapped, self._mapped = self._mapped, {}
                        break
                    job = next((each for each in self._pooled if not each.address), None)
                    if job is not None:
                        self._pooled.remove(job)  # out of reach of writes while it is mapped
                        self._premapping = job
                        generation = self._generation
                    else:
                        self._wake.wait(timeout=left)
            if job is None:
                for each in pooled:
                    each.release()
                for address, length in mapped.values():
                    raw_unmap(address, length)
                return
            self._premap(job, generation)

    def _premap(self, job: _File, generation: int) -> None:
        """Map a pooled file and fill its page table, so its first reuse is a plain copy.

        Mapping and populating change no byte of the file, so readers may still use it.
        """
        try:
            job.address = raw_map(job.fd, job.size, private=False, writable=True)
            job.mapped = job.size
            raw_populate(job.address, job.size, _MADV_POPULATE_WRITE)
        except OSError:
            with self._wake:
                self._premapping = None
                job.release()
                self._wake.notify_all()
            return
        with self._wake:
            self._premapping = None
            if generation == self._generation:
                self._pooled.append(job)
                self._pooled.sort(key=lambda each: each.used)  # oldest first, for _trim
            else:
                job.release()  # drained meanwhile (under the lock: drain waits for it)
            self._wake.notify_all()  # a write or a drain may be waiting for this file

    def drain(self) -> None:
        """Give back every pooled file and drop every kept mapping now."""
        if self._pid != os.getpid():
            self.forget()
            return
        with self._wake:
            pooled, self._pooled = self._pooled, []
            mapped, self._mapped = self._mapped, {}
            self._generation += 1
            self._wake.notify_all()  # the background thread ends
            # A file being mapped in the background is given back by that thread, with the
            # lock held: wait for it, so nothing kept outlives the drain.
            deadline = time.monotonic() + _DRAIN_WAIT
            while self._premapping is not None and time.monotonic() < deadline:
                self._wake.wait(timeout=max(0.0, deadline - time.monotonic()))
        for each in pooled:
            each.release()
        for address, length in mapped.values():
            raw_unmap(address, length)

    def forget(self) -> None:
        """In a forked child: drop the parent's files without touching them."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._generation += 1
        pooled, self._pooled = self._pooled, []
        mapped, self._mapped = self._mapped, {}
        if self._premapping is not None:  # the parent's thread was mapping it
            pooled.append(self._premapping)
            self._premapping = None
        self._reaper = None
        self._pid = os.getpid()
        for address, length in mapped.values():
            raw_unmap(address, length)  # this process's copy of the mapping only
        for each in pooled:
            each.close()  # closes this process's copy of the descriptor and mapping only


_POOLS: weakref.WeakSet[PagePool] = weakref.WeakSet()


def _forget_all() -> None:
    for pool in list(_POOLS):
        pool.forget()


def _drain_all() -> None:
    for pool in list(_POOLS):
        with contextlib.suppress(Exception):
            pool.drain()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)
atexit.register(_drain_all)
