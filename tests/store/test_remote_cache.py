"""Caching and strict revalidation of remote stores (File and Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from proxystore.store.backends import BackendBase, Fetched, Parts
from proxystore.store.base import Store
from proxystore.store.layers import innermost


@pytest.fixture(params=["file", "redis"])
def remote_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _behind_the_back(store: Store) -> Store:
    """A second store object on the same backend, with its own (disabled) cache."""
    return Store(f"{store.name}-other", innermost(store.backend), cache_size=0, codec=store.codec)


def test_cache_size_zero_never_caches(remote_kind: str, store_factory: Any) -> None:
    store = store_factory(remote_kind, cache_size=0)
    key = store.set([1])
    assert store.get(key) == [1]
    assert not store.is_cached(key)
    _behind_the_back(store).set([2], key=key)
    assert store.get(key) == [2]  # no cache: always the backend's value


def test_cache_size_one_keeps_last_only(remote_kind: str, store_factory: Any) -> None:
    store = store_factory(remote_kind, cache_size=1)
    a, b = store.set("a"), store.set("b")
    store.get(a)
    assert store.is_cached(a)
    store.get(b)
    assert store.is_cached(b) and not store.is_cached(a)


def test_non_strict_get_may_return_cached_old_version(remote_kind: str, store_factory: Any) -> None:
    store = store_factory(remote_kind, cache_size=4)
    key = store.set("old")
    assert store.get(key) == "old"
    _behind_the_back(store).set("new", key=key)
    assert store.get(key) == "old"  # the documented non-strict behaviour
    assert store.is_cached(key)
    assert not store.is_cached(key, strict=True)
    assert store.get(key, strict=True) == "new"
    assert store.is_cached(key, strict=True)
    assert store.get(key) == "new"


def test_strict_get_after_backend_eviction(remote_kind: str, store_factory: Any) -> None:
    store = store_factory(remote_kind)
    key = store.set("x")
    store.get(key)
    _behind_the_back(store).evict(key)
    assert store.get(key, strict=True, default="gone") == "gone"


def test_evict_drops_cached_copy(remote_kind: str, store_factory: Any) -> None:
    store = store_factory(remote_kind)
    key = store.set("x")
    store.get(key)
    assert store.is_cached(key)
    store.evict(key)
    assert not store.is_cached(key)
    assert store.get(key) is None


def test_negative_cache_size_rejected(remote_kind: str, store_factory: Any) -> None:
    with pytest.raises(ValueError, match=r"cache.size"):
        store_factory(remote_kind, cache_size=-1)


def test_custom_backend_inherits_cache_and_strict() -> None:
    """A new backend implements five byte-level methods; the Store gives cache and strict."""
    import time

    class DictBackend(BackendBase):
        def __init__(self) -> None:
            super().__init__()
            self.data: dict[str, tuple[bytes, float]] = {}
            self.reads = 0

        def put(self, key: str | None, parts: Parts) -> str:
            key = key or Store.new_key()
            self.data[key] = (b"".join(parts), time.time_ns() / 1e9)
            return key

        def get(self, key: str) -> Fetched:
            self.reads += 1
            return self.data.get(key)

        def timestamp(self, key: str) -> float | None:
            entry = self.data.get(key)
            return None if entry is None else entry[1]

        def exists(self, key: str) -> bool:
            return key in self.data

        def evict(self, key: str) -> None:
            self.data.pop(key, None)

    backend = DictBackend()
    store = Store("dict", backend)
    key = store.set({"a": 1})
    assert store.get(key) == {"a": 1}
    assert store.get(key) == {"a": 1}
    assert backend.reads == 1  # second get served from cache
    assert store.is_cached(key, strict=True)
    backend.put(key, [b"\x02new"])  # behind the cache: raw bytes in serialize() format
    assert store.get(key) == {"a": 1}  # plain get: cached copy
    assert store.get(key, strict=True) == "new"  # strict: newer write time, fetched again
    store.evict(key)  # the Store evicts the cached copy too
    assert not store.is_cached(key)
    assert store.get(key) is None
