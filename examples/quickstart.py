"""Quick start: proxies of a large array through a FileStore, resolved in worker processes.

Runs anywhere, no server needed: the FileStore keeps objects under a temporary directory
(on /dev/shm when the machine has it, so nothing touches the disk).

    python examples/quickstart.py
"""

from __future__ import annotations

import os
import pickle
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import proxystore as ps
from proxystore.proxy import Proxy, extract, get_key, is_resolved


def column_means(data: np.ndarray) -> np.ndarray:
    """A task that receives a proxy and uses it like the array it stands for."""
    return np.asarray(data.mean(axis=0))


def main() -> None:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="proxystore-quickstart-", dir=base) as store_dir:
        store = ps.store.init_store(ps.store.STORES.FILE, name="quickstart", store_dir=store_dir)

        data = np.random.default_rng(42).random((2_000, 1_000))  # 16 MB
        proxy = store.proxy(data)
        print(f"stored {data.nbytes / 1e6:.0f} MB under key {get_key(proxy)}")
        print(f"a pickled proxy is {len(pickle.dumps(proxy))} bytes; the array is not in it")

        assert isinstance(proxy, Proxy) and not is_resolved(proxy)

        # Each worker process re-creates the FileStore from the proxy and reads the array once.
        with ProcessPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(column_means, [proxy] * 4))
        expected = data.mean(axis=0)
        assert all(np.allclose(result, expected) for result in results)
        print(f"4 tasks in 2 worker processes resolved the proxy: means match ({expected[:3]})")

        # Locally the proxy behaves exactly like the array (first use resolves it here).
        assert isinstance(proxy, np.ndarray)
        assert np.array_equal(proxy + 1, data + 1)
        assert np.array_equal(extract(proxy), data)
        print("proxy + 1 == data + 1; the proxy is now resolved:", is_resolved(proxy))

        store.cleanup()
    print("quickstart OK")


if __name__ == "__main__":
    main()
