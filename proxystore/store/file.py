"""``FileStore``: one file per key in a directory shared by every process that uses it.

Writes go to a temporary name in the same directory and are renamed into place, so a reader
never sees a partial object. Each write stamps the file's modification time with the writer's
nanosecond clock, which is the timestamp ``strict`` revalidation compares.

Reads go straight into one writable buffer, which the deserializer shares with the arrays it
rebuilds: a large numpy array costs one read and no further copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from typing import Any

from proxystore.exceptions import InvalidKeyError, StoreError
from proxystore.serialize import Buffer
from proxystore.store.remote import RemoteStore

__all__ = ["FileStore"]

_IOV_MAX = min(getattr(os, "sysconf", lambda _: 1024)("SC_IOV_MAX"), 1024)


class FileStore(RemoteStore):
    """A store of files in ``store_dir``, one per key.

    Args:
        name: Name of the store.
        store_dir: Directory for the files; created if missing. Every process that resolves
            this store's proxies must see the same directory (a shared or local file system).
        cache_size: Size of the per-process LRU cache of deserialized objects (``0``: off).
    """

    def __init__(self, name: str, *, store_dir: str | os.PathLike[str], cache_size: int = 16):
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

    def factory_kwargs(self) -> dict[str, Any]:
        """Return the constructor arguments that re-create this store."""
        return {"store_dir": self.store_dir, **super().factory_kwargs()}

    def _path(self, key: str) -> str:
        if (
            not isinstance(key, str)
            or not key
            or key.startswith(".")
            or "/" in key
            or os.sep in key
            or "\x00" in key
        ):
            raise InvalidKeyError(
                f"FileStore {self.name!r} cannot use key {key!r} as a file name: keys must be "
                "non-empty, must not start with '.' and must not contain '/' or NUL",
                key=str(key),
                store_name=self.name,
                store_type="FileStore",
            )
        return os.path.join(self.store_dir, key)

    def _error(self, action: str, path: str, exc: OSError) -> StoreError:
        return StoreError(
            f"FileStore {self.name!r} could not {action} {path!r}: {exc.strerror or exc}",
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
            data = bytearray(stat.st_size)
            view = memoryview(data)
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
        temp = os.path.join(self.store_dir, f".{key}.{os.getpid()}.{self.new_key()[:8]}.tmp")
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
        shutil.rmtree(self.store_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"FileStore(name={self.name!r}, store_dir={self.store_dir!r})"


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
