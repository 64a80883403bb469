"""ProxyExecutor: one line changes, large arguments travel by reference.

A ProcessPoolExecutor pickles every argument into every task: 8 tasks given the same 100 MB
array copy 800 MB through pipes. Wrapped in a ProxyExecutor, the array is written once to a
FileStore (on /dev/shm when available) and each task receives a proxy of a few hundred bytes
that its worker resolves, in the background, before the task body runs.

    python examples/futures_example.py [--size-mb 100] [--tasks 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from proxystore.integrations.futures import ProxyExecutor
from proxystore.store import STORES, init_store


def train(data: np.ndarray, seed: int) -> float:
    """A stand-in task: a little arithmetic over the whole array."""
    return float(data[seed % len(data)] + data.sum())


def run(pool: object, data: np.ndarray, tasks: int) -> tuple[list[float], float]:
    start = time.perf_counter()
    futures = [pool.submit(train, data, i) for i in range(tasks)]  # type: ignore[attr-defined]
    results = [f.result() for f in futures]
    return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()

    data = np.random.default_rng(0).random(args.size_mb * 2**20 // 8)
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="proxystore-futures-", dir=base) as store_dir:
        store = init_store(STORES.FILE, name="futures-example", store_dir=store_dir)

        with ProcessPoolExecutor(max_workers=2) as pool:
            pool.submit(abs, 0).result()  # start the workers before timing
            plain, plain_time = run(pool, data, args.tasks)

        # The one-line change: wrap the executor.
        with ProxyExecutor(
            ProcessPoolExecutor(max_workers=2), store=store, threshold=1_000_000
        ) as ex:
            ex.submit(abs, 0).result()
            proxied, proxy_time = run(ex, data, args.tasks)
            left = ex.proxier.in_use()

        # Float sums may differ in the last bit with memory alignment, hence allclose.
        assert np.allclose(proxied, plain), "proxying must not change results"
        # Evicted objects' pages are kept a few seconds as hidden files, for the next puts to
        # write into (FileStore page_pool_bytes / page_pool_idle); no object is left.
        objects = [name for name in os.listdir(store_dir) if not name.startswith(".")]
        assert left == {} and objects == [], "stored arguments are evicted"
        print(f"{args.tasks} tasks x {args.size_mb} MB array on 2 worker processes")
        print(f"  ProcessPoolExecutor: {plain_time:.3f} s")
        print(f"  ProxyExecutor:       {proxy_time:.3f} s  ({plain_time / proxy_time:.1f}x faster)")
        store.cleanup()


if __name__ == "__main__":
    main()
