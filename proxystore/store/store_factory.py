"""``StoreFactory``: the factory a store proxy carries, and the ``MISSING`` sentinel.

A factory holds a key and the store's
:class:`~proxystore.store.description.StoreDescription`, never the store object, so a proxy
pickles into another process and re-creates the store there (once per process and name).
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from proxystore.exceptions import ProxyResolveMissingKey, StoreError
from proxystore.factory import Factory, run_in_thread
from proxystore.store.description import StoreDescription
from proxystore.store.layers.base import innermost

if TYPE_CHECKING:
    from proxystore.store.base import Store

__all__ = ["MISSING", "StoreFactory"]

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
        self._future: Future[tuple[Store, Any]] | None = None
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

    def get_store(self) -> Store:
        """Return the store in this process, creating it from the description if needed."""
        return self.description.get_or_create()

    def _finish(self, store: Store, obj: Any) -> T:
        if obj is MISSING:
            raise ProxyResolveMissingKey(
                self.key, type(store).__name__, store.name, socket.gethostname(), location(store)
            )
        if self.evict:
            store.evict(self.key)
        result: T = obj
        return result

    def _prefetch(self) -> tuple[Store, Any]:
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
            _add_resolving_context(exc, self.key, self.description)
            raise
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


def location(store: Store) -> str | None:
    """Where ``store`` keeps its objects: the server address or directory, when known."""
    backend = innermost(store.backend)
    for attribute in ("address", "directory"):
        value = getattr(backend, attribute, None)
        if isinstance(value, str):
            return value
    return None


def _add_resolving_context(error: StoreError, key: str, description: StoreDescription) -> None:
    """Complete ``error``'s message with the key, the store and the host that resolved."""
    host = socket.gethostname()
    message = str(error)
    if getattr(error, "resolving_host", None) is None:
        error.args = (
            f"{message} [resolving key {key!r} of {description.type_name} "
            f"{description.name!r} on host {host}]",
            *error.args[1:],
        )
        error.resolving_host = host  # type: ignore[attr-defined]
        if getattr(error, "key", None) is None:
            error.key = key  # type: ignore[attr-defined]
