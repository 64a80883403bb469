"""``HostCacheLayer``: each object crosses the network once per host, then is mapped from memory.

On a cluster node with many worker processes, every process that resolves a proxy of a remote
store (Redis, Globus, a file system shared over the network) would otherwise fetch the object
itself. This layer puts a *host tier* between the store and its remote backend: a directory on a
memory file system (``/dev/shm/proxystore``) that every process of the user on the host shares.

* The first process on the host that resolves a key fetches it, straight into the host cache
  (a temporary file renamed into place). Concurrent resolvers, in this process or others, wait
  for that one fetch: a lock file per key, locked with ``flock`` (released by the kernel if the
  fetching process dies), polled with a bound.
* Every later resolve on the host, in any process, maps the file: the same zero-copy semantics
  as a ``FileStore`` under ``/dev/shm`` (copy-on-write by default, or shared and read-only).
* The cache stays under ``max_bytes``: least recently used files go first, but never one that a
  process still maps (each mapping holds a shared ``flock`` on its file for as long as it
  lives; eviction takes the exclusive lock without waiting, or skips the file).
* Each hit is revalidated against the remote backend's write time (one small request, skipped
  for keys whose objects never change), so ``strict`` and evictions elsewhere are honoured: a
  newer version is fetched again, a key evicted remotely is gone here too.

Writes (``put``) go to the remote backend only. The directory and its files are private to the
user (0700/0600).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import socket
import time
import weakref
from collections.abc import Sequence

from proxystore.exceptions import StoreError, StoreTimeoutError
from proxystore.serialize import Buffer
from proxystore.store.backends.base import Backend, Fetched, Parts
from proxystore.store.backends.file import is_memory_file_system, populate
from proxystore.store.backends.file_dir import unsafe_reason
from proxystore.store.layers.base import Layer

__all__ = ["DEFAULT_LOCK_TIMEOUT", "HostCacheLayer", "default_max_bytes"]

DEFAULT_LOCK_TIMEOUT = 600.0
"""Seconds a resolver waits for another process on the host to finish fetching a key."""

_POLL = (0.001, 0.05)  # first and largest pause between attempts to take a lock
_SAME_TIME = 1e-6  # write times are compared to the microsecond (files keep nanoseconds)


def default_max_bytes(directory: str) -> int:
    """Half of the file system holding ``directory`` (a tmpfs is sized in memory)."""
    stat = os.statvfs(directory)
    return stat.f_blocks * stat.f_frsize // 2


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class HostCacheLayer(Layer):
    """A host-wide cache of a remote backend's objects, on a memory file system.

    Args:
        inner: The remote backend.
        directory: The host cache directory (shared by the stores that use it, one
            subdirectory each); created private (0700) if missing.
        max_bytes: Bound of the whole directory; ``None``: half of its file system.
        readonly: Map objects shared and read-only instead of copy-on-write.
        namespace: What tells this store's objects from other stores' (type, name, address).
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.
        lock_timeout: Seconds to wait for another process's fetch of the same key.

    Raises:
        StoreError: If the directory cannot be made, is not on a memory file system, is not
            the user's own, or ``max_bytes`` is not positive.
    """

    def __init__(
        self,
        inner: Backend,
        directory: str,
        *,
        max_bytes: int | None = None,
        readonly: bool = False,
        namespace: str,
        store_name: str = "",
        store_type: str = "",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        super().__init__(inner)
        self.store_name = store_name
        self.store_type = store_type
        self.root = os.path.abspath(directory)
        self.readonly = readonly
        self.lock_timeout = lock_timeout
        digest = hashlib.sha256(namespace.encode()).hexdigest()[:16]
        self.directory = os.path.join(self.root, f"{store_type or 'store'}-{digest}")
        self.locks = os.path.join(self.directory, ".locks")
        if not is_memory_file_system(self.root):
            raise self._error(
                f"host_cache={self.root!r} is not on a memory file system (tmpfs), so mapping "
                "from it would read a disk; use a directory under /dev/shm"
            )
        for path in (self.root, self.directory):  # refuse a planted one now; make it later
            reason = unsafe_reason(path, shared=False) if os.path.lexists(path) else None
            if reason is not None:
                raise self._error(f"refusing the host cache directory {path!r}: {reason}")
        if max_bytes is None:
            existing = self.root
            while not os.path.exists(existing):
                existing = os.path.dirname(existing)
            max_bytes = default_max_bytes(existing)
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise self._error(f"host_cache_bytes must be a positive int, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._prepared = False

    def prepare(self) -> None:
        """Create the directories (private), which the first fetch on a host does.

        A process that only writes (a client) never makes a host cache directory.
        """
        if not self._prepared:
            for path in (self.root, self.directory, self.locks):
                self._make_private_dir(path)
            self._prepared = True

    # -- messages -----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """``StoreType 'name'``, how messages name the store."""
        return f"{self.store_type} {self.store_name!r}"

    def _error(self, message: str) -> StoreError:
        return StoreError(
            f"{self.where} on host {socket.gethostname()}: {message}",
            store_name=self.store_name,
            store_type=self.store_type,
        )

    def _make_private_dir(self, path: str) -> None:
        """Create ``path`` 0700, or check that an existing one is this user's alone."""
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise self._error(f"cannot create the host cache directory {path!r}: {exc}") from exc
        reason = unsafe_reason(path, shared=False)
        if reason is not None:
            raise self._error(f"refusing the host cache directory {path!r}: {reason}")

    # -- the protocol -------------------------------------------------------------------------

    def get(self, key: str) -> Fetched:
        """Map ``key`` from the host cache, fetching it into the cache first if needed."""
        path = self._path(key)
        if path is None:
            return self.inner.get(key)
        found = self._fresh(key, path)
        if found is not None:
            return found
        self.prepare()
        lock = self._lock(key)
        try:
            found = self._fresh(key, path)  # another process may have fetched it meanwhile
            if found is not None:
                return found
            fetched = self.inner.get(key)
            if fetched is None:
                _remove(path)
                return None
            data, timestamp = fetched
            size = memoryview(data).nbytes
            if size == 0 or size > self.max_bytes:
                return fetched  # empty, or larger than the whole cache: not kept
            self._write(path, data, timestamp)
            self._shrink(keep=path)
            mapped = self._map(path)
        finally:
            os.close(lock)
        return mapped if mapped is not None else fetched

    def evict(self, key: str) -> None:
        """Evict ``key`` from the remote backend and from this host's cache."""
        self.inner.evict(key)
        path = self._path(key)
        if path is not None:
            _remove(path)

    def clear(self) -> None:
        """Clear the remote backend (where it may be cleared) and this store's host cache."""
        self.inner.clear()
        if not os.path.isdir(self.directory):
            return
        for entry in os.scandir(self.directory):
            if entry.is_file(follow_symlinks=False):
                _remove(entry.path)

    def put_batch(self, items: Sequence[tuple[str | None, Parts]]) -> list[str]:
        """Write through to the remote backend (this host does not keep what it writes)."""
        return self.inner.put_batch(items)

    # -- host cache files ---------------------------------------------------------------------

    def _path(self, key: str) -> str | None:
        """The cache file of ``key``; ``None`` for keys that cannot be file names (bypassed)."""
        if not key or key.startswith(".") or "/" in key or "\x00" in key or len(key) > 200:
            return None
        return os.path.join(self.directory, key)

    def _fresh(self, key: str, path: str) -> Fetched:
        """The mapped copy of ``key`` if present and as new as the remote one, else ``None``."""
        mapped = self._map(path)
        if mapped is None:
            return None
        if self.inner.is_immutable(key):
            return mapped
        current = self.inner.timestamp(key)
        if current is not None and abs(current - mapped[1]) < _SAME_TIME:
            return mapped
        if current is None:  # evicted at the origin: gone here too
            _remove(path)
        return None

    def _map(self, path: str) -> Fetched:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            # Held for as long as the mapping lives: eviction skips files that are mapped.
            self._flock(fd, fcntl.LOCK_SH, path)
            info = os.fstat(fd)
            if info.st_nlink == 0 or info.st_size == 0:  # evicted between open and lock
                os.close(fd)
                return None
            if self.readonly:
                mapping = mmap.mmap(fd, info.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            else:
                mapping = mmap.mmap(
                    fd, info.st_size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
                )
        except BaseException:
            os.close(fd)
            raise
        weakref.finalize(mapping, os.close, fd)
        with contextlib.suppress(OSError):  # least recently used: the access time
            os.utime(path, ns=(time.time_ns(), info.st_mtime_ns))
        view = memoryview(mapping)
        if not self.readonly:
            populate(view)
        return view, info.st_mtime_ns / 1e9

    def _write(self, path: str, data: Buffer, timestamp: float) -> None:
        temp = os.path.join(self.directory, f".tmp-{os.getpid()}-{os.urandom(8).hex()}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data).cast("B")
                while view.nbytes:
                    view = view[os.write(fd, view) :]
                stamp = int(timestamp * 1e9)  # the origin's write time: what hits compare
                os.utime(fd, ns=(time.time_ns(), stamp))
            finally:
                os.close(fd)
            os.replace(temp, path)
        except OSError as exc:
            _remove(temp)
            hint = (
                " The host cache's file system is full: lower host_cache_bytes or enlarge it."
                if exc.errno == errno.ENOSPC
                else ""
            )
            raise self._error(f"could not write {path!r}: {exc.strerror or exc}.{hint}") from exc
        except BaseException:
            _remove(temp)
            raise

    def _shrink(self, *, keep: str) -> None:
        """Evict least recently used, unmapped files until the directory fits its bound."""
        files = []
        for sub in os.scandir(self.root):  # every store's subdirectory: one bound for all
            if not sub.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(sub.path):
                if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."):
                    info = entry.stat(follow_symlinks=False)
                    files.append((info.st_atime_ns, info.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                return
            if path != keep and self._remove_unmapped(path):
                total -= size

    @staticmethod
    def _remove_unmapped(path: str) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a process maps it: its memory is in use anyway
            _remove(path)
            return True
        finally:
            os.close(fd)

    # -- locks --------------------------------------------------------------------------------

    def _lock(self, key: str) -> int:
        """Take the host-wide fetch lock of ``key`` (an open descriptor; close to release)."""
        path = os.path.join(self.locks, key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._flock(fd, fcntl.LOCK_EX, path, key=key)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _flock(self, fd: int, kind: int, path: str, *, key: str | None = None) -> None:
        deadline = time.monotonic() + self.lock_timeout
        pause = _POLL[0]
        while True:
            try:
                fcntl.flock(fd, kind | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if time.monotonic() > deadline:
                what = f"key {key!r}" if key is not None else repr(path)
                raise StoreTimeoutError(
                    f"{self.where} on host {socket.gethostname()}: another process on this host "
                    f"has held the host cache lock of {what} ({path!r}) for more than "
                    f"{self.lock_timeout:.0f} s; it may be stuck fetching it",
                    store_name=self.store_name,
                    store_type=self.store_type,
                )
            time.sleep(pause)
            pause = min(pause * 2, _POLL[1])

    def __repr__(self) -> str:
        return f"HostCacheLayer({self.inner!r}, {self.directory!r}, max_bytes={self.max_bytes})"
