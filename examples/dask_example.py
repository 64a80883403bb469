"""ProxyClient: wrap a Dask client, and large arguments travel by reference.

Dask ships each task's arguments through the scheduler. Wrapped in a ProxyClient, an argument
above the threshold is stored once in a FileStore and the task gets a proxy instead; neither the
client nor the scheduler ever fetches it, only the worker that runs the task.

    python examples/dask_example.py [--size-mb 100] [--tasks 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
from distributed import Client, LocalCluster

from proxystore.integrations.dask import ProxyClient
from proxystore.store import STORES, init_store


def train(data: np.ndarray, seed: int) -> float:
    return float(data[seed % len(data)] + data.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Sending large graph")  # the plain run's warning

    data = np.random.default_rng(0).random(args.size_mb * 2**20 // 8)
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="proxystore-dask-", dir=base) as store_dir:
        store = init_store(STORES.FILE, name="dask-example", store_dir=store_dir)
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.submit(abs, 0).result()

            start = time.perf_counter()
            plain = client.gather([client.submit(train, data, i) for i in range(args.tasks)])
            plain_time = time.perf_counter() - start

            # The one-line change: wrap the client. submit/map keep their signatures.
            proxy_client = ProxyClient(client, store=store, threshold=1_000_000)
            start = time.perf_counter()
            futures = [proxy_client.submit(train, data, i) for i in range(args.tasks)]
            proxied = proxy_client.gather(futures)
            proxy_time = time.perf_counter() - start

        # Float sums may differ in the last bit with memory alignment, hence allclose.
        assert np.allclose(proxied, plain), "proxying must not change results"
        print(f"{args.tasks} tasks x {args.size_mb} MB array on a 2-process LocalCluster")
        print(f"  Client:      {plain_time:.3f} s")
        print(f"  ProxyClient: {proxy_time:.3f} s  ({plain_time / proxy_time:.1f}x faster)")
        store.cleanup()


if __name__ == "__main__":
    main()
