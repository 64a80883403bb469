"""``HostCacheLayer``: each object crosses the network once per host, then is mapped from memory.

On a cluster node with many worker processes, every process that resolves a proxy of a remote
store (Redis, Globus, a file system shared over the network) would otherwise fetch the object
itself. This layer puts a *host tier* between the store and its remote backend: a directory on a
memory file system (``/dev/shm/proxystore``) that every process of the user on the host shares.

* The first process on the host that resolves a key fetches it, straight into the host cache
  (an unnamed file, ``O_TMPFILE``, that is locked before it gets a name and is renamed into
  place). Concurrent resolvers, in this process or others, wait for that one fetch: a lock
  file per key, locked with ``flock`` (released by the kernel if the fetching process dies),
  polled for at most ``wait`` seconds (``host_cache_wait=``, by default the store's timeout).
  When the wait runs out (the fetching process is stopped, or slower than that), the resolver
  fetches the object from the remote backend itself, serves it and puts it in the cache too:
  a stuck process on the host costs the others one wait, never an error.
* A fetching process killed while it writes leaves nothing behind: the kernel frees its
  unnamed file, and a named temporary file whose ``flock`` nobody holds any more (its writer
  died between naming and renaming it, or it was left by an older version) is removed by the
  next process that opens the store or fetches. A live writer's file is never removed: it
  holds the lock for as long as the file has a name.
* When the memory file system is full (or the cache file cannot be written for another
  reason), the resolver serves the bytes it fetched, as without the host tier, and says so
  once in a log line (logger ``proxystore.store.layers.host_cache``).
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
import logging
import math
import mmap
import numbers
import os
import socket
import time
import weakref
from collections.abc import Sequence

from proxystore.exceptions import StoreError
from proxystore.serialize import Buffer
from proxystore.store._filesystem import is_memory_file_system, populate_mmap, unsafe_reason
from proxystore.store.backends.base import Backend, Fetched, Parts
from proxystore.store.layers import _host_files as tier_files
from proxystore.store.layers.base import Layer

__all__ = [
    "DEFAULT_WAIT",
    "MAX_WAIT",
    "HostCacheLayer",
    "check_host_cache_options",
    "default_max_bytes",
]

DEFAULT_WAIT = 60.0
"""Seconds a resolver waits for another process on the host to finish fetching a key, when
the store has no timeout of its own (``host_cache_wait=`` chooses)."""
MAX_WAIT = 86_400.0
"""Largest ``host_cache_wait`` accepted (a day)."""
_MAX_BYTES = 2**62  # largest host_cache_bytes accepted


logger = logging.getLogger(__name__)

_SAME_TIME = 1e-6  # write times are compared to the microsecond (files keep nanoseconds)


def default_max_bytes(directory: str) -> int:
    """Half of the file system holding ``directory`` (a tmpfs is sized in memory)."""
    stat = os.statvfs(directory)
    return stat.f_blocks * stat.f_frsize // 2


def check_host_cache_options(
    *, max_bytes: object = None, wait: object = None, readonly: object = False, where: str = ""
) -> None:
    """Check the host tier's options where they are given; errors name the option.

    Args:
        max_bytes: ``host_cache_bytes``: ``None`` or a positive int.
        wait: ``host_cache_wait``: ``None`` or a finite number of seconds in ``(0, MAX_WAIT]``.
        readonly: ``readonly``: a bool.
        where: The store, for messages (``"RedisStore 'data'"``).

    Raises:
        TypeError: If an option has the wrong type.
        ValueError: If an option is out of range.
    """
    prefix = f"{where}: " if where else ""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral):
            raise TypeError(
                f"{prefix}host_cache_bytes must be an int (a number of bytes) or None, got "
                f"{type(max_bytes).__name__} {max_bytes!r}"
            )
        if not 0 < int(max_bytes) <= _MAX_BYTES:
            raise ValueError(
                f"{prefix}host_cache_bytes must be a positive number of bytes (at most 2**62), "
                f"got {max_bytes!r}; leave it unset for half of the memory file system"
            )
    if wait is not None:
        if isinstance(wait, bool) or not isinstance(wait, numbers.Real):
            raise TypeError(
                f"{prefix}host_cache_wait must be a number of seconds or None, got "
                f"{type(wait).__name__} {wait!r}"
            )
        if not (math.isfinite(float(wait)) and 0 < float(wait) <= MAX_WAIT):
            raise ValueError(
                f"{prefix}host_cache_wait must be a finite number of seconds in (0, "
                f"{MAX_WAIT:.0f}], got {wait!r}"
            )
    if not isinstance(readonly, bool):
        raise TypeError(f"{prefix}readonly must be True or False, got {readonly!r}")


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
        wait: Seconds to wait for another process's fetch of the same key; then the
            object is fetched here (see the module docstring).

    Raises:
        StoreError: If the directory cannot be made, is not on a memory file system, or is
            not the user's own.
        TypeError: If an option has the wrong type (see :func:`check_host_cache_options`).
        ValueError: If an option is out of range.
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
        wait: float = DEFAULT_WAIT,
    ) -> None:
        super().__init__(inner)
        self.store_name = store_name
        self.store_type = store_type
        where = self.where if store_type or store_name else ""
        check_host_cache_options(max_bytes=max_bytes, wait=wait, readonly=readonly, where=where)
        self.root = os.path.abspath(directory)
        self.readonly = readonly
        self.wait = float(wait)
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
        self.max_bytes = int(max_bytes)
        self._prepared = False
        self._told: set[str] = set()  # what the log has said once already
        self._unnamed = True  # write into O_TMPFILE files (until the system says it cannot)
        if os.path.isdir(self.root):  # a store opening the cache: dead fetchers' files go
            self.reclaim()

    def prepare(self) -> None:
        """Create the directories (private), which the first fetch on a host does.

        A process that only writes (a client) never makes a host cache directory.
        """
        if not self._prepared:
            for path in (self.root, self.directory, self.locks):
                self._make_private_dir(path)
            self._prepared = True
            self.reclaim()

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
        """Map ``key`` from the host cache, fetching it into the cache first if needed.

        If another process on the host holds the key's fetch lock for longer than
        :attr:`wait`, the object is fetched here without it. If the cache file cannot be
        written (the memory file system is full), the fetched bytes are returned as they are.
        """
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
                tier_files.remove(path)
                return None
            data, timestamp = fetched
            size = memoryview(data).nbytes
            if size == 0 or size > self.max_bytes:
                return fetched  # empty, or larger than the whole cache: not kept
            if not self._write(key, path, data, timestamp):  # the file system is full
                # Served as fetched; read-only as a mapping would be, if the store asks so.
                return (memoryview(data).toreadonly(), timestamp) if self.readonly else fetched
            self._shrink(keep=path)
            mapped = self._map(path)
        finally:
            if lock is not None:
                os.close(lock)
        return mapped if mapped is not None else fetched

    def evict(self, key: str) -> None:
        """Evict ``key`` from the remote backend and from this host's cache."""
        self.inner.evict(key)
        path = self._path(key)
        if path is not None:
            tier_files.remove(path)

    def clear(self) -> None:
        """Clear the remote backend (where it may be cleared) and this store's host cache."""
        self.inner.clear()
        if not os.path.isdir(self.directory):
            return
        for entry in os.scandir(self.directory):
            if entry.is_file(follow_symlinks=False):
                tier_files.remove(entry.path)

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
            tier_files.remove(path)
        return None

    def _map(self, path: str) -> Fetched:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            # Held for as long as the mapping lives: eviction skips files that are mapped.
            if not tier_files.poll_flock(fd, fcntl.LOCK_SH, self.wait):
                os.close(fd)  # held exclusively all this time (a stopped process): refetch
                return None
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
            populate_mmap(view)
        return view, info.st_mtime_ns / 1e9

    def _write(self, key: str, path: str, data: Buffer, timestamp: float) -> bool:
        """Write the cache file of ``key``; ``False`` (said once in the log) if it cannot be.

        The temporary file stays locked until it has been renamed into place, which is what
        tells a live writer's file from a dead one's (see :mod:`._host_files`).
        """
        while True:
            unnamed = self._unnamed
            try:
                self._write_once(path, data, timestamp)
                return True
            except OSError as exc:
                if unnamed and exc.errno in tier_files.NO_LINK:  # no /proc to name it: named files
                    self._unnamed = False
                    continue
                self._not_kept(key, exc)
                return False

    def _write_once(self, path: str, data: Buffer, timestamp: float) -> None:
        fd = tier_files.open_unnamed(self.directory) if self._unnamed else None
        temp = None
        if fd is None:
            self._unnamed = False
            fd, temp = tier_files.open_named(self.directory)
        try:
            tier_files.write_all(fd, data, timestamp)
            if temp is None:
                temp = tier_files.name_unnamed(self.directory, fd)
            os.replace(temp, path)
            temp = None
        finally:
            if temp is not None:
                tier_files.remove(temp)
            os.close(fd)

    def _not_kept(self, key: str, exc: OSError) -> None:
        reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        if reason in self._told:
            return
        self._told.add(reason)
        hint = (
            " The host cache's file system is full: lower host_cache_bytes, free the memory "
            "file system, or enlarge it."
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else ""
        )
        logger.warning(
            "%s on host %s: could not keep key %r in the host cache %r (%s); serving the bytes "
            "fetched from the store instead, which later resolves fetch again.%s "
            "(Said once per store and reason.)",
            self.where,
            socket.gethostname(),
            key,
            self.directory,
            exc.strerror or exc,
            hint,
        )

    def reclaim(self) -> int:
        """Remove the temporary files of dead fetchers in the whole host cache; their count."""
        return tier_files.reclaim(self.root)

    def _shrink(self, *, keep: str) -> None:
        """Evict least recently used, unmapped files until the directory fits its bound."""
        files = []
        for sub in os.scandir(self.root):  # every store's subdirectory: one bound for all
            if not sub.is_dir(follow_symlinks=False):
                continue
            try:
                entries = os.scandir(sub.path)
            except FileNotFoundError:  # that store's directory was removed meanwhile
                continue
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if tier_files.is_temp(entry.name):
                    tier_files.remove_dead(entry.path)
                elif not entry.name.startswith("."):
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # evicted meanwhile (another thread or process)
                        continue
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
            tier_files.remove(path)
            return True
        finally:
            os.close(fd)

    # -- locks --------------------------------------------------------------------------------

    def _lock(self, key: str) -> int | None:
        """Take the host-wide fetch lock of ``key`` (an open descriptor; close to release).

        ``None`` if another process held it for all of :attr:`wait` (said in the log): the
        caller fetches without it.
        """
        path = os.path.join(self.locks, key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            if tier_files.poll_flock(fd, fcntl.LOCK_EX, self.wait):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        logger.warning(
            "%s on host %s: another process on this host has held the host cache lock of key "
            "%r (%r) for more than host_cache_wait=%g s (stopped, or slow to fetch it); "
            "fetching it from the store directly",
            self.where,
            socket.gethostname(),
            key,
            path,
            self.wait,
        )
        return None

    def __repr__(self) -> str:
        return (
            f"HostCacheLayer({self.inner!r}, {self.directory!r}, max_bytes={self.max_bytes}, "
            f"wait={self.wait:g})"
        )
