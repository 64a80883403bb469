"""``FileStore``: one file per key in a directory shared by every process that uses it.

Writes go to a temporary name in the same directory and are renamed into place, so a reader
never sees a partial object. Each write stamps the file's modification time with the writer's
nanosecond clock, which is the timestamp ``strict`` revalidation compares.

Reads go straight into one writable buffer, which the deserializer shares with the arrays it
rebuilds: a large numpy array costs one read and no further copy.

Zero-copy on one machine: when ``store_dir`` is on a memory file system (tmpfs or ramfs, such
as ``/dev/shm``) the store memory-maps each file instead of reading it. Arrays are rebuilt on
the mapping: resolving a 100 MB array costs a ``mmap`` call, not a copy, and every process on
the machine shares the same physical pages. By default the mapping is private (copy-on-write):
a task that writes into its array gets its own copy of the pages it writes, and nobody else
sees the change. With ``readonly=True`` the arrays are read-only instead (writing raises) and,
being immutable, are cached and shared by every ``get`` in the process. Evicting a key while an
array still uses it is safe: the mapping outlives the file name, and the memory returns to the
system when the last array on it is garbage collected. Objects without large buffers (dicts,
strings) are read and cached as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import time
from collections.abc import Sequence
from typing import Any

from proxystore.buffers import alloc_buffer
from proxystore.exceptions import InvalidKeyError, StoreError
from proxystore.serialize import Buffer, deserialize, has_buffers
from proxystore.store.remote import RemoteStore

__all__ = ["FileStore"]

_IOV_MAX = min(getattr(os, "sysconf", lambda _: 1024)("SC_IOV_MAX"), 1024)
_MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+
_LIBC = ctypes.CDLL(None, use_errno=True)  # ctypes calls release the interpreter lock


def mount_of(path: str) -> tuple[str, list[str]] | None:
    """Return ``(type, options)`` of the mount holding ``path``, e.g. ``("tmpfs", ["rw"])``.

    Read from ``/proc/self/mounts``; ``None`` where that is not available (not Linux).
    """
    try:
        with open("/proc/self/mounts") as mounts:
            entries = [line.split() for line in mounts]
    except OSError:
        return None
    real = os.path.realpath(path)
    best, found = "", None
    for entry in entries:
        if len(entry) < 4:
            continue
        mount_point = entry[1].replace("\\040", " ")
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, found = mount_point, (entry[2], entry[3].split(","))
    return found


def file_system_type(path: str) -> str | None:
    """Return the type of the file system holding ``path`` (``"tmpfs"``, ``"ext4"``, ...)."""
    mount = mount_of(path)
    return None if mount is None else mount[0]


def _populate(mapping: mmap.mmap) -> None:
    """Fill a writable mapping's page table without holding the interpreter lock."""
    try:
        anchor = ctypes.c_char.from_buffer(mapping)
    except (TypeError, ValueError):
        return
    try:
        _LIBC.madvise(
            ctypes.c_void_p(ctypes.addressof(anchor)),
            ctypes.c_size_t(len(mapping)),
            ctypes.c_int(_MADV_POPULATE_READ),
        )  # a kernel without MADV_POPULATE_READ answers EINVAL: nothing lost
    finally:
        del anchor


def check_file_key(key: str, store: RemoteStore) -> str:
    """Return ``key`` if it can be a file name in a store directory.

    Raises:
        InvalidKeyError: If it is empty, starts with ``.`` (temporary files do) or contains a
            path separator or NUL.
    """
    if (
        not isinstance(key, str)
        or not key
        or key.startswith(".")
        or "/" in key
        or os.sep in key
        or "\x00" in key
    ):
        kind = type(store).__name__
        raise InvalidKeyError(
            f"{kind} {store.name!r} cannot use key {key!r} as a file name: keys must be "
            "non-empty, must not start with '.' and must not contain '/' or NUL",
            key=str(key),
            store_name=store.name,
            store_type=kind,
        )
    return key


def is_memory_file_system(path: str) -> bool:
    """Return whether ``path`` is on a memory file system (tmpfs or ramfs)."""
    return file_system_type(path) in _MEMORY_FILE_SYSTEMS


class FileStore(RemoteStore):
    """A store of files in ``store_dir``, one per key.

    Args:
        name: Name of the store.
        store_dir: Directory for the files; created if missing. Every process that resolves
            this store's proxies must see the same directory (a shared or local file system).
        cache_size: Size of the per-process LRU cache of deserialized objects (``0``: off).
        zero_copy: Memory-map files instead of reading them, so arrays are rebuilt on shared
            pages without a copy. ``None`` (default): on when ``store_dir`` is on a memory file
            system (tmpfs, ramfs). ``True`` insists, and fails if it is not.
        readonly: With zero-copy, give read-only arrays (writing raises) instead of
            copy-on-write ones; read-only objects are cached and shared within a process.

    Raises:
        StoreError: If ``store_dir`` cannot be created, or ``zero_copy=True`` and it is not on
            a memory file system.
        ValueError: If ``readonly=True`` without zero-copy.
    """

    def __init__(
        self,
        name: str,
        *,
        store_dir: str | os.PathLike[str],
        cache_size: int = 16,
        zero_copy: bool | None = None,
        readonly: bool = False,
    ) -> None:
        super().__init__(name, cache_size=cache_size)
        self.store_dir = os.path.abspath(os.fspath(store_dir))
        try:
            os.makedirs(self.store_dir, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"FileStore {name!r} cannot create its directory {self.store_dir!r}: {exc}",
                store_name=name,
                store_type="FileStore",
            ) from exc
        on_memory = is_memory_file_system(self.store_dir)
        if zero_copy and not on_memory:
            kind = file_system_type(self.store_dir) or "an unknown file system"
            raise StoreError(
                f"FileStore {name!r}: zero_copy=True needs store_dir on a memory file system "
                f"(tmpfs or ramfs, such as /dev/shm), but {self.store_dir!r} is on {kind}. "
                "Use a directory under /dev/shm, or leave zero_copy unset.",
                store_name=name,
                store_type="FileStore",
            )
        if readonly and not (on_memory if zero_copy is None else zero_copy):
            raise ValueError(
                f"FileStore {name!r}: readonly=True applies to zero-copy (memory-mapped) reads, "
                f"which are off for {self.store_dir!r}"
            )
        self._zero_copy_setting = zero_copy
        self.zero_copy = on_memory if zero_copy is None else zero_copy
        self.readonly = readonly

    def factory_kwargs(self) -> dict[str, Any]:
        """Return the constructor arguments that re-create this store."""
        kwargs: dict[str, Any] = {"store_dir": self.store_dir, **super().factory_kwargs()}
        if self._zero_copy_setting is not None:
            kwargs["zero_copy"] = self._zero_copy_setting
        if self.readonly:
            kwargs["readonly"] = True
        return kwargs

    def _path(self, key: str) -> str:
        check_file_key(key, self)
        return os.path.join(self.store_dir, key)

    def _error(self, action: str, path: str, exc: OSError) -> StoreError:
        hint = {
            errno.ENOSPC: " The file system is full: free space, or use a store_dir on a larger "
            "file system (a tmpfs such as /dev/shm is limited by its size= mount option).",
            errno.EACCES: " Check the permissions of the store directory.",
            errno.EROFS: " The file system is read-only: choose another store_dir.",
        }.get(exc.errno or 0, "")
        return StoreError(
            f"FileStore {self.name!r} could not {action} {path!r}: {exc.strerror or exc}.{hint}",
            store_name=self.name,
            store_type="FileStore",
        )

    # -- byte-level backend -------------------------------------------------------------------

    def get_bytes_with_timestamp(self, key: str) -> tuple[Buffer, float] | None:
        """Read the whole file for ``key`` into one buffer, with its timestamp."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("open", path, exc) from exc
        try:
            stat = os.fstat(fd)
            if self.zero_copy and stat.st_size > 0:
                return self._map(fd, stat.st_size), stat.st_mtime_ns / 1e9
            data = view = alloc_buffer(stat.st_size)
            done = 0
            while done < stat.st_size:
                count = os.readv(fd, [view[done:]])
                if count == 0:
                    raise StoreError(
                        f"FileStore {self.name!r}: {path!r} shrank while being read",
                        store_name=self.name,
                        store_type="FileStore",
                    )
                done += count
        except OSError as exc:
            raise self._error("read", path, exc) from exc
        finally:
            os.close(fd)
        return data, stat.st_mtime_ns / 1e9

    def _map(self, fd: int, size: int) -> memoryview:
        if self.readonly:
            self._drop_evicted()
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        else:
            mapping = mmap.mmap(
                fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
        return memoryview(mapping)

    def prefetch(self, key: str, *, strict: bool = False) -> Any:
        """Map the file in the background and populate its page table (no copy).

        With copy-on-write zero-copy, the background half of a resolve also asks the kernel to
        fill the new mapping's page table (``MADV_POPULATE_READ``, Linux 5.14+), so the task's
        first pass over the array does not stop at a page fault every few pages. The call goes
        through ctypes, which releases the interpreter lock, so the task runs meanwhile.
        """
        token = super().prefetch(key, strict=strict)
        if self.zero_copy and not self.readonly and token is not None and token[0] is not None:
            data = token[0][0]
            mapping = data.obj if isinstance(data, memoryview) else None
            if isinstance(mapping, mmap.mmap):
                _populate(mapping)
        return token

    def _drop_evicted(self) -> None:
        # Cached read-only objects keep their mapping, and so the tmpfs pages, alive: drop
        # those whose file is gone (evicted here or by another process) before mapping more.
        for key in self.cache.cached_keys():
            if not os.path.exists(os.path.join(self.store_dir, key)):
                self.cache.evict(key)

    def decode(self, data: Buffer) -> Any:
        """Rebuild an object; read-only mappings give read-only arrays (no copy)."""
        return deserialize(data, copy_readonly=not self.readonly)

    def cacheable(self, data: Buffer) -> bool:
        """Copy-on-write arrays are private to each ``get``: never cache them."""
        return not (self.zero_copy and not self.readonly and has_buffers(data))

    def get_bytes(self, key: str) -> Buffer | None:
        """Return the contents of the file for ``key``, or ``None`` if there is none."""
        fetched = self.get_bytes_with_timestamp(key)
        return None if fetched is None else fetched[0]

    def set_bytes(self, key: str, data: Buffer) -> None:
        """Write ``data`` as the file for ``key`` (atomically, by rename)."""
        self.set_parts(key, [data])

    def set_parts(self, key: str, parts: Sequence[Buffer]) -> None:
        """Write the pieces with ``writev`` to a temporary file, then rename it into place."""
        path = self._path(key)
        # Not derived from the key, so any key the file system accepts as a name works.
        temp = os.path.join(self.store_dir, f".tmp-{os.getpid()}-{self.new_key()[:16]}")
        views = [memoryview(part).cast("B") for part in parts if memoryview(part).nbytes]
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise self._error("create", temp, exc) from exc
        try:
            try:
                while views:
                    written = os.writev(fd, views[:_IOV_MAX])
                    while views and written >= views[0].nbytes:
                        written -= views[0].nbytes
                        views.pop(0)
                    if written:
                        views[0] = views[0][written:]
                now = time.time_ns()
                os.utime(fd, ns=(now, now))
            finally:
                os.close(fd)
            os.replace(temp, path)
        except OSError as exc:
            _remove(temp)
            raise self._error("write", path, exc) from exc
        except BaseException:
            _remove(temp)
            raise

    def get_timestamp(self, key: str) -> float:
        """Return the write time of ``key``'s file.

        Raises:
            KeyError: If the key is missing.
        """
        path = self._path(key)
        try:
            return os.stat(path).st_mtime_ns / 1e9
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        """Return whether the file for ``key`` exists."""
        return os.path.exists(self._path(key))

    def evict(self, key: str) -> None:
        """Delete the file for ``key`` (a missing file is not an error)."""
        _remove(self._path(key))

    def cleanup(self) -> None:
        """Remove the store's directory and everything in it."""
        self.cache.clear()
        import shutil  # only here: it pulls in bz2/lzma, which resolving never needs

        shutil.rmtree(self.store_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"FileStore(name={self.name!r}, store_dir={self.store_dir!r})"


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
