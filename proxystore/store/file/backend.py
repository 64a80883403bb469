"""``FileBackend``: one file per key in a directory shared by every process that uses it.

Writes go to a temporary name in the same directory and are renamed into place, so a reader
never sees a partial object. Each write stamps the file's modification time with the writer's
nanosecond clock, which is the write time ``strict`` revalidation compares.

Reads go straight into one writable buffer (huge-page backed where available), which the
deserializer shares with the arrays it rebuilds. With ``zero_copy`` (a directory on a memory
file system such as ``/dev/shm``) the file is memory-mapped instead of read: privately
(copy-on-write) by default, or shared and read-only with ``readonly``.

Private by default: the directory is created ``0700`` and objects ``0600``, whatever the
umask. An existing directory is used only if it is a real directory (not a symbolic link),
owned by the current user and not writable by group or others (:meth:`FileBackend.check`);
``shared=True`` accepts a directory of another user that is group-writable (objects ``0640``),
for stores shared between users on purpose. Opening the directory removes the temporary files
of writers that died (:meth:`FileBackend.remove_dead_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat as stat_mode
from collections.abc import Iterator

from proxystore.buffers import alloc_buffer
from proxystore.exceptions import InvalidKeyError, StoreError
from proxystore.store.backends.base import BackendBase, Fetched, KeyInfo, Parts, new_key
from proxystore.store.file._maps import REPLACED_WAIT, map_file, open_locked
from proxystore.store.file._pool import DEFAULT_IDLE, PagePool, default_limit, delete_file
from proxystore.store.file.directory import (
    install,
    is_memory_file_system,
    remove_if_dead,
    temp_files,
    temp_name,
    unsafe_reason,
    write_all,
)

__all__ = ["FileBackend"]


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class FileBackend(BackendBase):
    """Files in ``directory``, one per key.

    Args:
        directory: The directory (absolute).
        zero_copy: Memory-map files instead of reading them.
        readonly: With ``zero_copy``, map shared and read-only instead of private.
        shared: Accept a directory of another user, writable by its group (not by others);
            objects are written ``0640`` and a new directory is made ``2770``.
        create: Create the directory if it is missing (privately). ``False`` (a store
            re-created from its description in a worker) never creates it: reading or
            writing with the directory missing is an error that names this host.
        on_memory: Whether the directory is on a memory file system (``None``: find out).
            There, readers hold a shared ``flock`` on each file for as long as they use it
            (pool or not), and the writer reuses only files nobody reads (see ``_pool`` and
            ``_maps``).
        page_pool_bytes: On a memory file system, keep the pages of evicted objects, up to
            this many bytes, to write new objects into (``None``: the default bound, 1 GiB
            and at most a quarter of the file system; ``0``: keep nothing).
        page_pool_idle: Seconds without activity after which the kept pages are given back.
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.

    Raises:
        StoreError: If the directory cannot be created, or is not safe to use (see
            :meth:`check`).
    """

    owns_storage = True

    def __init__(
        self,
        directory: str,
        *,
        zero_copy: bool = False,
        readonly: bool = False,
        shared: bool = False,
        create: bool = True,
        on_memory: bool | None = None,
        page_pool_bytes: int | None = 0,
        page_pool_idle: float = DEFAULT_IDLE,
        store_name: str = "",
        store_type: str = "FileStore",
    ) -> None:
        super().__init__(store_name=store_name, store_type=store_type)
        self.directory = directory
        self.zero_copy = zero_copy
        self.readonly = readonly
        self.shared = shared
        self.create = create
        self.file_mode = 0o640 if shared else 0o600
        self._checked = False  # the directory passed check() in this process
        self._cleared = False  # clear() removed it (reads then find nothing, writes remake it)
        # On a memory file system, readers hold shared flocks and deletions truncate files
        # nobody reads, because a process there may reuse evicted pages (see the pool below).
        self.on_memory = is_memory_file_system(directory) if on_memory is None else on_memory
        self.locking = self.on_memory
        self.pool: PagePool | None = None
        if create:
            self.make_directory()
        elif os.path.lexists(directory):
            self.open_directory()
        # After the directory is made: the default bound depends on its file system.
        if self.on_memory and page_pool_bytes != 0:
            limit = default_limit(directory) if page_pool_bytes is None else page_pool_bytes
            if limit > 0:
                self.pool = PagePool(directory, limit=limit, idle=page_pool_idle)

    def make_directory(self) -> None:
        """Create the directory if it is missing (``0700``, or ``2770`` shared), then open it.

        Raises:
            StoreError: If it cannot be created, or is not safe to use (see :meth:`check`).
        """
        mode = 0o2770 if self.shared else 0o700
        try:
            os.makedirs(os.path.dirname(self.directory), exist_ok=True)
            os.mkdir(self.directory, mode)
            os.chmod(self.directory, mode)  # whatever the umask
        except FileExistsError:
            pass  # an existing directory (or something else): check() decides
        except OSError as exc:
            raise self.error(
                f"{self.where} cannot create its directory {self.directory!r}: {exc}"
            ) from exc
        self._cleared = False
        self.open_directory()

    def open_directory(self) -> None:
        """Check the directory (:meth:`check`), then remove dead writers' temporary files."""
        self.check()
        self._checked = True
        self.remove_dead_temps()

    def check(self) -> None:
        """Refuse a directory that other users could have planted or could write.

        See :func:`~proxystore.store.file.directory.unsafe_reason` for the rules.

        Raises:
            StoreError: Naming the directory and the reason, if it is not safe to use.
        """
        try:
            reason = unsafe_reason(self.directory, shared=self.shared)
        except FileNotFoundError:
            raise self._missing("open its objects", None) from None
        except OSError as exc:
            raise self._error("inspect", self.directory, exc) from exc
        if reason is not None:
            raise self.error(
                f"{self.where} refuses its directory {self.directory!r}: {reason}. Use a "
                "directory of your own (remove this one, or choose another path). To share a "
                "store between users on purpose, use a group-writable directory with "
                "FileStore(..., shared=True) and a signing_key (see the Security model docs)."
            )

    def remove_dead_temps(self) -> int:
        """Remove the temporary files of writers that died; return how many were removed.

        See :func:`~proxystore.store.file.directory.is_dead_temp`: a running writer's file
        is never removed.
        """
        removed = 0
        for name, _, age in self.temp_files():
            if remove_if_dead(os.path.join(self.directory, name), age):
                removed += 1
        return removed

    def temp_files(self) -> list[tuple[str, int, float]]:
        """Return ``(name, size, seconds since modified)`` of each temporary file here.

        Raises:
            StoreError: If the directory cannot be listed.
        """
        try:
            return temp_files(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._error("list", self.directory, exc) from exc

    def _missing(self, action: str, key: str | None) -> StoreError:
        what = f" key {key!r}" if key is not None else ""
        return self.error(
            f"{self.where} cannot {action}{what}: its directory {self.directory!r} does not "
            f"exist on host {socket.gethostname()!r}. A FileStore needs a directory that every "
            "host using its proxies sees at the same path (a shared file system; /dev/shm and "
            "/tmp are local to each host), or the directory was removed after the store was "
            "created. It is not created here."
        )

    def _ready(self, action: str, key: str) -> bool:
        """Open the directory on first use in this process.

        Returns ``False`` if it is missing because this store cleared it.

        Raises:
            StoreError: If it is missing otherwise, or is not safe to use.
        """
        if os.path.lexists(self.directory):
            self.open_directory()
            return True
        if self._cleared:
            return False
        raise self._missing(action, key)

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
        """Write the pieces with ``writev`` to a temporary file, then rename it into place.

        With page reuse, the pieces go into a pooled file instead when one fits. On a memory
        file system the new file is exchanged with the one the key named (atomically: readers
        see the old or the new object, never neither), and the old file, then named by this
        process alone, joins the pool or is deleted (see
        ``_pool``).
        """
        new = key is None
        if key is None:
            key = new_key()
        path = self.path(key)
        # Not derived from the key, so any key the file system accepts as a name works.
        if not self._checked:
            if self.create:
                self.make_directory()
            else:
                self._ready("write", key)
        views = [memoryview(part).cast("B") for part in parts if memoryview(part).nbytes]
        source = None
        if self.pool is not None:
            try:
                source = self.pool.write(views, sum(view.nbytes for view in views))
            except OSError as exc:
                raise self._error("write", path, exc) from exc
        if source is not None:
            try:
                self._install(source, path, new=new)
                return key
            except FileNotFoundError:
                pass  # the directory was cleared meanwhile: write a new file
            except OSError as exc:
                _remove(source)
                raise self._error("write", path, exc) from exc
            except BaseException:
                _remove(source)
                raise
        temp = self._write_temp(key, views)
        try:
            self._install(temp, path, new=new)
        except OSError as exc:
            _remove(temp)
            raise self._error("write", path, exc) from exc
        except BaseException:
            _remove(temp)
            raise
        return key

    def _write_temp(self, key: str, views: list[memoryview]) -> str:
        """Write ``views`` to a new temporary file (locked while written); return its path."""
        temp = os.path.join(self.directory, temp_name(new_key()[:16]))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            try:
                fd = os.open(temp, flags, self.file_mode)
            except FileNotFoundError:
                if not self.create:
                    raise self._missing("write", key) from None
                self.make_directory()  # cleared since: make it again
                fd = os.open(temp, flags, self.file_mode)
        except OSError as exc:
            raise self._error("create", temp, exc) from exc
        try:
            write_all(fd, views, self.file_mode, lock=self.locking)
        except OSError as exc:
            _remove(temp)
            raise self._error("write", os.path.join(self.directory, key), exc) from exc
        except BaseException:
            _remove(temp)
            raise
        return temp

    def _install(self, source: str, path: str, *, new: bool = False) -> None:
        """Rename the finished file ``source`` to ``path``; retire the file it replaces."""
        if not self.locking:
            os.replace(source, path)
        elif install(source, path, new=new):
            self._retire(source)  # the replaced file, now under our name alone

    def _retire(self, private: str) -> None:
        """Pool or delete a file that only this process names."""
        if self.pool is not None and self.pool.adopt(private):
            return
        delete_file(private)

    def _private_path(self) -> str:
        if self.pool is not None:
            return self.pool.private_path()
        return os.path.join(self.directory, temp_name(new_key()[:16]))

    def _take_away(self, path: str) -> None:
        """Remove the file of a key (evict): rename it to a name of ours, then retire it.

        Raises:
            OSError: If it exists but cannot be removed.
        """
        if not self.locking:
            os.unlink(path)
            return
        if not stat_mode.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)  # not one of our files: fails as it should for a directory
            return
        private = self._private_path()
        os.rename(path, private)  # only one process wins this name: the file is ours now
        self._retire(private)

    def get(self, key: str) -> Fetched:
        """Read (or map) the whole file of ``key`` into one buffer, with its write time."""
        path = self.path(key)
        if not self._checked and not self._ready("read", key):
            return None
        try:
            if self.locking or self.zero_copy:  # mappings always lock (see _maps)
                try:
                    opened = open_locked(path)
                except TimeoutError:
                    raise self.error(
                        f"{self.where} could not read key {key!r}: its file {path!r} was "
                        f"replaced under every attempt for {REPLACED_WAIT:g} s (it is being "
                        "rewritten without a pause); read it again when writing slows down"
                    ) from None
                if opened is None:
                    raise FileNotFoundError(path)
                fd, stat = opened
                if self.zero_copy and stat.st_size > 0:
                    view = map_file(fd, stat, private=not self.readonly)
                    return view, stat.st_mtime_ns / 1e9
            else:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                stat = os.fstat(fd)
        except FileNotFoundError:
            if not self._cleared and not os.path.isdir(self.directory):
                raise self._missing("read", key) from None
            return None
        except OSError as exc:
            raise self._error("open", path, exc) from exc
        try:
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

    def timestamp(self, key: str) -> float | None:
        """Return the write time of ``key``'s file, or ``None``."""
        path = self.path(key)
        try:
            return os.stat(path).st_mtime_ns / 1e9
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(f"inspect key {key!r} at", path, exc) from exc

    def exists(self, key: str) -> bool:
        """Return whether the file of ``key`` exists."""
        return os.path.exists(self.path(key))

    def evict(self, key: str) -> None:
        """Delete the file of ``key`` (a missing file is not an error).

        With page reuse, a large file goes to the pool instead (the key is gone all the same).
        """
        path = self.path(key)
        try:
            self._take_away(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(f"evict key {key!r}: could not delete", path, exc) from exc

    def clear(self) -> None:
        """Delete the directory and everything in it (it is made again on the next write)."""
        import shutil  # only here: it pulls in bz2/lzma, which resolving never needs

        if self.pool is not None:
            self.pool.drain()
        if self.locking:  # give the memory back even where a parked mapping refers to it
            with contextlib.suppress(OSError, StoreError):
                for info in list(self.scan()):
                    with contextlib.suppress(OSError):
                        path = os.path.join(self.directory, info.key)
                        private = os.path.join(self.directory, temp_name(new_key()[:16]))
                        os.rename(path, private)
                        delete_file(private)
        shutil.rmtree(self.directory, ignore_errors=True)
        self._cleared = True
        self._checked = False

    def close(self) -> None:
        """Give back the pages kept for reuse (objects stay)."""
        if self.pool is not None:
            self.pool.drain()

    def scan(self) -> Iterator[KeyInfo]:
        """List the objects (temporary files excluded): key, size, write time.

        Raises:
            StoreError: If the directory is missing or cannot be read.
        """
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat_mode.S_ISREG(info.st_mode):
                        yield KeyInfo(entry.name, info.st_size, info.st_mtime_ns / 1e9)
        except FileNotFoundError:
            raise self._missing("list", None) from None
        except OSError as exc:
            raise self._error("list", self.directory, exc) from exc

    def __repr__(self) -> str:
        return f"FileBackend({self.directory!r}, zero_copy={self.zero_copy})"
