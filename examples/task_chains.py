"""Task-to-task data: chains and fan-outs whose large results never leak.

Each of 8 chains ``consume(produce(i))`` passes a large numpy result from one task to the
next. With ``ProxyPolicy(proxy_results=True)`` the producer's result is written once to a
FileStore and the consumer maps it from there; the future is passed straight on
(``ex.submit(consume, ex.submit(produce, i))``): the client never waits and never touches
the array. Once the caller drops the futures, every result has been evicted: the example
checks that the store holds no object at the end.

    python examples/task_chains.py [--size-mb 50] [--chains 8]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from proxystore.integrations.futures import ProxyExecutor
from proxystore.integrations.policy import ProxyPolicy
from proxystore.store import STORES, init_store


def produce(n: int, seed: int) -> np.ndarray:
    """A stand-in simulation: a large array."""
    return np.full(n, float(seed))


def consume(data: np.ndarray) -> float:
    """A stand-in analysis: reads the whole array."""
    return float(data.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--chains", type=int, default=8)
    args = parser.parse_args()
    n = args.size_mb * 2**20 // 8

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="proxystore-chains-", dir=base) as store_dir:
        store = init_store(STORES.FILE, name="chains-example", store_dir=store_dir)
        policy = ProxyPolicy(threshold=1_000_000, proxy_results=True)
        with ProxyExecutor(ProcessPoolExecutor(2), store=store, policy=policy) as ex:
            start = time.perf_counter()
            chains = [ex.submit(consume, ex.submit(produce, n, i)) for i in range(args.chains)]
            results = [f.result() for f in chains]
            chain_time = time.perf_counter() - start
            assert results == [float(n * i) for i in range(args.chains)]

            shared = ex.submit(produce, n, 3)  # one result, many consumers
            fan = [ex.submit(consume, shared) for _ in range(args.chains)]
            assert [f.result() for f in fan] == [float(n * 3)] * args.chains
            held = len(list(store.backend.scan()))  # the caller still holds `shared`

            del chains, shared, fan
            gc.collect()
            left = [info.key for info in store.backend.scan()]
        print(f"{args.chains} chains of {args.size_mb} MB results: {chain_time:.2f} s")
        print(f"objects in the store while the fan-out's producer is held: {held}")
        print(f"objects left once the caller dropped its futures: {len(left)}")
        assert held == 1 and not left, left
        store.close()


if __name__ == "__main__":
    main()
