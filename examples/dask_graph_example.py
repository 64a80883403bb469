"""ProxyClient and Dask graphs: compute, persist and dask.compute send large literals by proxy.

Eight ``dask.delayed`` calls share one large array. The plain client ships the array inside
the graph (Dask warns "Sending large graph"); the ProxyClient stores it once, the graph it
sends holds a reference, and the store is empty again once the computation is done. A
``dask.array`` collection computed and persisted inside ``with client.as_current():`` goes
the same way.

    python examples/dask_graph_example.py [--size-mb 50] [--tasks 8]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import warnings

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

from proxystore.integrations.dask import ProxyClient
from proxystore.store import STORES, init_store


def train(data: np.ndarray, seed: int) -> float:
    return float(data[seed % len(data)] + data.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()

    data = np.random.default_rng(0).random(args.size_mb * 2**20 // 8)
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="proxystore-graph-", dir=base) as store_dir:
        store = init_store(STORES.FILE, name="dask-graph-example", store_dir=store_dir)
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.submit(abs, 0).result()
            graph = [dask.delayed(train)(data, i) for i in range(args.tasks)]

            with warnings.catch_warnings(record=True) as plain_warnings:
                warnings.simplefilter("always")
                start = time.perf_counter()
                plain = client.compute(graph, sync=True)
                plain_time = time.perf_counter() - start

            proxy_client = ProxyClient(client, store=store, threshold=1_000_000)
            with warnings.catch_warnings(record=True) as proxy_warnings:
                warnings.simplefilter("always")
                start = time.perf_counter()
                proxied = proxy_client.compute(graph, sync=True)  # Client.compute's signature
                proxy_time = time.perf_counter() - start

                # Dask's own entry points, with the proxying client current.
                matrix = np.arange(2_000 * 2_000, dtype=np.float64).reshape(2_000, 2_000)
                x = da.from_array(matrix, chunks=1_000)  # 4 chunks of 8 MB
                with proxy_client.as_current():
                    (means,) = dask.compute(x.mean(axis=0))
                    persisted = (x * 2).persist()  # inputs kept while it is alive
                    doubled_total = persisted.sum().compute()
                del persisted
                gc.collect()

            deadline = time.monotonic() + 30
            while proxy_client.proxier.in_use() and time.monotonic() < deadline:
                time.sleep(0.01)
            left = [name for name in os.listdir(store_dir) if not name.startswith(".")]

        assert np.allclose(proxied, plain), "proxying must not change results"
        assert np.allclose(means, matrix.mean(axis=0)) and doubled_total == (matrix * 2).sum()
        large = "Sending large graph"
        assert any(large in str(w.message) for w in plain_warnings), "the plain graph warns"
        assert not any(large in str(w.message) for w in proxy_warnings), "the proxied does not"
        assert left == [], f"the store must be empty after the computations: {left}"
        print(f"{args.tasks} delayed calls x {args.size_mb} MB array, 2-process LocalCluster")
        print(f"  Client.compute:      {plain_time:.3f} s  (Dask warned: {large})")
        print(f"  ProxyClient.compute: {proxy_time:.3f} s  (no warning; store empty after)")
        store.cleanup()


if __name__ == "__main__":
    main()
