"""``FileBackend``: one file per key in a directory shared by every process that uses it.

Writes go to a temporary name in the same directory and are renamed into place, so a reader
never sees a partial object. Each write stamps the file's modification time with the writer's
nanosecond clock, which is the write time ``strict`` revalidation compares.

Reads go straight into one writable buffer (huge-page backed where available), which the
deserializer shares with the arrays it rebuilds. With ``zero_copy`` (a directory on a memory
file system such as ``/dev/shm``) the file is memory-mapped instead of read: privately
(copy-on-write) by default, or shared and read-only with ``readonly``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import time

from proxystore.buffers import alloc_buffer
from proxystore.exceptions import InvalidKeyError, StoreError
from proxystore.serialize import Buffer
from proxystore.store.backends.base import BackendBase, Fetched, Parts, new_key

__all__ = [
    "FileBackend",
    "file_system_type",
    "is_memory_file_system",
    "mount_of",
    "populate",
]

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


def is_memory_file_system(path: str) -> bool:
    """Return whether ``path`` is on a memory file system (tmpfs or ramfs)."""
    return file_system_type(path) in _MEMORY_FILE_SYSTEMS


def populate(data: Buffer) -> None:
    """Fill the page table of a writable memory mapping without holding the interpreter lock.

    Used by the background half of a resolve (``MADV_POPULATE_READ``, Linux 5.14+), so a
    task's first pass over a copy-on-write array does not fault every few pages. Anything but a
    writable mapping is left alone.
    """
    mapping = data.obj if isinstance(data, memoryview) else None
    if not isinstance(mapping, mmap.mmap):
        return
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


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class FileBackend(BackendBase):
    """Files in ``directory``, one per key.

    Args:
        directory: The directory (absolute); created if missing.
        zero_copy: Memory-map files instead of reading them.
        readonly: With ``zero_copy``, map shared and read-only instead of private.
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.

    Raises:
        StoreError: If the directory cannot be created.
    """

    owns_storage = True

    def __init__(
        self,
        directory: str,
        *,
        zero_copy: bool = False,
        readonly: bool = False,
        store_name: str = "",
        store_type: str = "FileStore",
    ) -> None:
        super().__init__(store_name=store_name, store_type=store_type)
        self.directory = directory
        self.zero_copy = zero_copy
        self.readonly = readonly
        self.make_directory()

    def make_directory(self) -> None:
        """Create the directory if it is missing.

        Raises:
            StoreError: If it cannot be created.
        """
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise self.error(
                f"{self.where} cannot create its directory {self.directory!r}: {exc}"
            ) from exc

    def path(self, key: str) -> str:
        """Return the file of ``key``.

        Raises:
            InvalidKeyError: If the key is empty, starts with ``.`` (temporary files do) or
                contains a path separator or NUL.
        """
        if (
            not isinstance(key, str)
            or not key
            or key.startswith(".")
            or "/" in key
            or os.sep in key
            or "\x00" in key
        ):
            raise InvalidKeyError(
                f"{self.where} cannot use key {key!r} as a file name: keys must be non-empty, "
                "must not start with '.' and must not contain '/' or NUL",
                key=str(key),
                store_name=self.store_name,
                store_type=self.store_type,
            )
        return os.path.join(self.directory, key)

    def _error(self, action: str, path: str, exc: OSError) -> StoreError:
        hint = {
            errno.ENOSPC: " The file system is full: free space, or use a store_dir on a larger "
            "file system (a tmpfs such as /dev/shm is limited by its size= mount option).",
            errno.EACCES: " Check the permissions of the store directory.",
            errno.EROFS: " The file system is read-only: choose another store_dir.",
        }.get(exc.errno or 0, "")
        return self.error(f"{self.where} could not {action} {path!r}: {exc.strerror or exc}.{hint}")

    def put(self, key: str | None, parts: Parts) -> str:
        """Write the pieces with ``writev`` to a temporary file, then rename it into place."""
        if key is None:
            key = new_key()
        path = self.path(key)
        # Not derived from the key, so any key the file system accepts as a name works.
        temp = os.path.join(self.directory, f".tmp-{os.getpid()}-{new_key()[:16]}")
        views = [memoryview(part).cast("B") for part in parts if memoryview(part).nbytes]
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:  # the directory was cleared: make it again
                self.make_directory()
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
        return key

    def get(self, key: str) -> Fetched:
        """Read (or map) the whole file of ``key`` into one buffer, with its write time."""
        path = self.path(key)
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
                    raise self.error(f"{self.where}: {path!r} shrank while being read")
                done += count
        except OSError as exc:
            raise self._error("read", path, exc) from exc
        finally:
            os.close(fd)
        return data, stat.st_mtime_ns / 1e9

    def _map(self, fd: int, size: int) -> memoryview:
        if self.readonly:
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        else:
            mapping = mmap.mmap(
                fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
        return memoryview(mapping)

    def timestamp(self, key: str) -> float | None:
        """Return the write time of ``key``'s file, or ``None``."""
        try:
            return os.stat(self.path(key)).st_mtime_ns / 1e9
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        """Return whether the file of ``key`` exists."""
        return os.path.exists(self.path(key))

    def evict(self, key: str) -> None:
        """Delete the file of ``key`` (a missing file is not an error)."""
        path = self.path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error("delete", path, exc) from exc

    def clear(self) -> None:
        """Delete the directory and everything in it (it is made again on the next write)."""
        import shutil  # only here: it pulls in bz2/lzma, which resolving never needs

        shutil.rmtree(self.directory, ignore_errors=True)

    def __repr__(self) -> str:
        return f"FileBackend({self.directory!r}, zero_copy={self.zero_copy})"
