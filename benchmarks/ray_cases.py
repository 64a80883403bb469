"""The standard workload against the systems users would pick instead: Ray and Dask (issue 12).

The *standard workload* (as in :mod:`benchmarks.zero_copy_cases`): 8 tasks on 2 worker
processes, each given the same float64 array of 100 MB (8 MB with ``--quick``) and summing all
of it. Ray is started once per run (:meth:`benchmarks.context.Context.ray`: ``num_cpus=2``, no
dashboard, every address on ``127.0.0.1``, usage statistics off) and shut down at the end; its
floor is ``ray.put(array)`` then 8 ``f.remote(ref, i)`` and ``ray.get`` of the 8 results, all
inside the timed region.

* ``ray/standard/proxy-executor-cow/...``: ``ProxyExecutor`` over a ``ProcessPoolExecutor(2)``
  (fork) with a FileStore under ``/dev/shm``, copy-on-write arrays (the default), against Ray.
  Target: at most 1.0x.
* ``ray/standard/proxy-executor-readonly/...``: the same with ``readonly=True``. Target: at most
  0.8x.
* ``ray/standard/ray-vs-pool/...``: Ray itself against the plain pool passing the array by value
  (for the table: where Ray stands against the plain engine).
* ``ray/standard/proxy-client/...``: ``ProxyClient`` over a 2-process Dask ``LocalCluster``
  against Ray (``zero-copy/dask/*`` compares it with Dask's ``scatter``).
* ``ray/put/file-shm/...``: ``FileStore.put`` of the array under ``/dev/shm`` against
  ``ray.put`` (each repetition a new object; dropped outside the timed region).
* ``put-floor/file-shm/...``: ``FileStore.put`` of the array under ``/dev/shm`` against a
  memcpy (``numpy.copyto``) into memory touched beforehand, the raw floor of any put. Target:
  at most 2x. Needs no Ray.

Without Ray (``python -m pip install -e '.[bench]'`` installs it), the Ray cases are reported
as skipped, with the reason.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import numpy as np

from benchmarks.context import Context
from benchmarks.executor_cases import _sum_task
from benchmarks.harness import MB, Case, Target, Trial
from benchmarks.zero_copy_cases import WORKERS, _standard_setup, _Unpure, _workload

TASKS = 8
THRESHOLD = 1_000_000


def _label(size: int) -> str:
    return f"array-{size // MB}MB"


def cases(ctx: Context) -> list[Case]:
    """The comparison cases (run after the process pools are forked)."""
    size = 8 * MB if ctx.quick else 100 * MB
    label = _label(size)
    repeats = 2 if ctx.quick else 7
    full = not ctx.quick
    found = [
        Case(
            f"ray/standard/proxy-executor-cow/{label}",
            _vs_ray_preparer(ctx, size, engine="pool", readonly=False),
            "Ray put + 8 tasks",
            size=size,
            target=Target("<= 1.0x", bound=1.0) if full else None,
            repeats=repeats,
            warmup=2,
            throughput=False,
        ),
        Case(
            f"ray/standard/proxy-executor-readonly/{label}",
            _vs_ray_preparer(ctx, size, engine="pool", readonly=True),
            "Ray put + 8 tasks",
            size=size,
            target=Target("<= 0.8x", bound=0.8) if full else None,
            repeats=repeats,
            warmup=2,
            throughput=False,
        ),
        Case(
            f"ray/standard/ray-vs-pool/{label}",
            _ray_vs_pool_preparer(ctx, size),
            "plain ProcessPoolExecutor",
            size=size,
            repeats=2 if ctx.quick else 5,
            warmup=2,
            throughput=False,
        ),
        Case(
            f"ray/standard/proxy-client/{label}",
            _vs_ray_preparer(ctx, size, engine="dask", readonly=False),
            "Ray put + 8 tasks",
            size=size,
            repeats=repeats,
            warmup=2,
            throughput=False,
        ),
        Case(
            f"ray/put/file-shm/{label}",
            _put_preparer(ctx, size, floor="ray"),
            "ray.put",
            size=size,
            repeats=3 if ctx.quick else 9,
            warmup=2,
        ),
        Case(
            f"put-floor/file-shm/{label}",
            _put_preparer(ctx, size, floor="memcpy"),
            "memcpy into touched memory",
            size=size,
            target=Target("<= 2x", bound=2.0) if full else None,
            repeats=3 if ctx.quick else 9,
            warmup=2,
        ),
    ]
    return found


def ray_standard(ray: Any, remote: Any, array: np.ndarray) -> float:
    """Ray's standard workload: ``ray.put`` then 8 tasks; return the wall time."""
    start = time.perf_counter()
    ref = ray.put(array)
    refs = [remote.remote(ref, index) for index in range(TASKS)]
    results = ray.get(refs, timeout=900)
    elapsed = time.perf_counter() - start
    expected = float(array.sum())
    if not all(abs(r - expected - i) < 1e-6 * abs(expected) for i, r in enumerate(results)):
        raise RuntimeError("a Ray task returned a wrong result")
    del ref, refs
    return elapsed


def ray_sum_task(ray: Any) -> Any:
    """``_sum_task`` as a Ray remote function taking one CPU."""
    return ray.remote(num_cpus=1)(_sum_task)


def _vs_ray_preparer(
    ctx: Context, size: int, *, engine: str, readonly: bool
) -> Callable[[], Trial]:
    def prepare() -> Trial:
        ours: Any
        if engine == "pool":
            _, _, ours, array = _standard_setup(ctx, size, readonly=readonly, pool_name="zero-copy")
        else:
            client = ctx.dask_client(WORKERS)
            client.wait_for_workers(WORKERS, timeout=120)
            store = ctx.store("file-shm", cache_size=1, purpose="zero-copy-dask")
            from benchmarks.zero_copy_cases import _integration

            ours = _Unpure(
                _integration("dask").ProxyClient(client, store=store, threshold=THRESHOLD)
            )
            array = np.random.default_rng(0).random(size // 8)
        ray = ctx.ray()  # after the pool's workers are forked
        remote = ray_sum_task(ray)
        times: dict[str, list[float]] = {"submit_s": [], "first_submit_s": [], "tasks_s": []}

        def run() -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _workload(ours, array, times)

        return Trial(run=run, floor=lambda: ray_standard(ray, remote, array), extra=times)

    return prepare


def _ray_vs_pool_preparer(ctx: Context, size: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        pool, _, _, array = _standard_setup(ctx, size, readonly=False, pool_name="zero-copy")
        ray = ctx.ray()
        remote = ray_sum_task(ray)
        return Trial(
            run=lambda: ray_standard(ray, remote, array),
            floor=lambda: _workload(pool, array, None),
        )

    return prepare


def _put_preparer(ctx: Context, size: int, *, floor: str) -> Callable[[], Trial]:
    def prepare() -> Trial:
        store = ctx.store("file-shm", cache_size=0, purpose="put-floor")
        array = np.random.default_rng(0).random(size // 8)
        keys: list[str] = []

        def put() -> float:
            for key in keys:  # drop the previous repetition's object, outside the timed region
                store.evict(key)
            keys.clear()
            start = time.perf_counter()
            keys.append(store.set(array))
            return time.perf_counter() - start

        def close() -> None:
            for key in keys:
                store.evict(key)

        if floor == "memcpy":
            target = np.ones_like(array)  # touched: every page is resident before timing

            def memcpy() -> float:
                start = time.perf_counter()
                np.copyto(target, array)
                return time.perf_counter() - start

            return Trial(run=put, floor=memcpy, close=close)

        ray = ctx.ray()
        refs: list[Any] = []

        def ray_put() -> float:
            refs.clear()
            start = time.perf_counter()
            refs.append(ray.put(array))
            return time.perf_counter() - start

        return Trial(run=put, floor=ray_put, close=close)

    return prepare
