"""``RemoteStore``: the base of stores whose objects live outside the process.

A backend implements five byte-level operations (:meth:`~RemoteStore.get_bytes`,
:meth:`~RemoteStore.set_bytes`, :meth:`~RemoteStore.get_timestamp`,
:meth:`~RemoteStore.exists`, :meth:`~RemoteStore.evict`); this class adds serialization, a
thread-safe LRU cache of deserialized objects, and the ``strict`` semantics:

* a plain ``get`` returns the cached copy when there is one;
* a ``strict`` get compares the cached copy's timestamp with the backend's and fetches the
  object again when they differ, so it always returns the newest version.

Backends may also override :meth:`~RemoteStore.get_bytes_with_timestamp` (one round trip
instead of two) and :meth:`~RemoteStore.set_parts` (write the serialized pieces without joining
them).
"""

from __future__ import annotations

import functools
import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Callable

from proxystore.serialize import Buffer, serialize_parts
from proxystore.serialize import deserialize as deserialize_bytes
from proxystore.store.base import Store
from proxystore.store.cache import LRUCache

__all__ = ["RemoteStore"]

_NOT_CACHED: Any = object()
_GONE: Any = object()


def _evicts_cache(evict: Callable[[Any, str], None]) -> Callable[[Any, str], None]:
    @functools.wraps(evict)
    def wrapper(self: RemoteStore, key: str) -> None:
        self.cache.evict(key)
        evict(self, key)

    wrapper.__evicts_cache__ = True  # type: ignore[attr-defined]
    return wrapper


class RemoteStore(Store):
    """Base class of stores backed by something outside the process (files, Redis, Globus).

    Args:
        name: Name of the store.
        cache_size: Most deserialized objects kept in this process's LRU cache; ``0`` disables
            caching.

    Raises:
        ValueError: If ``cache_size`` is negative.
    """

    def __init__(self, name: str, *, cache_size: int = 16) -> None:
        super().__init__(name)
        self.cache: LRUCache[str, tuple[float, Any]] = LRUCache(cache_size)
        self.cache_size = cache_size

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Whatever a backend's evict() does, the cached copy must go too; wrapping here means
        # a backend cannot forget it.
        evict = cls.__dict__.get("evict")
        if evict is not None and not getattr(evict, "__evicts_cache__", False):
            cls.evict = _evicts_cache(evict)  # type: ignore[method-assign,assignment]

    # -- what a backend implements ------------------------------------------------------------

    @abstractmethod
    def get_bytes(self, key: str) -> Buffer | None:
        """Return the bytes stored under ``key``, or ``None`` if the key is missing."""

    @abstractmethod
    def set_bytes(self, key: str, data: Buffer) -> None:
        """Store ``data`` under ``key`` (replacing any previous value atomically)."""

    @abstractmethod
    def get_timestamp(self, key: str) -> float:
        """Return when ``key`` was last written, as a float.

        Raises:
            KeyError: If the key is missing.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Return whether ``key`` is in the backend."""

    @abstractmethod
    def evict(self, key: str) -> None:
        """Remove ``key`` from the backend (a missing key is not an error)."""

    # -- optional backend hooks ---------------------------------------------------------------

    def get_bytes_with_timestamp(self, key: str) -> tuple[Buffer, float] | None:
        """Return the bytes under ``key`` and their timestamp, or ``None`` if it is missing.

        The timestamp must not be newer than the bytes; the default reads it first, then the
        bytes. Backends that can do both in one operation should override this.
        """
        try:
            timestamp = self.get_timestamp(key)
        except KeyError:
            return None
        data = self.get_bytes(key)
        if data is None:
            return None
        return data, timestamp

    def set_parts(self, key: str, parts: Sequence[Buffer]) -> None:
        """Store the concatenation of ``parts`` under ``key``.

        The default joins them and calls :meth:`set_bytes`; backends that can write a list of
        buffers (``os.writev``, pipelines) override this to skip the joined copy.
        """
        self.set_bytes(key, b"".join(parts))

    def decode(self, data: Buffer) -> Any:
        """Rebuild an object from the bytes a backend returned (override to tune)."""
        return deserialize_bytes(data)

    def cacheable(self, data: Buffer) -> bool:
        """Whether the object rebuilt from ``data`` may be cached and shared (default: yes)."""
        return True

    def parts_of(self, obj: Any, *, serialize: bool) -> Sequence[Buffer]:
        """Return the buffers that ``set`` writes for ``obj``.

        Raises:
            TypeError: If ``serialize`` is off and ``obj`` is not bytes-like.
        """
        if serialize:
            return serialize_parts(obj)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return [obj]
        raise TypeError(
            f"{type(self).__name__}.set(serialize=False) needs bytes, got "
            f"{type(obj).__name__}; pass serialize=True to serialize it"
        )

    # -- the Store contract, given ------------------------------------------------------------

    def set(self, obj: Any, *, key: str | None = None, serialize: bool = True) -> str:
        """Serialize ``obj`` and store it; return its key (see :meth:`Store.set`)."""
        if key is None:
            key = self.new_key()
        parts = self.parts_of(obj, serialize=serialize)
        self.cache.evict(key)
        start = time.perf_counter() if self._stats is not None else 0.0
        if len(parts) == 1:
            self.set_bytes(key, parts[0])
        else:
            self.set_parts(key, parts)
        if self._stats is not None:
            self._stats.record(key, "transfer", time.perf_counter() - start)
        return key

    def get(
        self,
        key: str,
        *,
        deserialize: bool = True,
        strict: bool = False,
        default: Any = None,
    ) -> Any:
        """Return the object under ``key``, from the cache when allowed (see :meth:`Store.get`)."""
        if deserialize:
            cached = self._cached(key, strict=strict)
            if cached is _GONE:
                return default
            if cached is not _NOT_CACHED:
                return cached
        return self._decode(key, self._fetch(key), deserialize, default)

    def prefetch(self, key: str, *, strict: bool = False) -> Any:
        """Fetch the bytes of ``key`` unless a usable copy is cached (the background half)."""
        if self._cached(key, strict=strict) is not _NOT_CACHED:
            return None
        return (self._fetch(key),)

    def _fetch(self, key: str) -> tuple[Buffer, float] | None:
        if self._stats is None:
            return self.get_bytes_with_timestamp(key)
        start = time.perf_counter()
        fetched = self.get_bytes_with_timestamp(key)
        self._stats.record(key, "transfer", time.perf_counter() - start)
        return fetched

    def complete(
        self,
        key: str,
        token: Any,
        *,
        deserialize: bool = True,
        strict: bool = False,
        default: Any = None,
    ) -> Any:
        """Deserialize (and cache) what :meth:`prefetch` fetched (the foreground half)."""
        if token is None:
            return self.get(key, deserialize=deserialize, strict=strict, default=default)
        return self._decode(key, token[0], deserialize, default)

    def _cached(self, key: str, *, strict: bool) -> Any:
        """The cached object, ``_NOT_CACHED``, or ``_GONE`` (strict found the key evicted)."""
        cached = self.cache.get(key)
        if cached is None:
            return _NOT_CACHED
        if not strict:
            return cached[1]
        try:
            current = self.get_timestamp(key)
        except KeyError:
            self.cache.evict(key)
            return _GONE
        return cached[1] if current == cached[0] else _NOT_CACHED

    def _decode(
        self,
        key: str,
        fetched: tuple[Buffer, float] | None,
        deserialize: bool,
        default: Any,
    ) -> Any:
        if fetched is None:
            self.cache.evict(key)
            return default
        data, timestamp = fetched
        if not deserialize:
            return data if isinstance(data, bytes) else bytes(data)
        obj = self.decode(data)
        if self.cacheable(data):
            self.cache.set(key, (timestamp, obj))
        return obj

    def is_cached(self, key: str, *, strict: bool = False) -> bool:
        """Return whether ``key`` is cached here (and, with ``strict``, still the newest)."""
        cached = self.cache.get(key)
        if cached is None:
            return False
        if not strict:
            return True
        try:
            return self.get_timestamp(key) == cached[0]
        except KeyError:
            return False

    def factory_kwargs(self) -> dict[str, Any]:
        """Return the constructor arguments that re-create this store (with its cache size)."""
        return {"cache_size": self.cache_size}
