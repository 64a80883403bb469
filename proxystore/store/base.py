"""``Store``: everything above the bytes, written once for every backend.

A :class:`Store` is a name, a byte-level backend (:mod:`proxystore.store.backends`, possibly
wrapped in layers, :mod:`proxystore.store.layers`) and a :class:`~proxystore.store.codec.Codec`.
It owns serialization, the thread-safe LRU cache of deserialized objects, ``strict``
revalidation, statistics, proxies and their factories, and batch calls:

* a plain ``get`` returns the cached copy when there is one;
* a ``strict`` get compares the cached copy's write time with the backend's and fetches the
  object again when they differ, so it always returns the newest version.

The public store classes (``LocalStore``, ``FileStore``, ``RedisStore``, ``GlobusStore``) are
thin compositions: each builds its backend and passes it here. Proxies carry a
:class:`StoreFactory` holding the key and the store's
:class:`~proxystore.store.description.StoreDescription`, never the store object.

Resources: :meth:`Store.close` releases connections, threads and this process's cache, and
never removes objects; :meth:`Store.clear` removes every object of a store whose storage is
its own (``LocalStore``, ``FileStore``); :meth:`Store.evict` removes one object.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from proxystore.proxy import Proxy, get_key
from proxystore.store._cache import LRUCache
from proxystore.store._inflight import InFlight
from proxystore.store.backends.base import Backend, Fetched, new_key
from proxystore.store.codec import Codec, RawBytes
from proxystore.store.description import StoreDescription
from proxystore.store.future import ProxyFuture
from proxystore.store.layers.timing import TimingLayer
from proxystore.store.settings import StoreSettings
from proxystore.store.stats import StatsRecorder, TimeStats
from proxystore.store.store_factory import MISSING, Prefetched, StoreFactory, check_factory_kwargs

__all__ = ["MISSING", "Prefetched", "Store", "StoreFactory"]

_DEFAULT_CODEC = Codec()
_NOT_CACHED: Any = object()
_GONE: Any = object()


class LifetimeLike(Protocol):
    """What :meth:`Store.proxy` needs of a lifetime (see :mod:`proxystore.store.lifetimes`)."""

    def check_store(self, store: Store) -> None:
        """Raise ``ValueError`` unless objects of ``store`` may be added now."""

    def add_key(self, *keys: str, store: Store | None = None) -> None:
        """Evict ``keys`` of ``store`` when the lifetime ends."""


class Store:
    """A named mapping from keys to objects over a byte-level backend; it makes proxies.

    Args:
        name: Name of the store; proxies find their store by this name in the registry.
        backend: Where the bytes live (a backend, or layers around one).
        cache_size: Most deserialized objects kept in this process's LRU cache; ``0``
            disables caching.
        codec: Serialization settings (see :class:`~proxystore.store.codec.Codec`).
        kwargs: The constructor arguments (besides the name) that re-create this store in
            another process: its :class:`~proxystore.store.description.StoreDescription`
            (a store with ``settings`` takes them from :meth:`StoreSettings.kwargs
            <proxystore.store.settings.StoreSettings.kwargs>` instead).
        settings: The store's validated settings (``FileSettings``, ``RedisSettings``, ...),
            kept as :attr:`settings`; they describe the store to other processes.

    Attributes:
        cache: This process's LRU cache of deserialized objects (key to write time and
            object): ``store.cache.clear()`` empties it, ``store.cache.cached_keys()`` lists
            its keys.

    Raises:
        ValueError: If ``name`` is empty or ``cache_size`` is negative.
    """

    factory_class: ClassVar[type[StoreFactory[Any]]] = StoreFactory
    process_local: ClassVar[bool] = False
    """Whether objects are reachable only from the creating process (e.g. ``LocalStore``)."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        *,
        cache_size: int = 16,
        codec: Codec = _DEFAULT_CODEC,
        kwargs: Mapping[str, Any] | None = None,
        settings: StoreSettings | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"store name must be a non-empty string, got {name!r}")
        self.name = name
        self.cache: LRUCache[str, tuple[float, Any]] = LRUCache(cache_size)
        self.cache_size = cache_size
        self.codec = codec
        self.backend = backend
        self._caching = cache_size > 0 and not codec.by_reference
        self._kwargs = dict(kwargs or {})
        self._settings = settings
        self._stats: StatsRecorder | None = None
        self._description: StoreDescription | None = None
        self._inflight: InFlight[Fetched] = InFlight()
        # Objects kept by reference without statistics: set and get go straight to the backend.
        self._direct = codec.by_reference

    # -- description and statistics ----------------------------------------------------------

    @classmethod
    def type_path(cls) -> str:
        """Return the ``"module:ClassName"`` path that names this store type in descriptions."""
        return f"{cls.__module__}:{cls.__qualname__}"

    @property
    def settings(self) -> StoreSettings | None:
        """The store's validated settings (``None`` for a store built on a bare backend)."""
        return self._settings

    def replace_settings(self, settings: StoreSettings) -> None:
        """Describe the store by new settings from now on (proxies made later carry them).

        For a store that changes a setting after creation (``GlobusStore.timeout``); the
        caller applies the change to its backend itself.
        """
        self._settings = settings
        self._description = None

    def factory_kwargs(self) -> dict[str, Any]:
        """Return the constructor arguments (besides the name) that re-create this store."""
        if self._settings is not None:
            return self._settings.kwargs()
        return dict(self._kwargs)

    @property
    def description(self) -> StoreDescription:
        """What re-creates this store in another process (secrets stay out of its ``repr``)."""
        description = self._description
        if description is None:
            description = self._description = StoreDescription(
                self.type_path(), self.name, self.factory_kwargs(), self._stats is not None
            )
        return description

    def enable_stats(self) -> None:
        """Start recording per-key timing statistics (what ``init_store(..., stats=True)`` does).

        Wraps the backend in a :class:`~proxystore.store.layers.timing.TimingLayer` (the
        ``transfer`` timings) and times ``set``, ``get`` and proxy resolution; a store without
        statistics has no layer and makes no clock call.
        """
        if self._stats is None:
            self._stats = StatsRecorder()
            self.backend = TimingLayer(self.backend, self._stats)
            self._direct = False
            self._description = None  # the description now says stats=True

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

    def record(self, key: str, operation: str, seconds: float) -> None:
        """Record one timed operation on ``key`` (no-op when statistics are off)."""
        if self._stats is not None:
            self._stats.record(key, operation, seconds)

    # -- writing ------------------------------------------------------------------------------

    @staticmethod
    def new_key() -> str:
        """Return a new unguessable key (128 random bits, as 32 hex digits)."""
        return new_key()

    def set(self, obj: Any, *, key: str | None = None, serialize: bool = True) -> str:
        """Store ``obj`` and return its key.

        Args:
            obj: Object to store. With ``serialize=False`` it must already be bytes.
            key: Key to store under (overwrites); a new unguessable key when ``None``.
            serialize: Serialize ``obj`` first.

        Raises:
            TypeError: If ``serialize`` is off and ``obj`` is not bytes-like.
        """
        if self._direct and serialize:
            return self.backend.put(key, (obj,))
        if self._stats is None:
            parts = self.codec.encode(obj, serialize=serialize, where=type(self).__name__)
            if key is not None and self._caching:
                self.cache.evict(key)
            return self.backend.put(key, parts)
        start = time.perf_counter()
        parts = self.codec.encode(obj, serialize=serialize, where=type(self).__name__)
        if key is not None:
            self.cache.evict(key)
        key = self.backend.put(key, parts)
        self._stats.record(key, "set", time.perf_counter() - start)
        return key

    def set_batch(
        self,
        objs: Sequence[Any],
        *,
        keys: Sequence[str | None] | None = None,
        serialize: bool = True,
    ) -> list[str]:
        """Store each object of ``objs`` and return their keys, in order.

        The backend writes the batch at once where it can (Globus: one transfer task per
        destination for the whole batch).

        Raises:
            ValueError: If ``keys`` is given with a different length than ``objs``.
        """
        if keys is None:
            keys = [None] * len(objs)
        elif len(keys) != len(objs):
            raise ValueError(f"set_batch got {len(objs)} objects but {len(keys)} keys")
        if not objs:
            return []
        start = time.perf_counter() if self._stats is not None else 0.0
        where = type(self).__name__
        items = [
            (key, self.codec.encode(obj, serialize=serialize, where=where))
            for obj, key in zip(objs, keys)
        ]
        for key in keys:
            if key is not None:
                self.cache.evict(key)
        if self._stats is None:
            return self.backend.put_batch(items)
        final = self.backend.put_batch(items)
        elapsed = time.perf_counter() - start
        for key in final:  # each key is charged the whole batch, as for its transfer
            self._stats.record(key, "set", elapsed)
        return final

    # -- reading ------------------------------------------------------------------------------

    def get_bytes_with_timestamp(self, key: str) -> Fetched:
        """Fetch the bytes under ``key`` and their write time from the backend, or ``None``.

        Every read of a store goes through this one call (subclasses may wrap it). Where the
        objects of a process are shared anyway (cached, not copy-on-write), concurrent reads
        of one key share one fetch.
        """
        if not (self._caching and self.codec.cache_buffers):
            return self.backend.get(key)
        fetched, _ = self._inflight.run(key, lambda: self.backend.get(key))
        return fetched

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
            strict: Return the newest version, revalidating any cached copy. Ignored, with a
                warning, for keys whose objects never change (store-made Globus keys).
            default: Returned when the key is missing (see :data:`MISSING`).
        """
        if self._direct:  # by reference: no cache, nothing to revalidate, no bytes to decode
            fetched = self.backend.get(key)
            if fetched is None:
                return default
            value = fetched[0]
            if deserialize and type(value) is not RawBytes:
                return value
            return self.codec.decode(value, deserialize=deserialize)
        if self._stats is None:
            return self._get(key, deserialize, strict, default)
        start = time.perf_counter()
        try:
            return self._get(key, deserialize, strict, default)
        finally:
            self._stats.record(key, "get", time.perf_counter() - start)

    def _get(self, key: str, deserialize: bool, strict: bool, default: Any) -> Any:
        if strict:
            strict = self._strict_applies(key)
        if deserialize and self._caching:
            cached = self._cached(key, strict=strict)
            if cached is _GONE:
                return default
            if cached is not _NOT_CACHED:
                return cached
        return self._decode(key, self.get_bytes_with_timestamp(key), deserialize, default)

    def prefetch(self, key: str, *, strict: bool = False) -> Prefetched | None:
        """Do the I/O part of a ``get`` (run in a background thread by ``resolve_async``).

        Returns:
            What :meth:`complete` finishes: ``None`` when a usable copy is cached (or the
            store keeps objects by reference), else the :class:`Prefetched` bytes.
        """
        if self.codec.by_reference:
            return None
        if strict:
            strict = self._strict_applies(key)
        if self._caching and self._cached(key, strict=strict) is not _NOT_CACHED:
            return None
        return Prefetched(self.get_bytes_with_timestamp(key))

    def complete(
        self,
        key: str,
        token: Prefetched | None,
        *,
        deserialize: bool = True,
        strict: bool = False,
        default: Any = None,
    ) -> Any:
        """Finish a ``get`` started by :meth:`prefetch`; same result as :meth:`get`."""
        if token is None:
            return self.get(key, deserialize=deserialize, strict=strict, default=default)
        return self._decode(key, token.fetched, deserialize, default)

    def _strict_applies(self, key: str) -> bool:
        if not self.backend.is_immutable(key):
            return True
        self._warn_strict(key)
        return False

    def _warn_strict(self, key: str) -> None:
        warnings.warn(
            f"{type(self).__name__} {self.name!r}: objects under store-made keys are immutable "
            f"(each set makes a new key), so strict=True has no effect for key {key!r}. Use a "
            "custom key for objects you overwrite.",
            UserWarning,
            stacklevel=4,
        )

    def _cached(self, key: str, *, strict: bool) -> Any:
        """The cached object, ``_NOT_CACHED``, or ``_GONE`` (strict found the key evicted)."""
        cached = self.cache.get(key)
        if cached is None:
            return _NOT_CACHED
        if not strict:
            return cached[1]
        current = self.backend.timestamp(key)
        if current is None:
            self.cache.evict(key)
            return _GONE
        return cached[1] if current == cached[0] else _NOT_CACHED

    def _decode(self, key: str, fetched: Fetched, deserialize: bool, default: Any) -> Any:
        if fetched is None:
            if self._caching:
                self.cache.evict(key)
            return default
        data, timestamp = fetched
        if deserialize and self._caching:  # a concurrent resolver already rebuilt these bytes
            cached = self.cache.get(key)
            if cached is not None and cached[0] == timestamp:
                return cached[1]
        obj = self.codec.decode(data, deserialize=deserialize)
        if deserialize and self._caching and self.codec.cacheable(data):
            self.cache.set(key, (timestamp, obj))
        return obj

    def get_timestamp(self, key: str) -> float:
        """Return when ``key`` was last written (the time ``strict`` compares).

        Raises:
            KeyError: If the key is missing.
        """
        timestamp = self.backend.timestamp(key)
        if timestamp is None:
            raise KeyError(key)
        return timestamp

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is in the store."""
        return self.backend.exists(key)

    def is_cached(self, key: str, *, strict: bool = False) -> bool:
        """Return whether ``key`` is in this process's cache (and current, with ``strict``).

        A store that keeps objects by reference (``LocalStore``) has every object in memory:
        there it is the same as :meth:`exists`.
        """
        if self.codec.by_reference:
            return self.backend.exists(key)
        cached = self.cache.get(key)
        if cached is None:
            return False
        if not strict or self.backend.is_immutable(key):
            return True
        return self.backend.timestamp(key) == cached[0]

    # -- removing and releasing ---------------------------------------------------------------

    def evict(self, key: str) -> None:
        """Remove ``key`` from the store and from this process's cache (missing: no error)."""
        self.cache.evict(key)
        self.backend.evict(key)

    def clear(self) -> None:
        """Remove every object of this store (and empty this process's cache).

        Only stores whose storage is their own can: ``LocalStore`` (its memory) and
        ``FileStore`` (its directory, which is deleted). Stores on a shared server (Redis,
        Globus) raise :class:`~proxystore.exceptions.StoreError`: evict their keys instead.
        """
        self.cache.clear()
        self.backend.clear()

    def close(self) -> None:
        """Release connections, threads and this process's cache; objects stay.

        Idempotent. The store may be used again afterwards (connections are reopened).
        """
        self.cache.clear()
        self.backend.close()

    def cleanup(self) -> None:
        """End of use in this process: :meth:`clear` (own storage only), then :meth:`close`.

        A ``LocalStore`` loses its objects, a ``FileStore`` its directory; a ``RedisStore`` or
        ``GlobusStore`` keeps its objects (their storage is shared) and only closes.
        """
        if self.backend.owns_storage:
            self.clear()
        self.close()

    # -- proxies ------------------------------------------------------------------------------

    def proxy(
        self,
        obj: Any = None,
        *,
        key: str | None = None,
        serialize: bool = True,
        evict: bool = False,
        strict: bool = False,
        lifetime: LifetimeLike | None = None,
        **kwargs: Any,
    ) -> Proxy:
        """Return a proxy of ``obj`` (stored now) or of the object already under ``key``.

        Args:
            obj: Object to store and proxy. If ``None``, ``key`` must name a stored object.
            key: With ``obj``, the key to store it under; alone, the key to proxy.
            serialize: Serialize ``obj`` when storing it; with ``False`` the proxy also
                resolves to the raw bytes.
            evict: Remove the object from the store once the proxy has resolved.
            strict: Resolve to the newest version of the object under the key (warns and is
                dropped for keys whose objects never change).
            lifetime: A :mod:`~proxystore.store.lifetimes` lifetime: the object is evicted
                when it ends.
            kwargs: Extra arguments for the store's factory class.

        Raises:
            ValueError: If neither ``obj`` nor ``key`` is given, ``key`` alone names no
                object in the store (checked now, not when a worker resolves the proxy), or
                ``lifetime`` is closed or belongs to another store (checked before anything
                is stored).
            TypeError: If ``kwargs`` has an argument the factory class does not take (checked
                before anything is stored).
        """
        if kwargs:  # before anything is stored
            check_factory_kwargs(self.factory_class, self.description, kwargs, type(self).__name__)
        if lifetime is not None:
            lifetime.check_store(self)
        if obj is not None:
            key = self.set(obj, key=key, serialize=serialize)
        elif key is None:
            raise ValueError("Store.proxy() needs an object to store or the key of a stored one")
        elif not self.backend.exists(key):
            raise self._missing([key])
        if lifetime is not None:
            self._attach(lifetime, key, stored=obj is not None)
        return self._proxy_of(key, serialize, evict, strict, kwargs)

    def future(
        self,
        *,
        timeout: float | None = None,
        evict: bool = False,
        lifetime: LifetimeLike | None = None,
    ) -> ProxyFuture[Any]:
        """Return a :class:`~proxystore.store.future.ProxyFuture` of a new key of this store.

        Its ``proxy()`` can be sent before the object exists; ``set_result(obj)`` (in any
        process that has the future) stores it. See :mod:`proxystore.store.future`.

        Args:
            timeout: Most seconds a wait for the result lasts (resolving the proxy,
                ``result()``); ``None``: :data:`~proxystore.store.future.DEFAULT_TIMEOUT`.
            evict: The future's proxies evict the object once resolved.
            lifetime: A :mod:`~proxystore.store.lifetimes` lifetime: the object is evicted
                when it ends (a Redis lease gives its expiry to the key, written later, at its
                next ``extend()`` only).

        Raises:
            TypeError, ValueError: If ``timeout`` is not ``None`` or finite seconds ``>= 0``,
                or ``lifetime`` is closed or belongs to another store.
        """
        future: ProxyFuture[Any] = ProxyFuture(self, self.new_key(), timeout=timeout, evict=evict)
        if lifetime is not None:
            lifetime.check_store(self)
            lifetime.add_key(future.key, store=self)
        return future

    def _attach(self, lifetime: LifetimeLike, key: str, *, stored: bool) -> None:
        """Add ``key`` to ``lifetime``; an object just stored is evicted if that fails."""
        try:
            lifetime.add_key(key, store=self)
        except BaseException:
            if stored:  # the lifetime ended meanwhile: do not leave an object nobody owns
                self.evict(key)
            raise

    def _proxy_of(
        self, key: str, serialize: bool, evict: bool, strict: bool, kwargs: Mapping[str, Any]
    ) -> Proxy:
        """The proxy of ``key``, an object known to be in the store (no round trip)."""
        if strict and self.backend.is_immutable(key):
            self._warn_strict(key)
            strict = False
        factory = self.factory_class(
            key,
            self.description,
            evict=evict,
            strict=strict,
            deserialize=serialize,
            **kwargs,
        )
        return Proxy(factory)

    def _missing(self, keys: Sequence[str]) -> ValueError:
        shown = ", ".join(repr(key) for key in keys[:5])
        more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
        plural = "s" if len(keys) > 1 else ""
        return ValueError(
            f"{type(self).__name__} {self.name!r} has no object under key{plural} "
            f"{shown}{more}: store the object first (store.set(obj, key=...)), or proxy it "
            "with store.proxy(obj)"
        )

    def proxy_batch(
        self,
        objs: Sequence[Any] | None = None,
        *,
        keys: Sequence[str] | None = None,
        serialize: bool = True,
        evict: bool = False,
        strict: bool = False,
        lifetime: LifetimeLike | None = None,
    ) -> list[Proxy]:
        """Return a proxy for each object of ``objs`` and/or each key of ``keys``.

        With both, ``objs[i]`` is stored under ``keys[i]``. With ``lifetime``, every object
        is evicted when the lifetime ends (see :meth:`proxy`).

        Raises:
            ValueError: If neither is given, both are given with different lengths,
                ``keys`` alone has keys that name no object in the store (checked at once, in
                one batch, before any proxy is made), or ``lifetime`` is closed or belongs to
                another store.
        """
        if objs is None and keys is None:
            raise ValueError("Store.proxy_batch() needs objects to store or keys of stored ones")
        if objs is not None and keys is not None and len(objs) != len(keys):
            raise ValueError(f"proxy_batch got {len(objs)} objects but {len(keys)} keys")
        if lifetime is not None:
            lifetime.check_store(self)
        if objs is not None:
            keys = self.set_batch(objs, keys=keys, serialize=serialize)
        else:
            assert keys is not None
            keys = list(keys)
            found = self.backend.exists_batch(keys)
            missing = [key for key, there in zip(keys, found) if not there]
            if missing:
                raise self._missing(missing)
        if lifetime is not None:
            for key in keys:
                self._attach(lifetime, key, stored=objs is not None)
        return [self._proxy_of(key, serialize, evict, strict, {}) for key in keys]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
