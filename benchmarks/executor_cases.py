"""Executors with and without proxies, and prefetching (issue 3's benchmarks).

* ``executor/<engine>/<store>/...``: on 2 worker processes, 8 tasks each passed the same large
  numpy array (each task sums it). The case is the proxying engine (``ProxyExecutor`` over a
  ``ProcessPoolExecutor``, ``ProxyClient`` over a Dask ``Client`` on a ``LocalCluster``); the
  floor is the same engine passing the array by value. Both submit with the same calls
  (Dask with ``pure=False``, so no repetition reuses another's results). The time spent in
  the ``submit`` calls is reported as ``submit_s`` (case) and ``floor_submit_s`` (floor).
* ``prefetch/<store>/...``: a task gets two proxied arrays and works for a while (``sleep``)
  before it touches them. The case is the task run through ``ProxyTask`` (which starts
  resolving both before the body); the floor is max(work, transfer), with the transfer timed
  in the same worker as two parallel background resolves and no work. The target is 1.1x.
"""

from __future__ import annotations

import importlib
import time
import warnings
from typing import Any, Callable

import numpy as np

from benchmarks.context import Context
from benchmarks.harness import MB, Case, Target, Trial
from proxystore.proxy import Proxy, get_key, resolve_async

TASKS = 8
WORKERS = 2
THRESHOLD = 1_000_000
EXECUTOR_STORES = ["file-shm", "redis"]


def _integration(name: str) -> Any:
    # proxystore.integrations is mapped from integrations/ by the package metadata, which type
    # checkers do not follow: import it by name (and on first use: dask is heavy).
    return importlib.import_module(f"proxystore.integrations.{name}")


def _sum_task(array: Any, index: int) -> float:
    """A task's body: read the whole array."""
    return float(array.sum()) + index


def _touch_after_work(first: Any, second: Any, work: float) -> float:
    time.sleep(work)
    return float(first[0]) + float(second[-1])


def _prefetching_task(first: Proxy, second: Proxy, work: float) -> float:
    """In the worker: run the body through ProxyTask (prefetch on); return its wall time."""
    task = _integration("proxier").ProxyTask(_touch_after_work, prefetch=True)
    start = time.perf_counter()
    task(first, second, work)
    return time.perf_counter() - start


def _work_and_transfer(first: Proxy, second: Proxy, work: float) -> tuple[float, float]:
    """In the worker: time the work alone, then the two transfers alone (in parallel)."""
    start = time.perf_counter()
    time.sleep(work)
    slept = time.perf_counter() - start
    start = time.perf_counter()
    resolve_async(first)
    resolve_async(second)
    float(first[0]) + float(second[-1])
    return slept, time.perf_counter() - start


def cases(ctx: Context) -> list[Case]:
    """Executor and prefetch cases (8 MB arrays and a 0.1 s task in quick mode)."""
    size = 8 * MB if ctx.quick else 100 * MB
    label = f"array-{size // MB}MB"
    repeats = 2 if ctx.quick else 5
    halves = Target("<= 0.5x", bound=0.5) if not ctx.quick else None
    found = []
    for engine, floor in (("process-pool", "ProcessPoolExecutor"), ("dask", "Dask Client")):
        for store in EXECUTOR_STORES:
            found.append(
                Case(
                    f"executor/{engine}/{store}/{label}",
                    _executor_preparer(ctx, engine, store, size),
                    f"plain {floor}",
                    size=size,
                    target=halves,
                    repeats=repeats,
                    needs_redis=store == "redis",
                    throughput=False,
                )
            )
        if engine == "process-pool":  # forked pools before Dask starts its threads
            found.extend(_prefetch_cases(ctx, size, label, repeats))
    return found


def _prefetch_cases(ctx: Context, size: int, label: str, repeats: int) -> list[Case]:
    work = 0.1 if ctx.quick else 0.5
    return [
        Case(
            f"prefetch/{store}/2x-{label}",
            _prefetch_preparer(ctx, store, size, work),
            f"max(work {work}s, transfer)",
            size=2 * size,
            target=Target("<= 1.1x", bound=1.1) if not ctx.quick else None,
            repeats=repeats,
            needs_redis=store == "redis",
            throughput=False,
        )
        for store in EXECUTOR_STORES
    ]


def _executor_preparer(
    ctx: Context, engine: str, store_kind: str, size: int
) -> Callable[[], Trial]:
    def prepare() -> Trial:
        store = ctx.store(store_kind, cache_size=2, purpose="executor")
        array = np.random.default_rng(0).random(size // 8)
        extra: dict[str, list[float]] = {"submit_s": [], "floor_submit_s": []}
        plain: Any
        proxying: Any
        options: dict[str, Any] = {}
        if engine == "process-pool":
            plain = ctx.process_pool("executor", WORKERS)
            proxying = _integration("futures").ProxyExecutor(
                plain, store=store, threshold=THRESHOLD
            )
        else:
            plain = ctx.dask_client(WORKERS)
            proxying = _integration("dask").ProxyClient(plain, store=store, threshold=THRESHOLD)
            options["pure"] = False

        def run_on(executor: Any, submit_times: list[float]) -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Dask warns about large arguments
                start = time.perf_counter()
                futures = [
                    executor.submit(_sum_task, array, index, **options) for index in range(TASKS)
                ]
                submitted = time.perf_counter()
                results = [future.result(timeout=900) for future in futures]
                end = time.perf_counter()
            expected = float(array.sum())
            if not all(abs(r - expected - i) < 1e-6 * abs(expected) for i, r in enumerate(results)):
                raise RuntimeError("an executor returned a wrong result")
            submit_times.append(submitted - start)
            return end - start

        return Trial(
            run=lambda: run_on(proxying, extra["submit_s"]),
            floor=lambda: run_on(plain, extra["floor_submit_s"]),
            extra=extra,
        )

    return prepare


def _prefetch_preparer(
    ctx: Context, store_kind: str, size: int, work: float
) -> Callable[[], Trial]:
    def prepare() -> Trial:
        store = ctx.store(store_kind, cache_size=0, purpose="prefetch")
        pool = ctx.process_pool("prefetch", 1)
        rng = np.random.default_rng(0)
        first = store.proxy(rng.random(size // 8))
        second = store.proxy(rng.random(size // 8))
        extra: dict[str, list[float]] = {"work_s": [], "transfer_s": []}

        def run() -> float:
            return float(pool.submit(_prefetching_task, first, second, work).result(timeout=900))

        def floor() -> float:
            slept, transfer = pool.submit(_work_and_transfer, first, second, work).result(
                timeout=900
            )
            extra["work_s"].append(slept)
            extra["transfer_s"].append(transfer)
            return max(slept, transfer)

        def close() -> None:
            for proxy in (first, second):
                store.evict(str(get_key(proxy)))

        return Trial(run=run, floor=floor, close=close, extra=extra)

    return prepare
