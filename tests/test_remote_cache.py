"""Caching and strict revalidation of remote stores (File and Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from proxystore.store.remote import RemoteStore


@pytest.fixture(params=["file", "redis"])
def remote_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _behind_the_back(store: RemoteStore) -> RemoteStore:
    """A second store object on the same backend, with its own (disabled) cache."""
    from proxystore.store.cache import LRUCache

    other = type(store).__new__(type(store))
    other.__dict__.update(store.__dict__)
    other.cache = LRUCache(0)
    return other


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
    with pytest.raises(ValueError, match="cache size"):
        store_factory(remote_kind, cache_size=-1)


def test_custom_backend_inherits_cache_and_strict() -> None:
    """A new backend implements five byte-level methods and gets the rest."""
    import time

    class DictStore(RemoteStore):
        def __init__(self, name: str, cache_size: int = 16) -> None:
            super().__init__(name, cache_size=cache_size)
            self.data: dict[str, tuple[bytes, float]] = {}
            self.reads = 0

        def get_bytes(self, key: str) -> bytes | None:
            self.reads += 1
            entry = self.data.get(key)
            return None if entry is None else entry[0]

        def set_bytes(self, key: str, data: Any) -> None:
            self.data[key] = (bytes(data), time.time_ns() / 1e9)

        def get_timestamp(self, key: str) -> float:
            return self.data[key][1]

        def exists(self, key: str) -> bool:
            return key in self.data

        def evict(self, key: str) -> None:
            self.data.pop(key, None)

    store = DictStore("dict")
    key = store.set({"a": 1})
    assert store.get(key) == {"a": 1}
    assert store.get(key) == {"a": 1}
    assert store.reads == 1  # second get served from cache
    store.evict(key)  # the base wraps evict so the cached copy goes too
    assert store.get(key) is None
