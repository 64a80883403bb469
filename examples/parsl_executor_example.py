"""proxy_executor: wrap a Parsl executor, and every python_app on it passes large arguments
by reference (no decorator on any app).

Runs a HighThroughputExecutor with a LocalProvider (two real worker processes on this
machine), wrapped by ``proxy_executor``, next to a plain one. The big table is stored once in
a FileStore for all the calls and evicted when the last of them is done.

    python examples/parsl_executor_example.py [--size-mb 50] [--tasks 8]
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

from proxystore.integrations.parsl import proxy_executor
from proxystore.store import STORES, Store, init_store

BASE = "/dev/shm" if os.path.isdir("/dev/shm") else None
HERE = os.path.dirname(os.path.abspath(__file__))


def simulate_body(params: float, big_table: np.ndarray) -> float:
    return float(params * big_table.sum())


def htex(label: str) -> HighThroughputExecutor:
    return HighThroughputExecutor(
        label=label,
        address="127.0.0.1",
        max_workers_per_node=2,
        provider=LocalProvider(
            init_blocks=1, max_blocks=1, worker_init=f"export PYTHONPATH={HERE}"
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="proxystore-parsl-", dir=BASE) as store_dir:
        store = init_store(STORES.FILE, name="parsl-executor-example", store_dir=store_dir)
        try:
            run(store, store_dir, args.size_mb, args.tasks)
        finally:
            store.cleanup()


def run(store: Store, store_dir: str, size_mb: int, tasks: int) -> None:
    # Parsl starts its interchange and workers as scripts installed beside this interpreter.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    config = Config(
        executors=[
            htex("plain"),
            # The one change: wrap the executor where the configuration names it.
            proxy_executor(htex("proxied"), store=store, threshold=1_000_000),
        ],
        run_dir=tempfile.mkdtemp(prefix="parsl-run-"),
        strategy="none",
        initialize_logging=False,
    )
    simulate_plain = python_app(simulate_body, executors=["plain"])
    simulate = python_app(simulate_body, executors=["proxied"])  # a plain app
    table = np.random.default_rng(0).random(size_mb * 2**20 // 8)
    with parsl.load(config) as dfk:
        simulate_plain(0.0, table[:10]).result()  # wait for the workers
        simulate(0.0, table[:10]).result()

        start = time.perf_counter()
        plain = [f.result() for f in [simulate_plain(i, table) for i in range(tasks)]]
        plain_time = time.perf_counter() - start

        start = time.perf_counter()
        proxied = [f.result() for f in [simulate(i, table) for i in range(tasks)]]
        proxy_time = time.perf_counter() - start

        proxier = dfk.executors["proxied"].proxystore_proxier
        deadline = time.monotonic() + 30
        while proxier.in_use() and time.monotonic() < deadline:
            time.sleep(0.01)
        left = [name for name in os.listdir(store_dir) if not name.startswith(".")]

    # Float sums may differ in the last bit with memory alignment, hence allclose.
    assert np.allclose(proxied, plain), "proxying must not change results"
    assert left == [], f"the store must be empty once the apps are done: {left}"
    print(f"{tasks} app calls x {size_mb} MB table on 2 Parsl worker processes")
    print(f"  plain HighThroughputExecutor: {plain_time:.3f} s")
    print(f"  proxy_executor(...):          {proxy_time:.3f} s  ({plain_time / proxy_time:.1f}x)")


if __name__ == "__main__":
    main()
