"""The store contract: what every store does, and the factory its proxies carry.

A :class:`Store` maps keys to objects. Its proxies carry a :class:`StoreFactory` that holds
only the key and the store's *description* (type, name, constructor arguments), never the store
object, so a proxy can be pickled into another process and re-create the store there.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, ClassVar, TypeVar

from proxystore.exceptions import ProxyResolveMissingKey
from proxystore.factory import Factory, run_in_thread
from proxystore.proxy import Proxy, get_key
from proxystore.store.stats import StatsRecorder, TimeStats

__all__ = ["MISSING", "Store", "StoreFactory"]

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
"""Pass as ``default`` to :meth:`Store.get` to tell a stored ``None`` from a missing key."""


class StoreFactory(Factory[T]):
    """Factory that resolves a key from a store, re-creating the store where needed.

    Args:
        key: Key of the object in the store.
        store_type: ``"module:ClassName"`` path of the store's class.
        store_name: Name the store is registered under.
        store_kwargs: Constructor arguments that re-create the store in another process.
        evict: Remove the object from the store once this factory has resolved it.
        strict: Always resolve the newest version of the object (revalidate caches).
        deserialize: Deserialize the stored bytes (``False`` returns the raw bytes).
    """

    def __init__(
        self,
        key: str,
        store_type: str,
        store_name: str,
        store_kwargs: dict[str, Any] | None = None,
        *,
        evict: bool = False,
        strict: bool = False,
        deserialize: bool = True,
    ) -> None:
        self.key = key
        self.store_type = store_type
        self.store_name = store_name
        self.store_kwargs = dict(store_kwargs or {})
        self.evict = evict
        self.strict = strict
        self.deserialize = deserialize
        self._future: Future[tuple[Store, Any]] | None = None
        self._lock = threading.Lock()

    def get_store(self) -> Store:
        """Return the store in this process, initializing it from the description if needed."""
        from proxystore.store.registry import get_or_init_store

        return get_or_init_store(self.store_type, self.store_name, self.store_kwargs)

    def _finish(self, store: Store, obj: Any) -> T:
        if obj is MISSING:
            raise ProxyResolveMissingKey(self.key, type(store).__name__, store.name)
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
        if future is None:
            store = self.get_store()
            obj = store.get(
                self.key, deserialize=self.deserialize, strict=self.strict, default=MISSING
            )
        else:
            store, token = future.result()
            obj = store.complete(
                self.key, token, deserialize=self.deserialize, strict=self.strict, default=MISSING
            )
        result = self._finish(store, obj)
        if store._stats is not None:
            store._stats.record(self.key, "resolve", time.perf_counter() - start)
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
        # Never show store_kwargs: they may hold passwords or tokens.
        store_class = self.store_type.rpartition(":")[2]
        return f"{type(self).__name__}(key={self.key!r}, store={store_class}({self.store_name!r}))"


class Store(ABC):
    """Base class of stores: a named mapping from keys to objects that makes proxies.

    Subclasses implement :meth:`set`, :meth:`get`, :meth:`exists`, :meth:`evict` and
    :meth:`is_cached`, and return their constructor arguments from :meth:`factory_kwargs` so
    that proxies can re-create the store in another process. Remote backends should derive
    from :class:`~proxystore.store.remote.RemoteStore` instead, which needs only byte-level
    operations.

    Args:
        name: Name of the store; proxies find their store by this name in the registry.
    """

    factory_class: ClassVar[type[StoreFactory[Any]]] = StoreFactory
    process_local: ClassVar[bool] = False
    """Whether objects are reachable only from the creating process (e.g. ``LocalStore``)."""

    _stats: StatsRecorder | None = None

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"store name must be a non-empty string, got {name!r}")
        self.name = name

    # -- statistics ---------------------------------------------------------------------------

    def enable_stats(self) -> None:
        """Start recording per-key timing statistics (what ``init_store(..., stats=True)`` does).

        Wraps this store object's ``set`` and ``get``; a store without statistics pays nothing.
        """
        if self._stats is not None:
            return
        self._stats = StatsRecorder()
        stats = self._stats
        set_method, get_method = self.set, self.get

        @functools.wraps(set_method)
        def timed_set(obj: Any, *args: Any, **kwargs: Any) -> str:
            start = time.perf_counter()
            key = set_method(obj, *args, **kwargs)
            stats.record(key, "set", time.perf_counter() - start)
            return key

        @functools.wraps(get_method)
        def timed_get(key: str, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return get_method(key, *args, **kwargs)
            finally:
                stats.record(key, "get", time.perf_counter() - start)

        self.set = timed_set  # type: ignore[method-assign]
        self.get = timed_get  # type: ignore[method-assign]

    def stats(self, key_or_proxy: str | Proxy) -> dict[str, TimeStats]:
        """Return the timing statistics of a key (or of a proxy's key), by operation.

        Operations: ``set``, ``get``, ``transfer`` (backend byte movement) and ``resolve``
        (proxy resolution in this process). A key with no recorded operation gives ``{}``.

        Raises:
            ValueError: If statistics are off for this store (turn them on with
                ``init_store(..., stats=True)``), or a proxy is not a store proxy.
        """
        if self._stats is None:
            raise ValueError(
                f"statistics are off for {type(self).__name__} {self.name!r}: create it with "
                "init_store(..., stats=True) (or call store.enable_stats())"
            )
        if isinstance(key_or_proxy, Proxy):
            key = get_key(key_or_proxy)
            if key is None:
                raise ValueError("the proxy is not a store proxy: it has no key")
        else:
            key = key_or_proxy
        return self._stats.get(key)

    def recreate_kwargs(self) -> dict[str, Any]:
        """Arguments for ``init_store`` that re-create this store in another process.

        :meth:`factory_kwargs` plus ``stats=True`` when statistics are on.
        """
        kwargs = self.factory_kwargs()
        if self._stats is not None:
            kwargs["stats"] = True
        return kwargs

    # -- the contract -------------------------------------------------------------------------

    @abstractmethod
    def set(self, obj: Any, *, key: str | None = None, serialize: bool = True) -> str:
        """Store ``obj`` and return its key.

        Args:
            obj: Object to store. With ``serialize=False`` it must already be bytes.
            key: Key to store under (overwrites); a new unguessable key when ``None``.
            serialize: Serialize ``obj`` first.
        """

    @abstractmethod
    def get(
        self,
        key: str,
        *,
        deserialize: bool = True,
        strict: bool = False,
        default: Any = None,
    ) -> Any:
        """Return the object stored under ``key``, or ``default`` when there is none.

        Args:
            key: Key of the object.
            deserialize: Deserialize the stored bytes (``False`` returns the raw bytes).
            strict: Return the newest version, revalidating any cached copy.
            default: Returned when the key is missing (see :data:`MISSING`).
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Return whether ``key`` is in the store."""

    @abstractmethod
    def evict(self, key: str) -> None:
        """Remove ``key`` from the store (a missing key is not an error)."""

    @abstractmethod
    def is_cached(self, key: str, *, strict: bool = False) -> bool:
        """Return whether ``key`` is in this process's cache (and current, with ``strict``)."""

    def factory_kwargs(self) -> dict[str, Any]:
        """Return the constructor arguments (besides the name) that re-create this store."""
        return {}

    def prefetch(self, key: str, *, strict: bool = False) -> Any:
        """Do the I/O part of a ``get`` (run in a background thread by ``resolve_async``).

        Returns an opaque token for :meth:`complete`. The default does nothing: stores whose
        objects are already in memory have no I/O to overlap.
        """
        return None

    def complete(
        self,
        key: str,
        token: Any,
        *,
        deserialize: bool = True,
        strict: bool = False,
        default: Any = None,
    ) -> Any:
        """Finish a ``get`` started by :meth:`prefetch`; same result as :meth:`get`."""
        return self.get(key, deserialize=deserialize, strict=strict, default=default)

    def cleanup(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the store's resources (files, connections). The default does nothing."""

    # -- given to every store -----------------------------------------------------------------

    @staticmethod
    def new_key() -> str:
        """Return a new unguessable key (128 random bits, as 32 hex digits)."""
        return secrets.token_hex(16)

    def set_batch(
        self,
        objs: Sequence[Any],
        *,
        keys: Sequence[str | None] | None = None,
        serialize: bool = True,
    ) -> list[str]:
        """Store each object of ``objs`` and return their keys, in order.

        Raises:
            ValueError: If ``keys`` is given with a different length than ``objs``.
        """
        if keys is None:
            keys = [None] * len(objs)
        elif len(keys) != len(objs):
            raise ValueError(f"set_batch got {len(objs)} objects but {len(keys)} keys")
        return [self.set(obj, key=key, serialize=serialize) for obj, key in zip(objs, keys)]

    def proxy(
        self,
        obj: Any = None,
        *,
        key: str | None = None,
        serialize: bool = True,
        evict: bool = False,
        strict: bool = False,
        **kwargs: Any,
    ) -> Proxy:
        """Return a proxy of ``obj`` (stored now) or of the object already under ``key``.

        Args:
            obj: Object to store and proxy. If ``None``, ``key`` must name a stored object.
            key: With ``obj``, the key to store it under; alone, the key to proxy.
            serialize: Serialize ``obj`` when storing it; with ``False`` the proxy also
                resolves to the raw bytes.
            evict: Remove the object from the store once the proxy has resolved.
            strict: Resolve to the newest version of the object under the key.
            kwargs: Extra arguments for the store's factory class.

        Raises:
            ValueError: If neither ``obj`` nor ``key`` is given.
        """
        if obj is not None:
            key = self.set(obj, key=key, serialize=serialize)
        elif key is None:
            raise ValueError("Store.proxy() needs an object to store or the key of a stored one")
        factory = self.factory_class(
            key,
            self.type_path(),
            self.name,
            self.recreate_kwargs(),
            evict=evict,
            strict=strict,
            deserialize=serialize,
            **kwargs,
        )
        return Proxy(factory)

    def proxy_batch(
        self,
        objs: Sequence[Any] | None = None,
        *,
        keys: Sequence[str] | None = None,
        serialize: bool = True,
        evict: bool = False,
        strict: bool = False,
    ) -> list[Proxy]:
        """Return a proxy for each object of ``objs`` and/or each key of ``keys``.

        With both, ``objs[i]`` is stored under ``keys[i]``.

        Raises:
            ValueError: If neither is given, or both are given with different lengths.
        """
        if objs is None and keys is None:
            raise ValueError("Store.proxy_batch() needs objects to store or keys of stored ones")
        if objs is not None and keys is not None and len(objs) != len(keys):
            raise ValueError(f"proxy_batch got {len(objs)} objects but {len(keys)} keys")
        if objs is not None:
            keys = self.set_batch(objs, keys=keys, serialize=serialize)
        assert keys is not None
        return [
            self.proxy(key=key, serialize=serialize, evict=evict, strict=strict) for key in keys
        ]

    @classmethod
    def type_path(cls) -> str:
        """Return the ``"module:ClassName"`` path that names this store type in factories."""
        return f"{cls.__module__}:{cls.__qualname__}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
