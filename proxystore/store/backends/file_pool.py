"""The writing side of page reuse: evicted objects' pages kept for the next writes.

Faulting fresh pages into a memory file system costs several times the copy itself (each
4 KiB page is allocated, zeroed and mapped). Ray's object store avoids it by keeping its
memory; a :class:`PagePool` does the same for a zero-copy
:class:`~proxystore.store.backends.file.FileBackend`:

* **Evicting** an object of at least :data:`MIN_POOLED` bytes renames its file to a hidden
  pool name instead of deleting it (the key is gone at once, as before).
* **Writing** an object takes the smallest pooled file that is large enough and that no
  process reads (an exclusive ``flock`` succeeds: every reader holds a shared one, see
  :mod:`~proxystore.store.backends.file_maps`), truncates it to the new size, copies the
  bytes in through a mapping this process keeps, and renames it to the key. After the first
  reuse of a file the write is one ``memcpy`` into memory whose pages are already there.
* **Bounded**: the pool holds at most ``limit`` bytes (oldest files go first), and when the
  store has been idle for ``idle`` seconds a background thread gives everything back. Files
  leaving the pool are truncated first, so their memory returns even if a parked mapping in
  another process still refers to them. Pool files are named ``.pool-<pid>-<host>-...``:
  those of a process that died are removed like its unfinished writes.

Each process has its own pool per store directory; a forked child starts with an empty one.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import threading
import time
import weakref
from collections.abc import Sequence

from proxystore.store.backends.base import new_key
from proxystore.store.backends.file_dir import pool_name
from proxystore.store.backends.file_maps import raw_map, raw_populate, raw_unmap

__all__ = [
    "DEFAULT_IDLE",
    "DEFAULT_LIMIT",
    "LIVE_MAX",
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
LIVE_MAX = 32
"""Most written objects whose writable mapping a process keeps, to reuse when evicted."""

_PREMAP_WAIT = 1.0  # seconds a write waits for a file being mapped in the background
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

    The truncation returns the memory at once even if another process keeps a parked mapping
    of the file (see :mod:`~proxystore.store.backends.file_maps`); a file somebody reads is
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
        self._live: dict[str, _File] = {}
        self._last = time.monotonic()
        self._generation = 0  # bumped when the pool is emptied at once (drain, fork)
        self._premapping: _File | None = None  # out of the list while the thread maps it
        self._reaper: threading.Thread | None = None
        self._pid = os.getpid()
        _POOLS.add(self)

    @property
    def pooled_bytes(self) -> int:
        """Bytes kept in the pool now."""
        with self._lock:
            mapping = self._premapping.size if self._premapping is not None else 0
            return mapping + sum(each.size for each in self._pooled)

    def _adopt(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's files are not ours
            self.forget()

    def write(self, key: str, path: str, views: Sequence[memoryview], size: int) -> bool:
        """Write ``views`` (``size`` bytes in all) to ``path`` through a pooled file.

        Returns ``False`` (nothing done) when no pooled file fits or is free; the caller then
        writes a new file.

        Raises:
            OSError: If the reused file could not be written or renamed (it is deleted).
        """
        if size < MIN_POOLED:
            return False
        self._adopt()
        found = self._take(size)
        if found is None:
            return False
        try:
            try:
                if found.size > size:
                    os.ftruncate(found.fd, size)
                    found.size = size
                if found.address and found.mapped < size:  # never expected: sizes only shrink
                    found.unmap()
                if not found.address:
                    found.address = raw_map(found.fd, size, private=False, writable=True)
                    found.mapped = size
                    raw_populate(found.address, size, _MADV_POPULATE_WRITE)
                target = memoryview((ctypes.c_char * size).from_address(found.address)).cast("B")
                offset = 0
                for view in views:
                    target[offset : offset + view.nbytes] = view
                    offset += view.nbytes
                target.release()
                now = time.time_ns()
                os.utime(found.fd, ns=(now, now))
            finally:
                fcntl.flock(found.fd, fcntl.LOCK_UN)
            os.replace(found.path, path)
        except BaseException:
            found.release()
            raise
        found.path = path
        dropped = None
        with self._lock:
            self._last = time.monotonic()
            old = self._live.pop(key, None)
            self._live[key] = found
            if len(self._live) > LIVE_MAX:
                dropped = self._live.pop(next(iter(self._live)))
            self._ensure_reaper()
        for each in (old, dropped):
            if each is not None:
                each.close()
        return True

    def discard(self, key: str) -> None:
        """Forget the kept mapping of ``key`` (its file was just replaced by a new one)."""
        with self._lock:
            known = self._live.pop(key, None)
        if known is not None:
            known.close()

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

    def _claim(self, key: str, path: str) -> _File | bool:
        """Open the file of ``key`` for rewriting (reusing the mapping kept from writing it).

        Returns the file, or ``True`` if it is missing, ``False`` if it is not to be pooled
        (too small or too large, or not ours to rewrite).
        """
        with self._lock:
            known = self._live.pop(key, None)
        try:
            info: os.stat_result | None = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        except OSError:
            if known is not None:
                known.close()
            return False
        if info is None or not MIN_POOLED <= info.st_size <= self.limit:
            if known is not None:
                known.close()
            return info is None
        if known is not None and known.ident != (info.st_dev, info.st_ino):
            known.close()  # rewritten under the key by someone else since
            known = None
        if known is None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            except FileNotFoundError:
                return True
            except OSError:
                return False  # not ours to rewrite (another user's object): delete it
            known = _File(fd, path, os.fstat(fd))
            if known.ident != (info.st_dev, info.st_ino):
                known.close()
                return False
        known.size = info.st_size
        return known

    def _new_pool_path(self) -> str:
        """A fresh pool name in the store directory (see ``file_dir.pool_name``)."""
        return os.path.join(self.directory, pool_name(new_key()[:16]))

    def give(self, key: str, path: str) -> bool:
        """Move the file of an evicted ``key`` into the pool.

        Returns ``True`` if the key's file is gone (pooled, or already missing), ``False`` if
        the caller should delete it (too small or too large to keep, or not ours to rewrite).
        """
        if self.limit <= 0:
            return False
        self._adopt()
        claimed = self._claim(key, path)
        if isinstance(claimed, bool):
            return claimed
        pooled = self._new_pool_path()
        try:
            os.rename(path, pooled)
        except OSError as exc:
            claimed.close()
            return isinstance(exc, FileNotFoundError)
        claimed.path = pooled
        self.admit(claimed)
        return True

    def keep_replaced(self, key: str, path: str) -> _File | None:
        """Before ``key`` is written again: link its current file to a pool name.

        The key still names the old file until the new one is renamed over it; then
        :meth:`admit` the returned file into the pool (or :meth:`abandon` it if the write
        failed). ``None`` when there is nothing to keep.
        """
        if self.limit <= 0:
            return None
        self._adopt()
        claimed = self._claim(key, path)
        if isinstance(claimed, bool):
            return None
        pooled = self._new_pool_path()
        try:
            os.link(path, pooled, follow_symlinks=False)
            linked = os.stat(pooled, follow_symlinks=False)
        except OSError:
            claimed.close()
            return None
        if (linked.st_dev, linked.st_ino) != claimed.ident:  # replaced meanwhile
            with contextlib.suppress(OSError):
                os.unlink(pooled)
            claimed.close()
            return None
        claimed.path = pooled
        return claimed

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

    def abandon(self, claimed: _File) -> None:
        """Drop a file from :meth:`keep_replaced` whose key was not written (it stays there)."""
        with contextlib.suppress(OSError):
            os.unlink(claimed.path)  # the pool name only
        claimed.close()

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
                    if not self._pooled and not self._live:
                        self._reaper = None
                        return
                    left = self._last + self.idle - time.monotonic()
                    if left <= 0:
                        self._reaper = None
                        pooled, self._pooled = self._pooled, []
                        live, self._live = self._live, {}
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
                for each in live.values():
                    each.close()
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
                self._wake.notify_all()
            job.release()
            return
        with self._wake:
            self._premapping = None
            self._wake.notify_all()  # a write may be waiting for this file
            if generation == self._generation:
                self._pooled.append(job)
                self._pooled.sort(key=lambda each: each.used)  # oldest first, for _trim
                return
        job.release()  # drained meanwhile

    def drain(self) -> None:
        """Give back every pooled file and drop every kept mapping now."""
        if self._pid != os.getpid():
            self.forget()
            return
        with self._wake:
            pooled, self._pooled = self._pooled, []
            live, self._live = self._live, {}
            self._generation += 1
            self._wake.notify_all()  # the background thread ends
        for each in pooled:
            each.release()
        for each in live.values():
            each.close()

    def forget(self) -> None:
        """In a forked child: drop the parent's files without touching them."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._generation += 1
        pooled, self._pooled = self._pooled, []
        live, self._live = self._live, {}
        if self._premapping is not None:  # the parent's thread was mapping it
            pooled.append(self._premapping)
            self._premapping = None
        self._reaper = None
        self._pid = os.getpid()
        for each in [*pooled, *live.values()]:
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
