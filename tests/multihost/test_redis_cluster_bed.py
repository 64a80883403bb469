"""RedisStore on a Redis Cluster across hosts: shards on hosts a, b and c, resolvers on d and e.

The bed's cluster mode (``TestBed.start_redis_cluster``) starts one master on each of hosts a,
b and c; the store stripes an object over the three, and each worker host, with the host
tier, receives about one copy of it, a third from each shard's link.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from proxystore.exceptions import StoreConnectionError, StoreTimeoutError
from proxystore.store import init_store, unregister_store
from proxystore.store.redis import RedisStore
from tests.multihost.fanout import fan_out
from tests.multihost.testbed import TestBed

pytestmark = pytest.mark.timeout(180)

MB = 2**20


@pytest.fixture(scope="module")
def cluster_node(testbed: TestBed) -> tuple[str, int]:
    """A node of the bed's Redis Cluster (started once, on hosts a, b and c)."""
    if not testbed.cluster_nodes:
        testbed.start_redis_cluster(("a", "b", "c"))
    return testbed.cluster_nodes[0]


@pytest.fixture
def cluster_store(cluster_node: tuple[str, int]) -> Iterator[RedisStore]:
    host, port = cluster_node
    name = f"mh-cluster-{uuid.uuid4().hex[:8]}"
    store = init_store(
        "redis",
        name,
        hostname=host,
        port=port,
        cluster=True,
        cache_size=0,
        socket_timeout=3,
        host_cache="/dev/shm/proxystore-mh-cluster",
    )
    assert isinstance(store, RedisStore)
    try:
        yield store
    finally:
        store.cleanup()
        unregister_store(name)


def test_the_cluster_has_a_master_on_each_shard_host(
    testbed: TestBed, cluster_store: RedisStore
) -> None:
    masters = cluster_store._redis.client.masters()  # type: ignore[union-attr]
    expected = {f"{testbed[name].address}:{testbed.cluster_nodes[0][1]}" for name in "abc"}
    assert set(masters) == expected


def test_one_object_to_two_hosts_comes_from_every_shard(
    testbed: TestBed, cluster_store: RedisStore
) -> None:
    size = 30 * MB
    array = np.random.default_rng(3).random(size // 8)
    warm, proxy = cluster_store.proxy(np.ones(2**19)), cluster_store.proxy(array)
    outcome = fan_out(testbed, ["d", "e"], warm, proxy)
    assert all(abs(total - float(array.sum())) < 1e-6 * size for total in outcome.sums.values())
    seen = outcome.traffic
    for worker in ("d", "e"):  # about one copy into each worker host (the host tier)
        assert 0.95 * size <= seen.rx[worker] <= 1.2 * size, (worker, seen.rx)
    for shard in ("a", "b", "c"):  # each shard's link carries a third of each copy
        assert 0.6 * size <= seen.tx[shard] <= 0.8 * size, (shard, seen.tx)


def test_a_shard_whose_link_is_cut_is_an_error_naming_it_and_the_key(
    testbed: TestBed, cluster_store: RedisStore
) -> None:
    key = cluster_store.set(np.arange(1_000_000))  # striped: a chunk on host b's shard
    shard = f"{testbed['b'].address}:{testbed.cluster_nodes[0][1]}"
    testbed["b"].link_down()
    start = time.monotonic()
    try:
        with pytest.raises((StoreTimeoutError, StoreConnectionError)) as info:
            cluster_store.get(key)
        waited = time.monotonic() - start
    finally:
        testbed["b"].link_up()
    assert shard in str(info.value) and repr(key) in str(info.value)
    assert waited < 3 + 5  # the socket timeout bounds it (with a margin for a loaded machine)
    deadline = time.monotonic() + 60  # the link is back: the store works again (bounded)
    while True:
        try:
            assert np.array_equal(cluster_store.get(key), np.arange(1_000_000))
            break
        except (StoreTimeoutError, StoreConnectionError):
            assert time.monotonic() < deadline
            time.sleep(0.5)
    cluster_store.evict(key)
