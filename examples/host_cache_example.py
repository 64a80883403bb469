"""The host tier: each object crosses the network once per host, then every process maps it.

A ProxyExecutor over 4 worker processes runs 8 tasks on the same 40 MB array stored in Redis.
Without the host tier every worker process fetches the array from Redis; with
``host_cache=`` the first process on the host fetches it into ``/dev/shm`` and the others map
it (copy-on-write). The script reads the server's own count of bytes sent to compare.

    REDIS_HOST=127.0.0.1 REDIS_PORT=6379 python examples/host_cache_example.py

REDIS_HOST and REDIS_PORT default to 127.0.0.1 and 6379. It never flushes a database and
evicts every key it writes.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import redis

from proxystore.integrations.futures import ProxyExecutor
from proxystore.store import init_store, unregister_store


def column_sum(array: np.ndarray, column: int) -> float:
    """A task: write into the array (private copy-on-write pages), then read a column."""
    array[0, column] = 0.0  # other tasks never see this
    return float(array[1:, column].sum())


def sent_by_server(host: str, port: int) -> int:
    client = redis.Redis(host=host, port=port)
    try:
        return int(client.info("stats")["total_net_output_bytes"])
    finally:
        client.close()


def run(host: str, port: int, **options: Any) -> tuple[list[float], int]:
    name = f"host-cache-example-{os.getpid()}"
    store = init_store("redis", name, hostname=host, port=port, **options)
    array = np.random.default_rng(0).random((5_000, 1_000))  # 40 MB
    try:
        before = sent_by_server(host, port)
        pool = ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn"))
        with ProxyExecutor(pool, store=store, threshold=1_000_000) as executor:
            results = list(executor.map(column_sum, [array] * 8, range(8)))
        expected = [float(array[1:, c].sum()) for c in range(8)]
        assert np.allclose(results, expected), "the tasks computed the plain results"
        return results, sent_by_server(host, port) - before
    finally:
        store.close()
        unregister_store(name)


def main() -> None:
    host = os.environ.get("REDIS_HOST", "127.0.0.1")
    port = int(os.environ.get("REDIS_PORT", "6379"))
    cache = tempfile.mkdtemp(prefix="proxystore-host-cache-", dir="/dev/shm")
    try:
        _, without = run(host, port)
        _, with_tier = run(host, port, host_cache=cache, host_cache_bytes=200_000_000)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    size = 5_000 * 1_000 * 8
    print(
        f"without the host tier: Redis sent {without / 1e6:.0f} MB for a {size / 1e6:.0f} MB array"
    )
    print(f"with host_cache=:      Redis sent {with_tier / 1e6:.0f} MB (one copy for this host)")
    # Without the tier, each worker process that ran a task fetched the array (how many ran
    # one depends on scheduling); with it, the host fetched it once.
    assert size <= without and size <= with_tier < 1.2 * size, (without, with_tier)


if __name__ == "__main__":
    main()
