"""Quick start: pass a large array to worker processes by reference, zero-copy.

No server needed. The FileStore keeps objects under /dev/shm (a memory file system), where it
memory-maps them: a worker resolves a 100 MB array by mapping the pages that are already in
memory, without copying them. The ProxyExecutor wraps a plain ProcessPoolExecutor; every
argument above the threshold is stored once and the tasks receive proxies.

    python examples/quickstart.py
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import proxystore as ps
from proxystore.integrations.futures import ProxyExecutor
from proxystore.proxy import Proxy, extract, get_key, is_resolved


def column_means(data: np.ndarray) -> np.ndarray:
    """A task that receives a proxy and uses it like the array it stands for."""
    return np.asarray(data.mean(axis=0))


def main() -> None:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="proxystore-quickstart-", dir=base) as store_dir:
        store = ps.store.init_store(ps.store.STORES.FILE, name="quickstart", store_dir=store_dir)
        print(f"FileStore in {store_dir} (zero-copy memory mapping: {store.zero_copy})")

        # 1. A proxy by hand: stored once, pickles to a few hundred bytes, resolves on use.
        data = np.random.default_rng(42).random((12_800, 1_024))  # 100 MiB
        proxy = store.proxy(data)
        assert isinstance(proxy, Proxy) and not is_resolved(proxy)
        print(
            f"stored {data.nbytes / 2**20:.0f} MiB under key {get_key(proxy)}; "
            f"the pickled proxy is {len(pickle.dumps(proxy))} bytes"
        )
        assert np.array_equal(proxy + 1, data + 1)  # first use resolves it here
        assert isinstance(proxy, np.ndarray) and np.array_equal(extract(proxy), data)

        # 2. The same array to 8 tasks on 2 worker processes: plain pool vs ProxyExecutor.
        with ProcessPoolExecutor(max_workers=2) as pool:
            pool.submit(abs, 0).result()  # start the workers before timing
            start = time.perf_counter()
            plain = [f.result() for f in [pool.submit(column_means, data) for _ in range(8)]]
            plain_time = time.perf_counter() - start

        with ProxyExecutor(
            ProcessPoolExecutor(max_workers=2), store=store, threshold=1_000_000
        ) as ex:
            ex.submit(abs, 0).result()
            start = time.perf_counter()
            proxied = [f.result() for f in [ex.submit(column_means, data) for _ in range(8)]]
            proxy_time = time.perf_counter() - start

        assert all(np.allclose(a, b) for a, b in zip(plain, proxied))
        print(
            f"8 tasks x 100 MiB on 2 processes: ProcessPoolExecutor {plain_time:.2f} s, "
            f"ProxyExecutor {proxy_time:.2f} s ({plain_time / proxy_time:.0f}x faster)"
        )
        # Evicted arguments' pages stay a few seconds as hidden files for the next puts to
        # reuse (see "Page reuse" in the FileStore docs); the objects themselves are gone.
        objects = [name for name in os.listdir(store_dir) if not name.startswith(".")]
        assert objects == [get_key(proxy)], "task arguments were evicted"
        store.cleanup()
    print("quickstart OK")


if __name__ == "__main__":
    main()
