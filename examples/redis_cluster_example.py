"""RedisStore on a Redis Cluster: one node's address, large values striped over every master.

Needs a running Redis Cluster; it never flushes anything and deletes every key it writes.

    REDIS_CLUSTER=127.0.0.1:7000 python examples/redis_cluster_example.py

REDIS_CLUSTER names any node of the cluster (default 127.0.0.1:7000, the port of Redis'
own cluster tutorial).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np

import proxystore as ps
from proxystore.store.redis import RedisClusterBackend

CHILD = """
import pickle, sys
proxy = pickle.load(sys.stdin.buffer)
print(float(proxy.sum()))
"""


def main() -> None:
    address = os.environ.get("REDIS_CLUSTER", "127.0.0.1:7000")
    host, _, port = address.rpartition(":")
    store = ps.store.init_store(
        ps.store.STORES.REDIS,
        "cluster-example",
        hostname=host,
        port=int(port),
        cluster=True,  # learn the slot map from this node; use every master
        cache_size=0,
    )
    written: list[str] = []
    try:
        # A small value is one key, on the master of its slot.
        key = store.set({"answer": 42})
        written.append(key)
        assert store.get(key) == {"answer": 42}

        # A large value is striped: its chunks are keys on every master, written and read in
        # parallel (one connection per master).
        data = np.random.default_rng(0).random(4_000_000)  # 32 MB
        big = store.set(data)
        written.append(big)
        assert np.array_equal(store.get(big), data)
        backend = store.backend
        while not isinstance(backend, RedisClusterBackend):
            backend = backend.inner  # under the layers (none here)
        masters = backend.client.masters()
        holders = backend.nodes_of(big)
        print(f"{data.nbytes} bytes striped over {len(holders)} of {len(masters)} masters")
        assert set(holders) == set(masters)

        # A proxy resolves anywhere the cluster is reachable: the store travels with it.
        proxy = store.proxy(data)
        written.append(ps.proxy.get_key(proxy) or "")
        result = subprocess.run(
            [sys.executable, "-c", CHILD],
            input=pickle.dumps(proxy),
            capture_output=True,
            check=True,
            timeout=120,
        )
        assert abs(float(result.stdout) - float(data.sum())) < 1e-6
        print(f"resolved in another process: sum {float(result.stdout):.3f}")

        # Evict removes the header, then every chunk.
        store.evict(big)
        assert not store.exists(big)
        print("evicted: every chunk is gone")
    finally:
        for key in written:
            store.evict(key)
        store.close()
        ps.store.unregister_store("cluster-example")


if __name__ == "__main__":
    main()
