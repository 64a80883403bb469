"""Task-to-task data: chains, fan-out and pipelining (the issue "task-to-task data").

A task's large result is another task's input. Every case runs on 2 worker processes with a
float64 result of 100 MiB (8 MiB with ``--quick``): ``produce(i)`` is ``np.full(n, i)``,
``consume(x, j)`` is ``float(x.sum()) + j``, and every result is checked.

* ``chain/<variant>/...``: 8 chains ``consume(produce(i))``.
* ``fanout/<variant>/...``: one ``produce`` whose result goes to 8 consumers
  ``consume(x, j)``.

Variants (the same for both workloads):

* ``plain-pool``: a ``ProcessPoolExecutor(2)``; the client waits for each ``produce`` (as
  results arrive) and submits ``consume`` with the value, which travels back to the client
  and out again.
* ``plain-dask``: ``client.submit(consume, client.submit(produce, i))`` (``pure=False``) on a
  ``LocalCluster`` of 2 single-threaded worker processes.
* ``ray``: ``consume.remote(produce.remote(i))`` (2 CPUs). Its floor is the plain pool.
* ``proxy-executor``: ``ProxyExecutor`` over the pool, default policy (results come back by
  value; the client submits ``consume`` with the value, which goes by proxy).
* ``proxy-executor-results``: the same with ``ProxyPolicy(proxy_results=True)``: the client
  takes ``produce``'s proxy result and submits ``consume`` with it.
* ``proxy-executor-futures``: ``ex.submit(consume, ex.submit(produce, i))`` with
  ``ProxyPolicy(proxy_results=True)`` (the result goes store to worker); skipped where
  ``ProxyExecutor.accepts_futures`` is not set ("not supported in this build").
* ``proxy-client-futures``: ``ProxyClient`` with ``proxy_results=True`` and the Dask future
  of ``produce`` passed on.

Every variant but ``ray`` is measured against Ray doing the same work, interleaved. The target
of the proxying variants: at most Ray's time (1.0x) with nothing left in the store. Each
proxying variant has its own FileStore under ``/dev/shm``; after each repetition (outside the
timed region) the objects still in its directory once evictions have settled (up to
:data:`SETTLE` seconds) are counted (``left_objects``, ``left_bytes``; the pages the store
keeps for reuse are ``pool_bytes``), then evicted, so that one repetition's leftovers do not
fill ``/dev/shm`` or count again.

* ``pipeline/proxy-future/...`` (TPDS 2024, the ProxyStore paper's *proxy futures*): a
  producer that works for a while (``sleep``) then sets a ``store.future()``, and a consumer
  that needs a setup of the same length (a ``sleep`` standing for imports or model loading)
  before it reads the result. The case submits both at once, the consumer receiving
  ``future.proxy()``; the floor submits the consumer once the producer is done. Target: at
  most 0.75x (the ideal is max(setup, work) + consume over setup + work + consume, about
  0.55x). Skipped where ``Store.future`` does not exist.

The pools are started with **spawn** (the cases run after Ray and Dask have started their
threads); their workers are started before anything is timed.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable

import numpy as np

from benchmarks.context import Context
from benchmarks.harness import MB, Case, SkipCase, Target, Trial
from proxystore.store import Store

TASKS = 8
"""Chains, and consumers of the fan-out."""

WORKERS = 2
THRESHOLD = 1_000_000
WAIT = 900.0
"""Seconds any result is waited for."""

SETTLE = 2.0
"""Seconds a repetition waits (untimed) for the store to become empty before counting (1 s
with ``--quick``)."""

NOT_SUPPORTED = "not supported in this build"

VARIANTS: list[tuple[str, bool]] = [
    ("plain-pool", False),
    ("plain-dask", False),
    ("ray", False),
    ("proxy-executor", True),
    ("proxy-executor-results", True),
    ("proxy-executor-futures", True),
    ("proxy-client-futures", True),
]
"""``(variant, uses a store)`` in the order the cases run."""

RAY_FLOOR = {
    "chain": "Ray consume.remote(produce.remote(i))",
    "fanout": "Ray produce.remote, 8 consume.remote",
}


def _integration(name: str) -> Any:
    return importlib.import_module(f"proxystore.integrations.{name}")


# -- the tasks (module level: spawned workers, Dask and Ray workers import them by name) --------


def produce(index: int, size: int) -> np.ndarray:
    """A producer: ``size`` bytes of float64, every element ``index``."""
    return np.full(size // 8, float(index))


def consume(array: Any, offset: int = 0) -> float:
    """A consumer: reads all of ``array``."""
    return float(array.sum()) + offset


def produce_into(future: Any, index: int, size: int, work: float) -> None:
    """A producer that works for ``work`` seconds, then sets ``future`` to its result."""
    time.sleep(work)
    future.set_result(produce(index, size))


def consume_after_setup(array: Any, setup: float) -> tuple[float, float]:
    """A consumer with ``setup`` seconds of setup; returns its result and the time after setup."""
    time.sleep(setup)
    start = time.perf_counter()
    value = consume(array)
    return value, time.perf_counter() - start


def _pid(delay: float) -> int:
    time.sleep(delay)
    return os.getpid()


# -- engines -------------------------------------------------------------------------------------


def _pool(ctx: Context) -> ProcessPoolExecutor:
    """The spawned pool of 2 workers, both started (and numpy imported) before timing."""

    def make() -> ProcessPoolExecutor:
        pool = ctx.process_pool("chain-spawn", WORKERS, method="spawn")
        seen: set[int] = set()
        for _ in range(50):
            seen.update(pool.map(_pid, [0.1] * WORKERS * 2, timeout=300))
            if len(seen) >= WORKERS:
                return pool
        raise RuntimeError(f"only {len(seen)} of {WORKERS} spawned workers ran a task")

    return ctx.resource("chain-pool", make)


def _dask(ctx: Context) -> Any:
    client = ctx.dask_client(WORKERS)
    client.wait_for_workers(WORKERS, timeout=120)
    return client


def _ray_tasks(ctx: Context) -> tuple[Any, Any, Any]:
    """``ray`` and the two tasks as remote functions of one CPU."""

    def make() -> tuple[Any, Any, Any]:
        ray = ctx.ray(WORKERS)
        return ray, ray.remote(num_cpus=1)(produce), ray.remote(num_cpus=1)(consume)

    return ctx.resource("chain-ray-tasks", make)


def _case_store(ctx: Context, name: str) -> tuple[Store, str]:
    """A FileStore of its own under ``/dev/shm`` for the case ``name``, and its directory."""
    base = tempfile.mkdtemp(prefix="proxystore-bench-chain-", dir="/dev/shm")
    ctx.exit.callback(shutil.rmtree, base, ignore_errors=True)
    directory = os.path.join(base, "store")
    store = ctx.store("file-shm", cache_size=0, purpose=name.replace("/", "-"), store_dir=directory)
    return store, directory


def _settle(ctx: Context) -> float:
    return 1.0 if ctx.quick else SETTLE


def _contents(directory: str) -> tuple[list[str], int, int]:
    """The objects in a FileStore directory, their bytes, and the bytes kept for page reuse."""
    names: list[str] = []
    size = pooled = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return names, 0, 0
    for entry in entries:
        try:
            length = entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:  # evicted meanwhile
            continue
        if entry.name.startswith(".pool-"):
            pooled += length
        elif not entry.name.startswith("."):  # not a writer's temporary file
            names.append(entry.name)
            size += length
    return names, size, pooled


def _count_and_clear(
    store: Store, directory: str, extra: dict[str, list[float]], settle: float
) -> None:
    """Record what a repetition left in the store (once evictions settle), then evict it."""
    deadline = time.monotonic() + settle
    names, size, pooled = _contents(directory)
    while names and time.monotonic() < deadline:
        time.sleep(0.05)
        names, size, pooled = _contents(directory)
    extra["left_objects"].append(float(len(names)))
    extra["left_bytes"].append(float(size))
    extra["pool_bytes"].append(float(pooled))
    for name in names:
        store.evict(name)


# -- the workloads -------------------------------------------------------------------------------

Runner = Callable[[int], list[float]]
"""One repetition of a workload on one engine: given its first index, returns the results."""


def _expected(workload: str, first: int, size: int) -> list[float]:
    elements = size // 8
    if workload == "chain":
        return sorted(float((first + i) * elements) for i in range(TASKS))
    return sorted(float(first * elements + j) for j in range(TASKS))


def _mediated(executor: Any, workload: str, size: int) -> Runner:
    """The client waits for ``produce`` and submits ``consume`` with what it got."""

    def run(first: int) -> list[float]:
        if workload == "chain":
            produced = [executor.submit(produce, first + i, size) for i in range(TASKS)]
            consumed = [
                executor.submit(consume, done.result(timeout=WAIT))
                for done in as_completed(produced, timeout=WAIT)
            ]
        else:
            value = executor.submit(produce, first, size).result(timeout=WAIT)
            consumed = [executor.submit(consume, value, j) for j in range(TASKS)]
            del value
        return [future.result(timeout=WAIT) for future in consumed]

    return run


def _chained(submit: Callable[..., Any], workload: str, size: int) -> Runner:
    """``produce``'s future is passed to ``consume`` as it is."""

    def run(first: int) -> list[float]:
        if workload == "chain":
            consumed = [submit(consume, submit(produce, first + i, size)) for i in range(TASKS)]
        else:
            produced = submit(produce, first, size)
            consumed = [submit(consume, produced, j) for j in range(TASKS)]
            del produced
        return [future.result(timeout=WAIT) for future in consumed]

    return run


def _unpure(client: Any) -> Callable[..., Any]:
    def submit(fn: Callable[..., Any], *args: Any) -> Any:
        return client.submit(fn, *args, pure=False)

    return submit


def _ray_runner(ctx: Context, workload: str, size: int) -> Runner:
    ray, remote_produce, remote_consume = _ray_tasks(ctx)

    def run(first: int) -> list[float]:
        if workload == "chain":
            refs = [
                remote_consume.remote(remote_produce.remote(first + i, size)) for i in range(TASKS)
            ]
        else:
            produced = remote_produce.remote(first, size)
            refs = [remote_consume.remote(produced, j) for j in range(TASKS)]
            del produced
        return list(ray.get(refs, timeout=WAIT))

    return run


def _runner(ctx: Context, variant: str, workload: str, size: int, store: Store | None) -> Runner:
    """The runner of ``variant`` (engines started, the store made, nothing timed yet)."""
    policy_type = _integration("policy").ProxyPolicy
    if variant == "plain-pool":
        return _mediated(_pool(ctx), workload, size)
    if variant == "plain-dask":
        return _chained(_unpure(_dask(ctx)), workload, size)
    if variant == "ray":
        return _ray_runner(ctx, workload, size)
    executor_type = _integration("futures").ProxyExecutor
    if variant == "proxy-executor":
        executor = executor_type(_pool(ctx), store=store, threshold=THRESHOLD)
        return _mediated(executor, workload, size)
    if variant == "proxy-executor-results":
        policy = policy_type(threshold=THRESHOLD, proxy_results=True)
        return _mediated(executor_type(_pool(ctx), store=store, policy=policy), workload, size)
    if variant == "proxy-executor-futures":
        if not getattr(executor_type, "accepts_futures", False):
            raise SkipCase(
                "ProxyExecutor does not take futures as arguments (ProxyExecutor."
                f"accepts_futures is not set): {NOT_SUPPORTED}"
            )
        policy = policy_type(threshold=THRESHOLD, proxy_results=True)
        executor = executor_type(_pool(ctx), store=store, policy=policy)
        return _chained(executor.submit, workload, size)
    if variant == "proxy-client-futures":
        policy = policy_type(threshold=THRESHOLD, proxy_results=True)
        client = _integration("dask").ProxyClient(_dask(ctx), store=store, policy=policy)
        return _chained(_unpure(client), workload, size)
    raise ValueError(f"unknown variant {variant!r}")


def _timed(runner: Runner, expected: Callable[[int], list[float]], first: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dask warns about large results and graphs
        start = time.perf_counter()
        results = runner(first)
        elapsed = time.perf_counter() - start
    if sorted(results) != expected(first):
        raise RuntimeError(f"wrong results: {sorted(results)} instead of {expected(first)}")
    return elapsed


def _workload_preparer(
    ctx: Context, name: str, variant: str, workload: str, size: int, uses_store: bool
) -> Callable[[], Trial]:
    def prepare() -> Trial:
        store, directory = _case_store(ctx, name) if uses_store else (None, "")
        # Pools first (spawned), then Dask, then Ray: every engine started before timing.
        if variant != "plain-dask" and "client" not in variant:
            _pool(ctx)
        runner = _runner(ctx, variant, workload, size, store)
        floor = _runner(ctx, "plain-pool" if variant == "ray" else "ray", workload, size, None)
        extra: dict[str, list[float]] = (
            {"left_objects": [], "left_bytes": [], "pool_bytes": []} if uses_store else {}
        )
        counter = iter(range(1, 1_000_000))

        def expected(first: int) -> list[float]:
            return _expected(workload, first, size)

        def run() -> float:
            elapsed = _timed(runner, expected, next(counter))
            if store is not None:
                _count_and_clear(store, directory, extra, _settle(ctx))
            return elapsed

        def check() -> bool:
            left = extra.get("left_objects", [])
            return bool(left) and not any(left)

        return Trial(
            run=run,
            floor=lambda: _timed(floor, expected, next(counter)),
            check=check if uses_store else None,
            extra=extra,
        )

    return prepare


# -- pipelining ----------------------------------------------------------------------------------


def _future_maker(store: Store) -> Callable[[], Any]:
    """``store.future``, with ``evict=True`` where it takes it (resolved once, then evicted)."""
    make: Callable[..., Any] = store.future
    if "evict" in inspect.signature(make).parameters:
        return lambda: make(evict=True)
    return make


def _pipeline_preparer(ctx: Context, name: str, size: int, delay: float) -> Callable[[], Trial]:
    def prepare() -> Trial:
        if not hasattr(Store, "future"):
            raise SkipCase(f"Store.future (proxy futures) does not exist: {NOT_SUPPORTED}")
        pool = _pool(ctx)
        store, directory = _case_store(ctx, name)
        make_future = _future_maker(store)
        extra: dict[str, list[float]] = {
            "consume_s": [],
            "floor_consume_s": [],
            "left_objects": [],
            "left_bytes": [],
            "pool_bytes": [],
        }
        counter = iter(range(1, 1_000_000))

        def once(*, overlap: bool) -> float:
            index = next(counter)
            start = time.perf_counter()
            future = make_future()
            producer = pool.submit(produce_into, future, index, size, delay)
            if not overlap:
                producer.result(timeout=WAIT)
            consumer = pool.submit(consume_after_setup, future.proxy(), delay)
            value, consumed = consumer.result(timeout=WAIT)
            producer.result(timeout=WAIT)
            elapsed = time.perf_counter() - start
            if value != float(index * (size // 8)):
                raise RuntimeError(f"the consumer returned {value}, not {index * (size // 8)}")
            extra["consume_s" if overlap else "floor_consume_s"].append(consumed)
            del future
            if overlap:
                _count_and_clear(store, directory, extra, _settle(ctx))
            else:
                for key in _contents(directory)[0]:
                    store.evict(key)
            return elapsed

        return Trial(run=lambda: once(overlap=True), floor=lambda: once(overlap=False), extra=extra)

    return prepare


# -- the cases -----------------------------------------------------------------------------------


def cases(ctx: Context) -> list[Case]:
    """The chain, fan-out and pipelining cases (run after Ray has started)."""
    size = 8 * MB if ctx.quick else 100 * MB
    label = f"array-{size // MB}MB"
    repeats = 2 if ctx.quick else 3
    full = not ctx.quick
    found = []
    for workload in ("chain", "fanout"):
        for variant, uses_store in VARIANTS:
            name = f"{workload}/{variant}/{label}"
            target = None
            if full and uses_store:
                target = Target("<= 1.0x, 0 left", bound=1.0, also=Target("0 left", on="check"))
            found.append(
                Case(
                    name,
                    _workload_preparer(ctx, name, variant, workload, size, uses_store),
                    "plain ProcessPoolExecutor" if variant == "ray" else RAY_FLOOR[workload],
                    size=size,
                    target=target,
                    repeats=repeats,
                    warmup=1,
                    throughput=False,
                )
            )
    delay = 0.1 if ctx.quick else 0.5
    name = f"pipeline/proxy-future/{label}"
    found.append(
        Case(
            name,
            _pipeline_preparer(ctx, name, size, delay),
            "sequential (consumer submitted after the producer)",
            size=size,
            target=Target("<= 0.75x", bound=0.75) if full else None,
            repeats=2 if ctx.quick else 5,
            warmup=1,
            throughput=False,
        )
    )
    return found
