"""Dask graphs through the store (the issue "Dask graphs and whole Parsl workflows").

``dask-graph/<store>/array-100MB``: on a 2-process ``LocalCluster``, 8 tasks each given the
same large numpy array (each sums it), in one run three ways:

* the case: ``ProxyClient.compute`` of 8 ``dask.delayed`` calls (a graph), gathered;
* the floor: ``ProxyClient.submit`` of the same 8 calls (``pure=False``), gathered;
* ``plain_compute_s`` (listed under the table): the plain client's ``compute`` of the same
  graph, which ships the array inside the graph.

The target is the graph within 1.2x of ``submit`` with no ``Sending large graph`` warning
from Dask for the proxied graph (checked with Dask's default warning threshold, 10 MB, under
which the plain client's graph warns).
"""

from __future__ import annotations

import importlib
import time
import warnings
from typing import Any, Callable

import numpy as np

from benchmarks.context import Context
from benchmarks.harness import MB, Case, Target, Trial

TASKS = 8
WORKERS = 2
THRESHOLD = 1_000_000
STORES = ["file-shm", "redis"]
LARGE_GRAPH = "Sending large graph"


def _sum_task(array: Any, index: int) -> float:
    """A task's body: read the whole array."""
    return float(array.sum()) + index


def cases(ctx: Context) -> list[Case]:
    """The graph cases (8 MB arrays in quick mode)."""
    size = 8 * MB if ctx.quick else 100 * MB
    label = f"array-{size // MB}MB"
    target = Target(
        "<= 1.2x and no large-graph warning",
        bound=1.2,
        also=Target("no large-graph warning", on="check"),
    )
    return [
        Case(
            f"dask-graph/{store}/{label}",
            _preparer(ctx, store, size),
            "ProxyClient.submit",
            size=size,
            target=target if not ctx.quick else None,
            repeats=2 if ctx.quick else 5,
            needs_redis=store == "redis",
            throughput=False,
        )
        for store in STORES
    ]


def _preparer(ctx: Context, store_kind: str, size: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        import dask

        dask_module = importlib.import_module("proxystore.integrations.dask")
        store = ctx.store(store_kind, cache_size=2, purpose="graph")
        array = np.random.default_rng(0).random(size // 8)
        plain = ctx.dask_client(WORKERS)
        proxying = dask_module.ProxyClient(plain, store=store, threshold=THRESHOLD)
        expected = float(array.sum())
        extra: dict[str, list[float]] = {"plain_compute_s": []}
        warned: list[int] = []  # large-graph warnings of the proxied graph, per repetition
        plain_warned: list[int] = []  # of the plain client's graph (expected: one each)

        def check(results: list[float]) -> None:
            if not all(abs(r - expected - i) < 1e-6 * abs(expected) for i, r in enumerate(results)):
                raise RuntimeError("a graph returned a wrong result")

        def timed_compute(client: Any) -> tuple[float, int]:
            # Dask's default warning threshold (the context raises it for the other cases).
            with (
                dask.config.set({"distributed.admin.large-graph-warning-threshold": "10MB"}),
                warnings.catch_warnings(record=True) as caught,
            ):
                warnings.simplefilter("always")
                start = time.perf_counter()
                graph = [dask.delayed(_sum_task)(array, index) for index in range(TASKS)]
                results = client.gather(client.compute(graph))
                end = time.perf_counter()
            check(results)
            return end - start, sum(LARGE_GRAPH in str(w.message) for w in caught)

        def run() -> float:
            seconds, count = timed_compute(proxying)
            warned.append(count)
            plain_seconds, plain_count = timed_compute(plain)  # the same run, interleaved
            extra["plain_compute_s"].append(plain_seconds)
            plain_warned.append(plain_count)
            return seconds

        def floor() -> float:
            start = time.perf_counter()
            futures = [
                proxying.submit(_sum_task, array, index, pure=False) for index in range(TASKS)
            ]
            results = [future.result(timeout=900) for future in futures]
            end = time.perf_counter()
            check(results)
            return end - start

        def no_warning() -> bool:
            # Only meaningful when the plain graph did warn under the same setting.
            return bool(warned) and not any(warned) and all(plain_warned)

        return Trial(run=run, floor=floor, check=no_warning, extra=extra)

    return prepare
