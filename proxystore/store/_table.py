"""The process-wide table of named stores, below everything that uses it.

:mod:`proxystore.store.registry` (the public face: ``init_store``, ``get_store``, ...) and the
store factories (which re-create their store in a worker process) both go through here, by
ordinary calls: this module imports no store, so nothing above it needs a hook or a deferred
import to reach the table.

Locking: the table is guarded by a lock held only for dictionary operations, so lookups never
wait on a backend. Creating a store (a Redis ping, a Globus login) happens under a lock of its
own name only: a slow store delays nobody but those waiting for that same name.

Entries are typed by :class:`Named`, the little this module needs of a store; only
:class:`~proxystore.store.base.Store` objects are ever put in (``registry.register_store``
takes one, and :func:`get_or_create` creates only classes that describe themselves as stores).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any, Callable, Protocol, TypeVar

from proxystore.exceptions import MissingExtraError, UnknownStoreError

__all__ = [
    "Description",
    "Named",
    "get",
    "get_or_create",
    "get_or_make",
    "import_path",
    "put",
    "remove",
    "snapshot",
]


class Named(Protocol):
    """What the table needs of a store: its name, and statistics to turn on."""

    @property
    def name(self) -> str:
        """The name the store is registered under."""
        ...

    def enable_stats(self) -> None:
        """Start recording statistics."""
        ...


class Description(Protocol):
    """What re-creates a store (a :class:`~proxystore.store.description.StoreDescription`)."""

    @property
    def type_path(self) -> str:
        """``"module:ClassName"`` of the store's class."""
        ...

    @property
    def name(self) -> str:
        """Name of the store."""
        ...

    @property
    def stats(self) -> bool:
        """Whether the store records statistics."""
        ...

    @property
    def kwargs(self) -> Mapping[str, Any]:
        """Constructor arguments besides the name."""
        ...


N = TypeVar("N", bound=Named)

# Optional dependency of each backend module: (module that may be missing, extra to install).
_EXTRAS: dict[str, tuple[str, str]] = {
    "proxystore.store.redis": ("redis", "redis"),
    "proxystore.store.globus": ("globus_sdk", "globus"),
}

_lock = threading.Lock()  # guards _stores and _name_locks; held for dict operations only
_stores: dict[str, Named] = {}
_name_locks: dict[str, threading.Lock] = {}


def _name_lock(name: str) -> threading.Lock:
    with _lock:
        lock = _name_locks.get(name)
        if lock is None:
            lock = _name_locks[name] = threading.Lock()
        return lock


def get(name: str) -> Named | None:
    """Return the store registered under ``name``, or ``None``."""
    with _lock:
        return _stores.get(name)


def put(store: Named) -> None:
    """Register ``store`` under its name, replacing any store of that name."""
    with _lock:
        _stores[store.name] = store


def remove(name: str) -> None:
    """Remove the store registered under ``name`` (no-op if there is none)."""
    with _lock:
        _stores.pop(name, None)


def snapshot() -> dict[str, Named]:
    """A copy of the table (name to store)."""
    with _lock:
        return dict(_stores)


def get_or_make(name: str, make: Callable[[], N]) -> Named:
    """Return the store registered as ``name``, else register and return what ``make()`` makes.

    Atomic per name: concurrent callers for one name get one store object (``make`` runs
    once); callers for other names and plain lookups never wait for it.
    """
    with _lock:
        store = _stores.get(name)
    if store is not None:
        return store
    with _name_lock(name):
        with _lock:
            store = _stores.get(name)
        if store is None:
            store = make()
            put(store)
        return store


def get_or_create(description: Description) -> Named:
    """Return the store a description names, creating and registering it if there is none."""
    with _lock:  # the path of every resolve: one lookup, nothing else
        store = _stores.get(description.name)
    if store is not None:
        return store
    return get_or_make(description.name, lambda: _create(description))


def _create(description: Description) -> Named:
    cls = import_path(description.type_path)
    type_path = getattr(cls, "type_path", None)
    if not (callable(type_path) and callable(getattr(cls, "enable_stats", None))):
        raise UnknownStoreError(
            f"{description.type_path!r} does not name a Store subclass",
            store_type=description.type_path,
        )
    store: Named = cls(description.name, **description.kwargs)
    if description.stats:
        store.enable_stats()
    return store


def import_path(path: str) -> type[Any]:
    """Import the class a ``"module:ClassName"`` path names.

    Raises:
        MissingExtraError: If the module needs an optional dependency that is not installed
            (the message says which extra to install).
        UnknownStoreError: If the module cannot be imported or has no such class.
    """
    module_name, _, qualname = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        dependency, extra = _EXTRAS.get(module_name, (None, None))
        if extra is not None and exc.name is not None and exc.name.split(".")[0] == dependency:
            raise MissingExtraError(
                f"{qualname} needs the optional dependency {dependency!r}: "
                f'install it with pip install "proxystore[{extra}]"',
                extra=extra,
                store_type=qualname,
            ) from exc
        raise UnknownStoreError(
            f"cannot import store module {module_name!r} for store type {path!r}: {exc}",
            store_type=path,
        ) from exc
    except ValueError as exc:  # an empty module name
        raise UnknownStoreError(
            f"cannot import store module {module_name!r} for store type {path!r}: {exc}",
            store_type=path,
        ) from exc
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type):
        raise UnknownStoreError(f"{path!r} does not name a Store subclass", store_type=path)
    return obj
