"""``LocalStore``: objects kept in this process's memory.

A :class:`~proxystore.store.base.Store` over a by-reference
:class:`~proxystore.store.backends.memory.MemoryBackend`: objects are kept as they are, with no
serialization and no copy, so ``store.get(key)`` returns the very object that was stored.
Proxies of a ``LocalStore`` resolve in any thread of the creating process; resolved in another
process they raise :class:`~proxystore.exceptions.ProcessLocalStoreError`, since the memory
they point at is not there.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from proxystore.exceptions import ProcessLocalStoreError
from proxystore.store.backends.memory import MemoryBackend
from proxystore.store.base import Store, StoreFactory
from proxystore.store.codec import Codec
from proxystore.store.registry import get_store

__all__ = ["LocalFactory", "LocalStore"]

T = TypeVar("T")

_BY_REFERENCE = Codec(by_reference=True)


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
    """A store in this process's memory; objects are kept by reference.

    Args:
        name: Name of the store.
    """

    factory_class = LocalFactory
    process_local = True
    """Objects live in this process only: engines with worker processes refuse this store."""

    def __init__(self, name: str) -> None:
        backend = MemoryBackend(by_reference=True, store_name=name, store_type="LocalStore")
        super().__init__(name, backend, cache_size=0, codec=_BY_REFERENCE)
