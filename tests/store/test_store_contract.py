"""The behaviour every store must have: one suite, run over every store kind.

The kinds are the four built-in stores (see ``tests/conftest.py``) and ``dict``: a plain
:class:`~proxystore.store.base.Store` over :class:`DictBackend`, a backend written here against
the byte-level protocol and nothing else. A new backend joins the suite the same way.
"""

from __future__ import annotations

import itertools
import pickle
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import ProxyResolveMissingKey
from proxystore.proxy import Proxy, extract, get_key, is_resolved
from proxystore.store import Store, get_store, register_store, unregister_store
from proxystore.store.backends import BackendBase, Fetched, Parts
from proxystore.store.base import MISSING
from proxystore.store.layers import innermost
from tests.conftest import STORE_KINDS


class DictBackend(BackendBase):
    """A whole backend: serialized objects in a dict, with a write counter for timestamps."""

    owns_storage = True

    def __init__(self) -> None:
        super().__init__(store_type="Store")
        self.data: dict[str, tuple[bytes, float]] = {}
        self.lock = threading.Lock()
        self.clock = itertools.count(1)

    def put(self, key: str | None, parts: Parts) -> str:
        key = key if key is not None else uuid.uuid4().hex
        value = b"".join(parts)
        with self.lock:
            self.data[key] = (value, float(next(self.clock)))
        return key

    def get(self, key: str) -> Fetched:
        with self.lock:
            return self.data.get(key)

    def timestamp(self, key: str) -> float | None:
        with self.lock:
            entry = self.data.get(key)
        return None if entry is None else entry[1]

    def exists(self, key: str) -> bool:
        with self.lock:
            return key in self.data

    def evict(self, key: str) -> None:
        with self.lock:
            self.data.pop(key, None)

    def clear(self) -> None:
        with self.lock:
            self.data.clear()


@pytest.fixture(params=[*STORE_KINDS, "redis-cluster", "dict"])
def store(request: pytest.FixtureRequest, store_factory: Any) -> Iterator[Store]:
    """Every built-in store kind, and a plain Store over the DictBackend above."""
    if request.param != "dict":
        yield store_factory(request.param)
        return
    made = Store(f"test-dict-{uuid.uuid4().hex[:8]}", DictBackend())
    register_store(made)
    try:
        yield made
    finally:
        made.cleanup()
        unregister_store(made.name)


def twin(store: Store) -> Store:
    """A second, unregistered store object on the same backend, without a cache: another
    process writing behind ``store``'s cache."""
    return Store(f"{store.name}-twin", innermost(store.backend), cache_size=0, codec=store.codec)


def _key() -> str:
    return f"custom-{uuid.uuid4().hex}"


def square(x: int) -> int:
    return x * x


@pytest.mark.parametrize(
    "obj",
    [b"raw bytes \x00\xff", "text é ✓", {"a": [1, 2.5, None], "b": ("x", b"y")}, 12345, None],
    ids=["bytes", "str", "dict", "int", "none"],
)
def test_set_get_roundtrip(store: Store, obj: Any) -> None:
    key = store.set(obj)
    assert store.exists(key)
    got = store.get(key, default=MISSING)
    assert got == obj
    assert type(got) is type(obj)


def test_numpy_roundtrip_keeps_dtype_shape_and_is_writable(store: Store) -> None:
    arrays = [
        np.arange(1000, dtype=np.float64).reshape(10, 100),
        np.asfortranarray(np.random.default_rng(0).random((30, 7))),
        np.arange(100, dtype=np.int16)[::3],
        np.array(["a", "bc"]),
    ]
    for array in arrays:
        got = store.get(store.set(array))
        assert isinstance(got, np.ndarray)
        assert got.dtype == array.dtype and got.shape == array.shape
        assert np.array_equal(got, array)
        if array.flags.forc:  # contiguous layouts survive; strided views come back compact
            assert got.flags.f_contiguous == array.flags.f_contiguous
            assert got.flags.c_contiguous == array.flags.c_contiguous
        got.flat[0] = got.flat[-1]  # must not raise: arrays come back writable


def test_callables_roundtrip(store: Store) -> None:
    offset = 7
    assert store.get(store.set(lambda x: x + offset))(1) == 8
    assert store.get(store.set(square))(4) == 16


def test_custom_key_and_overwrite(store: Store) -> None:
    key = _key()
    assert store.set("first", key=key) == key
    assert store.get(key) == "first"
    store.set("second", key=key)
    assert store.get(key) == "second"
    store.evict(key)


def test_missing_key_returns_default(store: Store) -> None:
    key = _key()
    assert store.get(key) is None
    assert store.get(key, default="fallback") == "fallback"
    assert not store.exists(key)


def test_keys_are_unguessable(store: Store) -> None:
    keys = {store.set(i) for i in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key) >= 32
        int(key, 16)  # 128 random bits as hex
        store.evict(key)


def test_exists_and_evict(store: Store) -> None:
    key = store.set([1, 2, 3])
    assert store.exists(key)
    assert store.get(key) == [1, 2, 3]
    store.evict(key)
    assert not store.exists(key)
    assert store.get(key) is None
    store.evict(key)  # evicting a missing key is fine


def test_raw_bytes_without_serialization(store: Store) -> None:
    key = store.set(b"\x00raw", serialize=False)
    assert store.get(key, deserialize=False) == b"\x00raw"
    with pytest.raises(TypeError):
        store.set({"not": "bytes"}, serialize=False)


def test_serialized_bytes_readable_raw(store: Store) -> None:
    from proxystore.serialize import deserialize

    key = store.set({"x": 1})
    raw = store.get(key, deserialize=False)
    assert isinstance(raw, bytes)
    assert deserialize(raw) == {"x": 1}


def test_batch_calls(store: Store) -> None:
    objs = [1, "two", [3]]
    keys = store.set_batch(objs)
    assert [store.get(k) for k in keys] == objs
    custom = [_key(), _key(), _key()]
    assert store.set_batch(objs, keys=custom) == custom
    proxies = store.proxy_batch(objs)
    assert [extract(p) for p in proxies] == objs
    proxies = store.proxy_batch(keys=custom)
    assert [extract(p) for p in proxies] == objs
    with pytest.raises(ValueError, match="3 objects but 2 keys"):
        store.set_batch(objs, keys=custom[:2])
    with pytest.raises(ValueError):
        store.proxy_batch(objs, keys=custom[:2])
    with pytest.raises(ValueError):
        store.proxy_batch()
    for key in custom:
        store.evict(key)


def test_proxy_of_object(store: Store) -> None:
    array = np.arange(10)
    p = store.proxy(array)
    assert isinstance(p, Proxy)
    assert not is_resolved(p)
    key = get_key(p)
    assert key is not None and store.exists(key)
    assert get_store(p) is store
    assert np.array_equal(p, array)
    assert is_resolved(p)
    assert isinstance(p, np.ndarray)


def test_proxy_of_key(store: Store) -> None:
    key = store.set({"k": "v"})
    p = store.proxy(key=key)
    assert get_key(p) == key
    assert p["k"] == "v"
    with pytest.raises(ValueError):
        store.proxy()


def test_proxy_with_custom_key(store: Store) -> None:
    key = _key()
    p = store.proxy("value", key=key)
    assert get_key(p) == key
    assert p == "value"
    store.evict(key)


def test_proxy_evict_removes_after_resolve(store: Store) -> None:
    p = store.proxy([1, 2], evict=True)
    key = get_key(p)
    assert key is not None and store.exists(key)
    assert p == [1, 2]
    assert not store.exists(key)


def test_proxy_of_a_key_that_does_not_exist_fails_at_once(store: Store) -> None:
    key = _key()
    with pytest.raises(ValueError) as info:
        store.proxy(key=key)
    assert key in str(info.value) and repr(store.name) in str(info.value)
    assert not store.exists(key)


def test_proxy_batch_of_keys_names_the_missing_ones(store: Store) -> None:
    there = store.set("here")
    gone = [_key(), _key()]
    with pytest.raises(ValueError) as info:
        store.proxy_batch(keys=[there, gone[0], gone[1]])
    message = str(info.value)
    assert gone[0] in message and gone[1] in message and there not in message
    assert store.name in message
    assert [extract(p) for p in store.proxy_batch(keys=[there, there])] == ["here", "here"]
    store.evict(there)


def test_a_proxy_whose_object_went_away_names_key_and_store(store: Store) -> None:
    key = _key()
    store.set("soon gone", key=key)
    p = store.proxy(key=key)
    store.evict(key)
    with pytest.raises(ProxyResolveMissingKey) as info:
        extract(p)
    assert info.value.key == key
    assert info.value.store_name == store.name
    assert info.value.store_type == type(store).__name__
    assert key in str(info.value) and store.name in str(info.value)
    assert isinstance(info.value, KeyError)


def test_pickled_proxy_resolves_unresolved(store: Store) -> None:
    p = store.proxy({"a": 1})
    assert p["a"] == 1
    q = pickle.loads(pickle.dumps(p))
    assert not is_resolved(q)
    assert q == {"a": 1}


def test_proxy_serialize_false_resolves_raw_bytes(store: Store) -> None:
    p = store.proxy(b"abc", serialize=False)
    assert p == b"abc"


def test_strict_after_overwrite(store: Store) -> None:
    key = _key()
    store.set("v1", key=key)
    assert store.get(key) == "v1"  # now cached where the store caches
    # Overwrite behind the cache's back: another process or store object writing the key.
    twin(store).set("v2", key=key)
    assert store.get(key, strict=True) == "v2"
    assert store.is_cached(key, strict=True)  # the strict get cached the new version
    twin(store).set("v2b", key=key)
    if store.codec.by_reference:  # no cache: a LocalStore always returns the newest object
        assert store.get(key) == "v2b"
    else:  # a plain get may answer from the cache; strict never does
        assert not store.is_cached(key, strict=True)
        assert store.get(key) == "v2"
        assert store.get(key, strict=True) == "v2b"
    store.set("v3", key=key)
    assert store.proxy(key=key, strict=True) == "v3"
    store.evict(key)


def test_resolve_async_then_use(store: Store) -> None:
    from proxystore.proxy import resolve_async

    p = store.proxy(np.ones(1000))
    resolve_async(p)
    assert float(np.sum(p)) == 1000.0
    resolve_async(p)  # already resolved: no-op
    assert is_resolved(p)


def test_close_keeps_objects_and_the_store_stays_usable(store: Store) -> None:
    key = store.set([1, 2])
    assert store.get(key) == [1, 2]
    store.close()
    store.close()  # idempotent
    assert not store.cache.cached_keys()  # this process's cache is released
    assert store.exists(key) and store.get(key) == [1, 2]  # objects stay; reconnects
    assert store.get(store.set("after")) == "after"
    store.evict(key)


def test_cleanup_clears_own_storage_only(store: Store) -> None:
    key = store.set("x")
    store.cleanup()
    if store.backend.owns_storage:  # LocalStore, FileStore, the dict backend: emptied
        assert not store.exists(key)
    else:  # Redis, Globus: shared storage keeps its objects; only connections closed
        assert store.exists(key) and store.get(key) == "x"
        store.evict(key)
    store.cleanup()  # idempotent
    assert store.get(store.set("again")) == "again"


def test_clear_removes_every_object_or_refuses(store: Store) -> None:
    from proxystore.exceptions import StoreError

    keys = [store.set(i) for i in range(3)]
    if store.backend.owns_storage:
        store.clear()
        assert not any(store.exists(key) for key in keys)
    else:
        with pytest.raises(StoreError, match="evict"):
            store.clear()
        assert all(store.exists(key) for key in keys)
        for key in keys:
            store.evict(key)


def test_a_layer_wraps_every_backend(store: Store) -> None:
    """A layer over any store's backend sees the bytes of every write and read."""
    from proxystore.store.layers import Layer

    class Counting(Layer):
        def __init__(self, inner: Any) -> None:
            super().__init__(inner)
            self.puts: list[str] = []
            self.gets: list[str] = []

        def put(self, key: str | None, parts: Parts) -> str:
            key = self.inner.put(key, parts)
            self.puts.append(key)
            return key

        def get(self, key: str) -> Fetched:
            self.gets.append(key)
            return self.inner.get(key)

    layer = Counting(store.backend)
    store.backend = layer
    key = store.set({"layered": True})
    assert layer.puts == [key]
    assert store.get(key) == {"layered": True}  # not cached yet: read through the layer
    assert layer.gets == [key]
    assert twin(store).get(key) == {"layered": True}  # the layer changed nothing on the bytes
    assert layer.owns_storage == innermost(layer).owns_storage
    store.evict(key)
    assert not store.exists(key)


class CountingBackend(DictBackend):
    """The DictBackend, counting the existence checks (each one a round trip elsewhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.checks: list[str] = []

    def exists(self, key: str) -> bool:
        self.checks.append("exists")
        return super().exists(key)

    def exists_batch(self, keys: Sequence[str]) -> list[bool]:
        self.checks.append("exists_batch")
        with self.lock:
            return [key in self.data for key in keys]


def test_proxies_of_objects_just_written_check_nothing() -> None:
    backend = CountingBackend()
    store = Store(f"test-count-{uuid.uuid4().hex[:8]}", backend)
    register_store(store)
    try:
        _count_checks(store, backend)
    finally:
        unregister_store(store.name)


def _count_checks(store: Store, backend: CountingBackend) -> None:
    store.proxy("obj")
    store.proxy("obj", key=_key())
    store.proxy_batch(["a", "b", "c"])
    store.proxy_batch(["a", "b"], keys=[_key(), _key()])
    assert backend.checks == []
    keys = store.set_batch([1, 2, 3])
    assert [extract(p) for p in store.proxy_batch(keys=keys)] == [1, 2, 3]
    assert backend.checks == ["exists_batch"]  # one batched check for the whole batch
    store.proxy(key=keys[0])
    assert backend.checks == ["exists_batch", "exists"]
