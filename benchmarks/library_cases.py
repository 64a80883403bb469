"""The standard workload with the data libraries users pass: numpy, torch, pandas, Arrow (issue 17).

The *standard workload* (as in :mod:`benchmarks.zero_copy_cases`): 8 tasks on 2 worker
processes, each given the same object of 100 MiB (8 MiB with ``--quick``) and reducing all of
it. The pool is a ``ProcessPoolExecutor(2)`` with the **spawn** start method (fork with torch
imported deadlocks the plain pool too); its workers are started, and have imported every
library, before anything is timed. The objects, and each task's reduction:

* ``numpy``: a float64 array; ``float(x.sum())``.
* ``torch``: a float32 tensor; ``float(x.sum())``.
* ``pandas``: a DataFrame of 4 float64 columns; ``float(df.sum().sum())``.
* ``arrow``: a ``pyarrow.Table`` of 4 float64 columns; the sum of ``pyarrow.compute.sum`` of
  each column.

The proxying side is ``ProxyExecutor`` over that pool with a FileStore under ``/dev/shm``
(copy-on-write, the default), submitting as a user would: whatever the adapters deliver to the
task (a proxy, or the object resolved before the body) is what the task reduces.

* ``library/<lib>/vs-pool/...``: against the same pool passing the object by value (torch's own
  reductions move a tensor into shared memory once; the others are pickled through the pipe per
  task). Target for torch: at most 1.0x.
* ``library/<lib>/vs-ray/...``: against Ray, ``ray.put(obj)`` then 8 tasks and ``ray.get``
  (Ray started once per run, see :meth:`benchmarks.context.Context.ray`). Target for torch: at
  most 0.5x. Skipped without Ray.
* ``library/<lib>/get-private/...`` (numpy, torch): the private memory (``Anonymous`` of
  ``/proc/self/smaps_rollup``, not RSS, which counts mapped file pages) that one ``get`` and a
  full reduction add to this process; the floor is the object's size (a copy is 1.0). Target
  for torch: under 10 MB.
* ``library/torch/put/...``: ``FileStore.set`` of the tensor against ``FileStore.set`` of a numpy
  array of the same bytes (each repetition a new object, the previous evicted outside the timed
  region). Target: at most 2x.

Every case reports as skipped when its library is not installed (``pip install -e '.[bench]'``).
The data libraries are imported only when a case of this module is prepared, after every
forked pool of the other modules exists.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import numpy as np

from benchmarks.context import Context
from benchmarks.harness import MB, Case, SkipCase, Target, Trial

TASKS = 8
WORKERS = 2
THRESHOLD = 1_000_000
LIBRARIES = ("numpy", "torch", "pandas", "arrow")
_MODULES = {"numpy": "numpy", "torch": "torch", "pandas": "pandas", "arrow": "pyarrow"}


def _label(library: str, size: int) -> str:
    kind = {"numpy": "array", "torch": "tensor", "pandas": "frame", "arrow": "table"}[library]
    return f"{kind}-{size // MB}MB"


def cases(ctx: Context) -> list[Case]:
    """The cases of every library (run after every forked pool exists)."""
    size = 8 * MB if ctx.quick else 100 * MB
    full = not ctx.quick
    repeats = 2 if ctx.quick else 5
    found = []
    for library in LIBRARIES:
        label = _label(library, size)
        torch_target = full and library == "torch"
        found.append(
            Case(
                f"library/{library}/vs-pool/{label}",
                _workload_preparer(ctx, library, size, against="pool"),
                "plain ProcessPoolExecutor (spawn)",
                size=size,
                target=Target("<= 1.0x", bound=1.0) if torch_target else None,
                repeats=repeats,
                warmup=2,
                throughput=False,
            )
        )
        found.append(
            Case(
                f"library/{library}/vs-ray/{label}",
                _workload_preparer(ctx, library, size, against="ray"),
                "Ray put + 8 tasks",
                size=size,
                target=Target("<= 0.5x", bound=0.5) if torch_target else None,
                repeats=repeats,
                warmup=2,
                throughput=False,
            )
        )
    for library in ("numpy", "torch"):
        label = _label(library, size)
        found.append(
            Case(
                f"library/{library}/get-private/{label}",
                _private_preparer(ctx, library, size),
                "object size",
                size=size,
                unit="B",
                target=(
                    Target("< 10 MB", on="median", bound=10 * MB, strict=True)
                    if full and library == "torch"
                    else None
                ),
                repeats=3 if ctx.quick else 5,
                throughput=False,
            )
        )
    found.append(
        Case(
            f"library/torch/put/{_label('torch', size)}",
            _put_preparer(ctx, size),
            "FileStore.set of a numpy array of the same bytes",
            size=size,
            target=Target("<= 2x", bound=2.0) if full else None,
            repeats=3 if ctx.quick else 7,
            warmup=2,
        )
    )
    return found


# -- the objects and the tasks (module level: the spawned workers import them by name) ----------


def _require(library: str) -> Any:
    try:
        return importlib.import_module(_MODULES[library])
    except ImportError as exc:
        raise SkipCase(
            f"{_MODULES[library]} is not installed (python -m pip install -e '.[bench]')"
        ) from exc


def make_object(library: str, size: int) -> Any:
    """The workload's object of ``library``, ``size`` bytes of random data."""
    rng = np.random.default_rng(0)
    if library == "numpy":
        return rng.random(size // 8)
    if library == "torch":
        torch = _require("torch")
        return torch.from_numpy(rng.random(size // 4, dtype=np.float32)).clone()
    columns = {name: rng.random(size // 8 // 4) for name in "abcd"}
    if library == "pandas":
        return _require("pandas").DataFrame(
            np.column_stack(list(columns.values())), columns=list("abcd")
        )
    return _require("arrow").table(columns)


def reduce_object(obj: Any) -> float:
    """A task's reduction of the whole object (the object, or a proxy of it)."""
    if hasattr(obj, "columns") and hasattr(obj, "num_rows"):  # an Arrow table
        compute = importlib.import_module("pyarrow.compute")
        return float(sum(compute.sum(column).as_py() for column in obj.columns))
    if hasattr(obj, "columns"):  # a pandas DataFrame
        return float(obj.sum().sum())
    return float(obj.sum())


def reduce_task(obj: Any, index: int) -> float:
    """The task: reduce the object; the index keeps the 8 results apart."""
    return reduce_object(obj) + index


def import_libraries(delay: float) -> int:
    """In a worker: import every installed library of the workload; return the process id."""
    for module in _MODULES.values():
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    time.sleep(delay)
    return os.getpid()


def _spawn_pool(ctx: Context) -> ProcessPoolExecutor:
    pool = ctx.process_pool("library-spawn", WORKERS, method="spawn")
    seen: set[int] = set()
    for _ in range(20):
        seen.update(pool.map(import_libraries, [0.2] * WORKERS * 2, timeout=300))
        if len(seen) >= WORKERS:
            return pool
    raise RuntimeError(f"only {len(seen)} of {WORKERS} spawned workers ran a task")


def _run_tasks(
    executor: Any, obj: Any, expected: float, times: dict[str, list[float]] | None
) -> float:
    """Submit the 8 tasks, wait, check the results; return the wall time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        futures = [executor.submit(reduce_task, obj, 0)]
        first = time.perf_counter()
        futures += [executor.submit(reduce_task, obj, index) for index in range(1, TASKS)]
        submitted = time.perf_counter()
        results = [future.result(timeout=900) for future in futures]
        end = time.perf_counter()
    _check(results, expected)
    if times is not None:
        times["submit_s"].append(submitted - start)
        times["first_submit_s"].append(first - start)
        times["tasks_s"].append(end - submitted)
    return end - start


def _check(results: list[float], expected: float) -> None:
    # float32 sums may differ in the last bits with the number of threads summing.
    if not all(abs(r - expected - i) <= 1e-4 * abs(expected) for i, r in enumerate(results)):
        raise RuntimeError(f"a task returned a wrong result: {results} (expected {expected})")


def _ray_tasks(ray: Any, remote: Any, obj: Any, expected: float) -> float:
    start = time.perf_counter()
    ref = ray.put(obj)
    refs = [remote.remote(ref, index) for index in range(TASKS)]
    results = ray.get(refs, timeout=900)
    elapsed = time.perf_counter() - start
    _check(results, expected)
    del ref, refs
    return elapsed


def _workload_preparer(
    ctx: Context, library: str, size: int, *, against: str
) -> Callable[[], Trial]:
    def prepare() -> Trial:
        obj = make_object(library, size)
        expected = reduce_object(obj)
        pool = _spawn_pool(ctx)
        store = ctx.store("file-shm", cache_size=1, purpose=f"library-{library}")
        futures = importlib.import_module("proxystore.integrations.futures")
        proxying = futures.ProxyExecutor(pool, store=store, threshold=THRESHOLD)
        times: dict[str, list[float]] = {"submit_s": [], "first_submit_s": [], "tasks_s": []}
        floor: Callable[[], float]
        if against == "pool":
            floor_times: dict[str, list[float]] = {
                "submit_s": [],
                "first_submit_s": [],
                "tasks_s": [],
            }
            floor = lambda: _run_tasks(pool, obj, expected, floor_times)  # noqa: E731
            extra = {**times, "floor_submit_s": floor_times["submit_s"]}
        else:
            ray = ctx.ray()
            remote = ray.remote(num_cpus=1)(reduce_task)
            floor = lambda: _ray_tasks(ray, remote, obj, expected)  # noqa: E731
            extra = times

        return Trial(
            run=lambda: _run_tasks(proxying, obj, expected, times), floor=floor, extra=extra
        )

    return prepare


# -- one get's private memory, and the put -------------------------------------------------------


def anonymous_bytes() -> int:
    """This process's anonymous (private, written) memory: ``/proc/self/smaps_rollup``."""
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Anonymous line in /proc/self/smaps_rollup")


def _private_preparer(ctx: Context, library: str, size: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        if not os.path.exists("/proc/self/smaps_rollup"):
            raise SkipCase("needs /proc/self/smaps_rollup (Linux 4.14+)")
        obj = make_object(library, size)
        expected = reduce_object(obj)
        store = ctx.store("file-shm", cache_size=0, purpose=f"library-get-{library}")
        key = store.set(obj)
        del obj
        extra: dict[str, list[float]] = {"get_s": []}

        def run() -> float:
            gc.collect()
            before = anonymous_bytes()
            start = time.perf_counter()
            got = store.get(key)
            extra["get_s"].append(time.perf_counter() - start)
            _check([reduce_object(got)], expected)
            grown = anonymous_bytes() - before
            del got
            return float(max(grown, 0))

        return Trial(run=run, floor_value=float(size), close=lambda: store.evict(key), extra=extra)

    return prepare


def _put_preparer(ctx: Context, size: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        tensor = make_object("torch", size)
        array = tensor.numpy().copy()  # the same bytes, a numpy array
        store = ctx.store("file-shm", cache_size=0, purpose="library-put")
        keys: list[str] = []

        def put(obj: Any) -> float:
            for key in keys:  # drop the previous repetition's object, outside the timed region
                store.evict(key)
            keys.clear()
            start = time.perf_counter()
            keys.append(store.set(obj))
            return time.perf_counter() - start

        def close() -> None:
            for key in keys:
                store.evict(key)

        return Trial(run=lambda: put(tensor), floor=lambda: put(array), close=close)

    return prepare
