"""proxy_app: decorate a Parsl app, and its large arguments travel by reference.

Runs a HighThroughputExecutor with a LocalProvider (two real worker processes on this machine).
The big table is stored once in a FileStore; every app call receives a proxy, which its worker
starts downloading before the app body runs.

    python examples/parsl_example.py [--size-mb 50] [--tasks 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import parsl
from parsl import python_app
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

from proxystore.integrations.parsl import proxy_app
from proxystore.store import STORES, Store, init_store

BASE = "/dev/shm" if os.path.isdir("/dev/shm") else None


def simulate_body(params: float, big_table: np.ndarray) -> float:
    return float(params * big_table.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="proxystore-parsl-", dir=BASE) as store_dir:
        store = init_store(STORES.FILE, name="parsl-example", store_dir=store_dir)
        try:
            run(store, args.size_mb, args.tasks)
        finally:
            store.cleanup()


def run(store: Store, size_mb: int, tasks: int) -> None:
    # The same body as a plain app and as a proxied one; in your code, decorators:
    #     @proxy_app(store=store, threshold=1_000_000)
    #     @python_app
    #     def simulate(params, big_table): ...
    simulate_plain = python_app(simulate_body)
    simulate = proxy_app(store=store, threshold=1_000_000)(python_app(simulate_body))

    # Parsl starts its interchange and workers as scripts installed beside this interpreter.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    here = os.path.dirname(os.path.abspath(__file__))
    config = Config(
        executors=[
            HighThroughputExecutor(
                label="htex",
                address="127.0.0.1",
                max_workers_per_node=2,
                provider=LocalProvider(
                    init_blocks=1, max_blocks=1, worker_init=f"export PYTHONPATH={here}"
                ),
            )
        ],
        run_dir=tempfile.mkdtemp(prefix="parsl-run-"),
        strategy="none",
        initialize_logging=False,
    )
    table = np.random.default_rng(0).random(size_mb * 2**20 // 8)
    with parsl.load(config):
        simulate_plain(0.0, table[:10]).result()  # wait for the workers

        start = time.perf_counter()
        plain = [f.result() for f in [simulate_plain(i, table) for i in range(tasks)]]
        plain_time = time.perf_counter() - start

        start = time.perf_counter()
        proxied = [f.result() for f in [simulate(i, table) for i in range(tasks)]]
        proxy_time = time.perf_counter() - start

    # Float sums may differ in the last bit with memory alignment, hence allclose.
    assert np.allclose(proxied, plain), "proxying must not change results"
    print(f"{tasks} app calls x {size_mb} MB table on 2 Parsl worker processes")
    print(f"  @python_app:            {plain_time:.3f} s")
    print(f"  @proxy_app(@python_app): {proxy_time:.3f} s  ({plain_time / proxy_time:.1f}x)")


if __name__ == "__main__":
    main()
