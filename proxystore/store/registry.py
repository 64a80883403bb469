"""The process-wide registry of named stores: ``STORES``, ``init_store`` and ``get_store``.

Backends are named by dotted path and imported on first use, so importing ProxyStore never
imports redis or globus-sdk. A factory that must re-create its store in a worker process goes
through the same table of stores (:func:`get_or_create` from a
:class:`~proxystore.store.description.StoreDescription`, :func:`get_or_init_store` from a
type, name and arguments), atomically per name: two proxies resolving in parallel threads end
up with one store object.

Locking: the table of stores is guarded by a lock held only for dictionary operations, so
lookups never wait on a backend. Creating a store (a Redis ping, a Globus login) happens under
a lock of its own name only: a slow store delays nobody but those waiting for that same name.
:func:`registered_stores` returns a read-only snapshot.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Union

import proxystore.store._table as _table
from proxystore.exceptions import UnknownStoreError
from proxystore.proxy import Proxy, get_factory
from proxystore.store.base import Store
from proxystore.store.description import StoreDescription

__all__ = [
    "STORES",
    "StoreType",
    "get_or_create",
    "get_or_init_store",
    "get_store",
    "init_store",
    "register_store",
    "registered_stores",
    "resolve_store_class",
    "unregister_store",
]


class STORES(enum.Enum):
    """The store types that ship with ProxyStore, each named by the dotted path of its class."""

    LOCAL = "proxystore.store.local:LocalStore"
    FILE = "proxystore.store.file:FileStore"
    REDIS = "proxystore.store.redis:RedisStore"
    GLOBUS = "proxystore.store.globus:GlobusStore"

    @classmethod
    def get_str_by_type(cls, store_type: type[Store]) -> str:
        """Return the member name (``"REDIS"``, ...) of a built-in store class.

        Raises:
            KeyError: If ``store_type`` is not one of the built-in stores.
        """
        path = store_type.type_path()
        for member in cls:
            if member.value == path:
                return member.name
        raise KeyError(f"{store_type.__name__} is not a built-in store type")


StoreType = Union[STORES, str, "type[Store]"]
"""What :func:`init_store` accepts as a store type."""


def _import_path(path: str) -> type[Store]:
    cls = _table.import_path(path)
    if not issubclass(cls, Store):
        raise UnknownStoreError(f"{path!r} does not name a Store subclass", store_type=path)
    return cls


def _as_store(entry: _table.Named) -> Store:
    """A table entry as the Store it is (only stores are registered)."""
    if not isinstance(entry, Store):  # pragma: no cover - the table holds stores only
        raise UnknownStoreError(f"the registry holds {entry!r}, which is not a Store")
    return entry


def resolve_store_class(store_type: StoreType) -> type[Store]:
    """Map a store type to its class.

    Args:
        store_type: A :class:`STORES` member, its name or value as a string (``"REDIS"``,
            ``"redis"``, ``"proxystore.store.redis:RedisStore"``), the class name of a built-in
            store (``"RedisStore"``), or a :class:`~proxystore.store.base.Store` subclass.

    Raises:
        UnknownStoreError: If the type names no store (also a ``ValueError``).
        MissingExtraError: If the store's optional dependency is not installed.
    """
    if isinstance(store_type, STORES):
        return _import_path(store_type.value)
    if isinstance(store_type, type):
        if issubclass(store_type, Store):
            return store_type
        raise UnknownStoreError(
            f"{store_type.__name__} is not a proxystore Store subclass",
            store_type=store_type.__name__,
        )
    if isinstance(store_type, str):
        for member in STORES:
            class_name = member.value.rpartition(":")[2]
            if store_type.upper() == member.name or store_type in (member.value, class_name):
                return _import_path(member.value)
        if ":" in store_type:
            return _import_path(store_type)
    known = ", ".join(member.name for member in STORES)
    raise UnknownStoreError(
        f"unknown store type {store_type!r}: use one of STORES ({known}), a Store subclass, "
        "or a 'module:ClassName' path",
        store_type=str(store_type),
    )


def init_store(store_type: StoreType, name: str, **kwargs: Any) -> Store:
    """Create a store and register it under ``name``.

    Re-initializing a name replaces the registered store (the old one is not closed). The
    store is created without holding the registry's lock: other lookups do not wait for it.

    Args:
        store_type: Which store to create (see :func:`resolve_store_class`).
        name: Name to register the store under; proxies find their store by this name.
        kwargs: Arguments of the store's constructor, and ``stats=True`` to record per-key
            timing statistics (see :meth:`~proxystore.store.base.Store.stats`).

    Returns:
        The new store.

    Raises:
        UnknownStoreError: If ``store_type`` names no store (also a ``ValueError``).
        MissingExtraError: If the store's optional dependency is not installed.
    """
    store = _make(store_type, name, kwargs)
    register_store(store)
    return store


def _make(store_type: StoreType, name: str, kwargs: Mapping[str, Any]) -> Store:
    cls = resolve_store_class(store_type)
    kwargs = dict(kwargs)
    stats = kwargs.pop("stats", False)
    store = cls(name, **kwargs)
    if stats:
        store.enable_stats()
    return store


def register_store(store: Store) -> None:
    """Register an existing store object under its name, replacing any store of that name."""
    _table.put(store)


def unregister_store(name: str) -> None:
    """Remove the store registered under ``name`` (no-op if there is none)."""
    _table.remove(name)


def get_store(name_or_proxy: str | Proxy) -> Store | None:
    """Return the registered store with this name, or the store a proxy refers to.

    A proxy is not resolved by this call.

    Returns:
        The store, or ``None`` if no store of that name is registered in this process (or the
        proxy's factory is not a store factory).
    """
    if isinstance(name_or_proxy, Proxy):
        name = getattr(get_factory(name_or_proxy), "store_name", None)
        if not isinstance(name, str):
            return None
    else:
        name = name_or_proxy
    store = _table.get(name)
    return None if store is None else _as_store(store)


def get_or_init_store(store_type: str, name: str, kwargs: Mapping[str, Any]) -> Store:
    """Return the store registered as ``name``, creating and registering it if there is none.

    Used by store factories in processes where the store has not been initialized yet. Atomic
    per name: concurrent callers for one name get one store object; callers for other names
    and plain lookups never wait for the creation.
    """
    return _as_store(_table.get_or_make(name, lambda: _make(store_type, name, kwargs)))


def get_or_create(description: StoreDescription) -> Store:
    """Return the store a description names, creating and registering it if needed.

    What a :class:`~proxystore.store.base.StoreFactory` does to find its store in a worker
    process (atomic per name, like :func:`get_or_init_store`).
    """
    return _as_store(_table.get_or_create(description))


def registered_stores() -> Mapping[str, Store]:
    """Return a read-only snapshot of the registry (name to store)."""
    return MappingProxyType({name: _as_store(store) for name, store in _table.snapshot().items()})
