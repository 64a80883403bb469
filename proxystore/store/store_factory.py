"""``StoreFactory``: the factory a store proxy carries, and the ``MISSING`` sentinel.

A factory holds a key and the store's
:class:`~proxystore.store.description.StoreDescription`, never the store object, so a proxy
pickles into another process and re-creates the store there (once per process and name),
through the process's table of stores (the registry), by an ordinary call.

This module sits below :mod:`proxystore.store.base`: it knows a store only by what it calls
on one (:class:`ResolvingStore`, which :class:`~proxystore.store.base.Store` satisfies).
"""

from __future__ import annotations

import copy
import functools
import inspect
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import proxystore.store._table as _table
from proxystore.exceptions import ProxyResolveMissingKey, StoreError
from proxystore.factory import Factory, run_in_thread
from proxystore.store.backends.base import Backend, Fetched
from proxystore.store.description import StoreDescription
from proxystore.store.layers.base import innermost

__all__ = ["MISSING", "Prefetched", "ResolvingStore", "StoreFactory", "check_factory_kwargs"]

T = TypeVar("T")


class _Missing:
    """Sentinel for "no such key", distinct from a stored ``None``."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Pass as ``default`` to :meth:`Store.get <proxystore.store.base.Store.get>` to tell a stored
``None`` from a missing key."""


@dataclass(frozen=True)
class Prefetched:
    """The I/O half of a ``get``, done ahead of the rest.

    :meth:`Store.prefetch <proxystore.store.base.Store.prefetch>` makes one (in a background
    thread); :meth:`Store.complete <proxystore.store.base.Store.complete>` finishes it.

    Attributes:
        fetched: What the backend returned: the stored parts and their write time, or
            ``None`` when the key is missing.
    """

    fetched: Fetched


class ResolvingStore(Protocol):
    """What a factory calls on its store (a :class:`~proxystore.store.base.Store` has it all)."""

    @property
    def name(self) -> str:
        """Name of the store."""
        ...

    @property
    def backend(self) -> Backend:
        """The store's backend (possibly wrapped in layers)."""
        ...

    def get(
        self, key: str, *, deserialize: bool = ..., strict: bool = ..., default: Any = ...
    ) -> Any:
        """Return the object under ``key``, or ``default``."""
        ...

    def prefetch(self, key: str, *, strict: bool = ...) -> Prefetched | None:
        """Do the I/O part of a ``get``."""
        ...

    def complete(
        self,
        key: str,
        token: Prefetched | None,
        *,
        deserialize: bool = ...,
        strict: bool = ...,
        default: Any = ...,
    ) -> Any:
        """Finish a ``get`` started by :meth:`prefetch`."""
        ...

    def evict(self, key: str) -> None:
        """Remove ``key`` from the store."""
        ...

    def record(self, key: str, operation: str, seconds: float) -> None:
        """Record one timed operation on ``key``."""
        ...


class StoreFactory(Factory[T]):
    """Factory that resolves a key from a store, re-creating the store where needed.

    Args:
        key: Key of the object in the store.
        description: The store's description.
        evict: Remove the object from the store once this factory has resolved it.
        strict: Always resolve the newest version of the object (revalidate caches).
        deserialize: Deserialize the stored bytes (``False`` returns the raw bytes).
    """

    def __init__(
        self,
        key: str,
        description: StoreDescription,
        *,
        evict: bool = False,
        strict: bool = False,
        deserialize: bool = True,
    ) -> None:
        self.key = key
        self.description = description
        self.evict = evict
        self.strict = strict
        self.deserialize = deserialize
        self._future: Future[tuple[ResolvingStore, Prefetched | None]] | None = None
        self._lock = threading.Lock()

    @property
    def store_name(self) -> str:
        """Name of the store."""
        return self.description.name

    @property
    def store_type(self) -> str:
        """``"module:ClassName"`` path of the store's class."""
        return self.description.type_path

    @property
    def store_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that re-create the store (a copy)."""
        return dict(self.description.kwargs)

    def get_store(self) -> ResolvingStore:
        """Return the store in this process, creating it from the description if needed.

        The process's table of stores is the registry's: a store created here is registered
        (and :func:`~proxystore.store.registry.get_store` finds it).
        """
        # Only stores are in the table (see proxystore.store._table).
        return cast(ResolvingStore, _table.get_or_create(self.description))

    def _finish(self, store: ResolvingStore, obj: Any) -> T:
        if obj is MISSING:
            raise ProxyResolveMissingKey(
                self.key, type(store).__name__, store.name, socket.gethostname(), location(store)
            )
        if self.evict:
            store.evict(self.key)
        result: T = obj
        return result

    def _prefetch(self) -> tuple[ResolvingStore, Prefetched | None]:
        store = self.get_store()
        return store, store.prefetch(self.key, strict=self.strict)

    def resolve(self) -> T:
        """Return the object, finishing a background resolve if one was started.

        The background part of a resolve only moves bytes; deserialization (which may import
        modules) happens here, in the thread that uses the object.
        """
        start = time.perf_counter()
        with self._lock:
            future, self._future = self._future, None
        try:
            if future is None:
                store = self.get_store()
                obj = store.get(
                    self.key, deserialize=self.deserialize, strict=self.strict, default=MISSING
                )
            else:
                store, token = future.result()
                obj = store.complete(
                    self.key,
                    token,
                    deserialize=self.deserialize,
                    strict=self.strict,
                    default=MISSING,
                )
        except StoreError as exc:
            located = _with_resolving_context(exc, self.key, self.description)
            if located is exc:
                raise
            raise located from exc
        result = self._finish(store, obj)
        store.record(self.key, "resolve", time.perf_counter() - start)
        return result

    def resolve_async(self) -> None:
        """Start fetching the object in a background thread (no-op if already started)."""
        with self._lock:
            if self._future is None:
                self._future = run_in_thread(self._prefetch, name=f"proxystore-resolve-{self.key}")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_future"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never the constructor arguments: they may hold passwords or tokens.
        return (
            f"{type(self).__name__}(key={self.key!r}, "
            f"store={self.description.type_name}({self.store_name!r}))"
        )


def location(store: ResolvingStore) -> str | None:
    """Where ``store`` keeps its objects: the server address or directory, when known."""
    backend = innermost(store.backend)
    for attribute in ("address", "directory"):
        value = getattr(backend, attribute, None)
        if isinstance(value, str):
            return value
    return None


def _with_resolving_context(
    error: StoreError, key: str, description: StoreDescription
) -> StoreError:
    """A new error like ``error`` (same type and attributes) naming the key, store and host.

    ``error`` itself is left as it is (the caller chains the new one ``from`` it); an error
    that already names its resolving host is returned unchanged.
    """
    if getattr(error, "resolving_host", None) is not None:
        return error
    host = socket.gethostname()
    located = copy.copy(error)  # StoreError.__reduce__ keeps the type and every attribute
    located.args = (
        f"{error} [resolving key {key!r} of {description.type_name} "
        f"{description.name!r} on host {host}]",
        *error.args[1:],
    )
    located.resolving_host = host  # type: ignore[attr-defined]
    if getattr(located, "key", None) is None:
        located.key = key  # type: ignore[attr-defined]
    return located


@functools.cache
def _signature(factory_class: type[StoreFactory[Any]]) -> inspect.Signature:
    """The signature of the ``__init__`` a factory class really has (``self`` included).

    ``__init__(self, *args, **kwargs)`` overrides that pass everything on are looked through.
    """
    passing_on = {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}
    for klass in factory_class.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            signature = inspect.signature(init)
            if not passing_on <= {p.kind for p in signature.parameters.values()}:
                return signature
    return inspect.signature(factory_class.__init__)


def check_factory_kwargs(
    factory_class: type[StoreFactory[Any]],
    description: StoreDescription,
    kwargs: Mapping[str, Any],
    where: str,
) -> None:
    """Check that ``factory_class`` takes the extra ``kwargs`` of ``Store.proxy()``.

    Raises:
        TypeError: If it does not (``Store.proxy`` calls this before storing anything).
    """
    try:
        _signature(factory_class).bind(None, "key", description, evict=False, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"{where}.proxy() got an argument its factory {factory_class.__name__} does not "
            f"take ({exc}); nothing was stored"
        ) from None
