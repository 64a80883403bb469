"""RedisStore on a Redis Cluster (cluster=True): routing, striping, TTLs, evict, processes.

A private loopback cluster of 3 masters (the session's ``redis_cluster``) serves these tests;
the failure tests (a killed master, a promoted replica, a resharding) start their own, in
``test_redis_cluster_failures.py``.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import StoreError
from proxystore.proxy import Proxy
from proxystore.store import Store, init_store, unregister_store
from proxystore.store.redis import RedisClusterBackend, RedisStore
from proxystore.store.redis._cluster.slots import key_slot, tag_for_slot
from tests.support.redis_cluster import Cluster

KB, MB = 1000, 1000**2


@pytest.fixture
def cluster_store(redis_cluster: Cluster, store_factory: Any) -> Any:
    """Make cluster stores (cleaned up and unregistered afterwards)."""

    def make(**kwargs: Any) -> RedisStore:
        store = store_factory("redis-cluster", **kwargs)
        assert isinstance(store, RedisStore) and store.cluster
        return store

    return make


def backend_of(store: Store) -> RedisClusterBackend:
    backend = store._redis  # type: ignore[attr-defined]
    assert isinstance(backend, RedisClusterBackend)
    return backend


def on_node(cluster: Cluster, address: str, *args: str) -> str:
    return cluster.node(address).ask(*args).strip()


# -- slots ----------------------------------------------------------------------------------------


def test_key_slots_are_redis_cluster_slots(redis_cluster: Cluster) -> None:
    node = redis_cluster.nodes[0]
    for key in ["a", "user1000", "{user1000}.following", "x{}y", "{}", "é-ключ", "a{b}{c}"]:
        assert key_slot(key) == int(node.ask("CLUSTER", "KEYSLOT", key).strip()), key
    for slot in (0, 1, 5460, 5461, 10922, 16383):
        assert key_slot("{" + tag_for_slot(slot) + "}anything") == slot


# -- construction ---------------------------------------------------------------------------------


def test_init_store_and_url_of_any_node(redis_cluster: Cluster) -> None:
    for node in redis_cluster.nodes:
        name = f"cluster-url-{uuid.uuid4().hex[:8]}"
        store = init_store("redis", name, url=f"redis://{node.address}", cluster=True)
        try:
            assert isinstance(store, RedisStore) and store.cluster
            key = store.set({"via": node.port})
            assert store.get(key) == {"via": node.port}
            assert store.settings.kwargs()["cluster"] is True  # what travels to workers
            assert "cluster=True" in repr(store.settings)
            store.evict(key)
        finally:
            store.cleanup()
            unregister_store(name)


def test_a_server_that_is_not_a_cluster_node_is_named(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with pytest.raises(StoreError, match=rf"{port}.*not a Redis Cluster node.*cluster=True"):
        RedisStore(f"not-cluster-{uuid.uuid4().hex[:6]}", hostname=host, port=port, cluster=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"unix_socket_path": "/tmp/x.sock"}, "not a unix socket"),
        ({"db": 2}, "only database 0"),
        ({"max_connections": 4}, "max_connections"),
        ({"cluster": "yes"}, "cluster must be True or False"),
    ],
)
def test_settings_a_cluster_cannot_use_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        RedisStore("refused", hostname="127.0.0.1", port=1, **{"cluster": True, **kwargs})


# -- round trips and striping -----------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(1 * KB, id="1KB"),
        pytest.param(2**20 + 1, id="1MiB+1"),
        pytest.param(10 * MB, id="10MB"),
        pytest.param(100 * MB, id="100MB"),
        pytest.param(500 * MB, id="500MB", marks=pytest.mark.slow),
    ],
)
def test_round_trips(cluster_store: Any, size: int) -> None:
    store = cluster_store(chunk_size=256 * 2**20, cache_size=0)  # the default stripe plan
    data = np.random.default_rng(size).integers(0, 255, size=size, dtype=np.uint8)
    key = store.set(data)
    got = store.get(key)
    assert got.dtype == data.dtype and got.shape == data.shape
    assert np.array_equal(got, data)
    got.flags.writeable = True  # a writable array on the one result buffer
    chunks = backend_of(store).chunk_keys(key)
    assert (len(chunks) > 0) == (size > 2**20)  # small values stay one key
    store.evict(key)
    assert not store.exists(key)


def test_a_large_value_is_on_every_master_and_each_holds_its_share(
    cluster_store: Any, redis_cluster: Cluster
) -> None:
    store = cluster_store(chunk_size=256 * 2**20, cache_size=0)
    backend = backend_of(store)
    key = store.set(b"\x01" * (30 * MB), serialize=False)
    masters = sorted(node.address for node in redis_cluster.masters())
    chunks = backend.chunk_keys(key)
    holders = {backend.node_of(chunk) for chunk in chunks}
    assert holders == set(masters), "one object's chunks are on every master"
    for chunk in chunks:  # each chunk is where the slot map says, asked of that node itself
        address = backend.node_of(chunk)
        size = int(on_node(redis_cluster, address, "STRLEN", chunk))
        assert 9 * MB < size < 11 * MB, (chunk, size)
    store.evict(key)


def test_a_value_whose_chunk_is_missing_is_missing_never_partial(
    cluster_store: Any, redis_cluster: Cluster
) -> None:
    store = cluster_store(cache_size=0)
    backend = backend_of(store)
    key = store.set(b"z" * 100_000, serialize=False)
    chunks = backend.chunk_keys(key)
    assert len(chunks) >= 3
    victim = chunks[len(chunks) // 2]
    on_node(redis_cluster, backend.node_of(victim), "DEL", victim)
    assert not store.exists(key)
    assert store.get(key, deserialize=False) is None
    store.evict(key)


def test_overwrite_is_a_new_version_and_the_old_chunks_go(cluster_store: Any) -> None:
    store = cluster_store(cache_size=0)
    backend = backend_of(store)
    key = f"over-{uuid.uuid4().hex}"
    store.set(b"1" * 50_000, key=key, serialize=False)
    first = backend.chunk_keys(key)
    store.set(b"2" * 60_000, key=key, serialize=False)
    second = backend.chunk_keys(key)
    assert first and second and not set(first) & set(second)
    assert bytes(store.get(key, deserialize=False)) == b"2" * 60_000
    for chunk in first:
        assert backend.client.command(chunk, "EXISTS", chunk) == 0, "old chunk left behind"
    store.set(b"small", key=key, serialize=False)  # striped -> one key: chunks go too
    for chunk in second:
        assert backend.client.command(chunk, "EXISTS", chunk) == 0
    assert bytes(store.get(key, deserialize=False)) == b"small"
    store.evict(key)


def test_evict_removes_every_chunk(cluster_store: Any) -> None:
    store = cluster_store(cache_size=0)
    backend = backend_of(store)
    key = store.set(b"e" * 40_000, serialize=False)
    chunks = backend.chunk_keys(key)
    assert chunks
    store.evict(key)
    assert backend.client.command(key, "EXISTS", key) == 0
    for chunk in chunks:
        assert backend.client.command(chunk, "EXISTS", chunk) == 0
    store.evict(key)  # idempotent


def test_ttl_is_on_every_chunk_and_the_header(cluster_store: Any) -> None:
    store = cluster_store(cache_size=0, ttl=300)
    backend = backend_of(store)
    key = store.set(b"t" * 40_000, serialize=False)
    chunks = backend.chunk_keys(key)
    assert chunks
    for name in [key, *chunks]:
        left = backend.client.command(name, "PTTL", name)
        assert 0 < left <= 300_000, (name, left)
    store.evict(key)


def test_a_lease_expiry_reaches_every_chunk(cluster_store: Any) -> None:
    store = cluster_store(cache_size=0)
    backend = backend_of(store)
    key = store.set(b"l" * 40_000, serialize=False)
    backend.expire(key, 200)
    for name in [key, *backend.chunk_keys(key)]:
        assert 0 < backend.client.command(name, "PTTL", name) <= 200_000
    store.evict(key)


def test_strict_sees_an_overwrite_by_another_store(cluster_store: Any) -> None:
    writer = cluster_store(cache_size=0)
    reader = cluster_store(cache_size=4)
    key = f"strict-{uuid.uuid4().hex}"
    writer.set(np.arange(10_000), key=key)
    assert reader.get(key)[-1] == 9_999
    writer.set(np.arange(20_000), key=key)
    assert reader.get(key)[-1] == 9_999  # cached
    assert reader.get(key, strict=True)[-1] == 19_999
    writer.evict(key)


def test_signing_and_the_host_tier_on_a_cluster(cluster_store: Any, tmp_path: Any) -> None:
    cache = f"/dev/shm/proxystore-cluster-{uuid.uuid4().hex[:8]}"
    try:
        store = cluster_store(cache_size=0, signing_key=b"k" * 32, host_cache=cache)
        data = np.arange(100_000, dtype=np.float64)
        key = store.set(data)
        assert np.array_equal(store.get(key), data)
        assert np.array_equal(store.get(key), data)  # from the host tier
        store.evict(key)
        assert not store.exists(key)
    finally:
        import shutil

        shutil.rmtree(cache, ignore_errors=True)


CHILD = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    from proxystore.proxy import extract
    proxy = pickle.load(sys.stdin.buffer)
    value = extract(proxy)
    print(int(value.sum()), value.shape[0])
    """
)


def test_a_proxy_resolves_in_another_process(cluster_store: Any) -> None:
    store = cluster_store(chunk_size=256 * 2**20)
    data = np.arange(3_000_000, dtype=np.int64)  # 24 MB: striped over the masters
    proxy: Proxy = store.proxy(data)
    result = subprocess.run(
        [sys.executable, "-c", CHILD], input=pickle.dumps(proxy), capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.split() == [str(int(data.sum())).encode(), b"3000000"]


def test_threads_share_one_store(cluster_store: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = cluster_store(cache_size=0)

    def round_trip(i: int) -> bool:
        value = bytes([i]) * (10_000 + i)
        key = store.set(value, serialize=False)
        ok = bytes(store.get(key, deserialize=False)) == value
        store.evict(key)
        return ok

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trip, range(40)))


def test_scan_lists_values_of_every_master(cluster_store: Any) -> None:
    store = cluster_store(cache_size=0)
    keys = {store.set(i) for i in range(20)} | {store.set(b"s" * 20_000, serialize=False)}
    listed = {info.key for info in backend_of(store).scan()}
    assert keys <= listed
    assert not any(key.endswith(":ps-chunks") for key in listed)
    for key in keys:
        store.evict(key)
