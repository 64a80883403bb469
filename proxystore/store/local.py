"""``LocalStore``: objects kept in this process's memory.

Objects are kept as they are: no serialization and no copy when they never leave the process,
so ``store.get(key)`` returns the very object that was stored. Proxies of a ``LocalStore``
resolve in any thread of the creating process; resolved in another process they raise
:class:`~proxystore.exceptions.ProcessLocalStoreError`, since the memory they point at is not
there.
"""

from __future__ import annotations

import os
import threading
from typing import Any, TypeVar

from proxystore.exceptions import ProcessLocalStoreError
from proxystore.serialize import deserialize as deserialize_bytes
from proxystore.serialize import serialize as serialize_obj
from proxystore.store.base import Store, StoreFactory

__all__ = ["LocalFactory", "LocalStore"]

T = TypeVar("T")


class LocalFactory(StoreFactory[T]):
    """Factory of :class:`LocalStore` proxies: resolves only in the process that made it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pid = os.getpid()

    def get_store(self) -> Store:
        """Return the local store, refusing to re-create it in a different process."""
        if os.getpid() != self.pid:
            raise ProcessLocalStoreError(
                f"proxy of key {self.key!r} refers to LocalStore {self.store_name!r}, which is "
                f"process-local: its objects live in process {self.pid}, not in this process "
                f"({os.getpid()}). Use a FileStore or RedisStore to share objects between "
                "processes.",
                store_name=self.store_name,
                store_type="LocalStore",
            )
        from proxystore.store.registry import get_store

        store = get_store(self.store_name)
        if store is None:
            # Re-creating a LocalStore would give an empty one: its objects are gone.
            raise ProcessLocalStoreError(
                f"proxy of key {self.key!r} refers to LocalStore {self.store_name!r}, which is "
                "no longer registered in this process (unregister_store() or a re-init under "
                "another type): its objects went with it",
                store_name=self.store_name,
                store_type="LocalStore",
            )
        return store


class LocalStore(Store):
    """A store in this process's memory.

    Args:
        name: Name of the store.
    """

    factory_class = LocalFactory
    process_local = True
    """Objects live in this process only: engines with worker processes refuse this store."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # key -> (value, value is serialized bytes)
        self._data: dict[str, tuple[Any, bool]] = {}
        self._lock = threading.Lock()

    def set(self, obj: Any, *, key: str | None = None, serialize: bool = True) -> str:
        """Keep ``obj`` (by reference, not copied) under ``key``; return the key."""
        if not serialize and not isinstance(obj, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"LocalStore.set(serialize=False) needs bytes, got {type(obj).__name__}"
            )
        if key is None:
            key = self.new_key()
        value = bytes(obj) if not serialize and not isinstance(obj, bytes) else obj
        with self._lock:
            self._data[key] = (value, not serialize)
        return key

    def get(
        self,
        key: str,
        *,
        deserialize: bool = True,
        strict: bool = False,
        default: Any = None,
    ) -> Any:
        """Return the object under ``key`` (always the newest; ``strict`` changes nothing)."""
        with self._lock:
            entry = self._data.get(key)
        if entry is None:
            return default
        value, is_bytes = entry
        if deserialize == (not is_bytes):
            return value
        return deserialize_bytes(value) if deserialize else serialize_obj(value)

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is in the store."""
        with self._lock:
            return key in self._data

    def evict(self, key: str) -> None:
        """Remove ``key`` (a missing key is not an error)."""
        with self._lock:
            self._data.pop(key, None)

    def is_cached(self, key: str, *, strict: bool = False) -> bool:
        """Every object of a local store is in memory: the same as :meth:`exists`."""
        return self.exists(key)

    def cleanup(self) -> None:
        """Drop every object."""
        with self._lock:
            self._data.clear()
