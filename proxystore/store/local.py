"""``LocalStore``: objects kept in this process's memory.

A :class:`~proxystore.store.base.Store` over a by-reference
:class:`~proxystore.store.backends.memory.MemoryBackend`: objects are kept as they are, with no
serialization and no copy, so ``store.get(key)`` returns the very object that was stored.
Proxies of a ``LocalStore`` resolve in any thread of the creating process; resolved in another
process they raise :class:`~proxystore.exceptions.ProcessLocalStoreError`, since the memory
they point at is not there.

Built the way every store is (see :mod:`proxystore.store.settings`): :class:`LocalSettings`
(nothing to set besides the name) builds the backend and the codec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from proxystore.exceptions import ProcessLocalStoreError
from proxystore.store.backends.memory import MemoryBackend
from proxystore.store.base import Store, StoreFactory
from proxystore.store.codec import Codec
from proxystore.store.registry import get_store
from proxystore.store.settings import StoreSettings

__all__ = ["LocalFactory", "LocalSettings", "LocalStore"]

T = TypeVar("T")

_BY_REFERENCE = Codec(by_reference=True)


@dataclass(frozen=True, repr=False)
class LocalSettings(StoreSettings):
    """Settings of a :class:`LocalStore`: only its name (objects are kept by reference).

    Attributes:
        name: Name of the store.
    """

    store_type: ClassVar[str] = "LocalStore"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"store name must be a non-empty string, got {self.name!r}")

    def build(self) -> tuple[MemoryBackend, Codec]:
        """A by-reference memory backend and the codec that keeps objects as they are."""
        backend = MemoryBackend(by_reference=True, store_name=self.name, store_type="LocalStore")
        return backend, _BY_REFERENCE


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
        settings = LocalSettings(name)
        backend, codec = settings.build()
        super().__init__(name, backend, cache_size=0, codec=codec, settings=settings)
