"""Arguments below the threshold: the proxying engines against the plain ones (issue 12).

Every argument of these cases stays below the proxying threshold (1 MB), so nothing is
stored: the case measures what wrapping the engine costs when it should cost nothing. Each
case runs a batch of tasks through the proxying engine and, interleaved in the same run, the
same batch through the plain engine it wraps (its floor); the value is the wall time from the
first ``submit`` to the last result.

* ``overhead/futures/tiny-<n>``: ``n`` tasks ``f(i)`` (an int in, an int out) on a
  ``ProcessPoolExecutor(2)`` (fork), against ``ProxyExecutor`` over the same pool. Target:
  at most 1.03x.
* ``overhead/futures/dict-100KB-<n>``: ``n`` tasks each given a distinct dict of 5,000 floats
  (about 100 KB pickled); each task sums the values. Target: at most 1.05x.
* ``overhead/dask/tiny-<n>``: ``n`` tasks ``f(i)`` (``pure=False``) on a 2-process Dask
  ``LocalCluster``, ``ProxyClient`` against the plain ``Client``. Target: at most 1.03x.
* ``overhead/parsl/tiny-<n>``: ``n`` calls of a ``@python_app`` ``f(i)`` on a Parsl
  ``ThreadPoolExecutor`` with 2 threads, ``proxy_app`` against the plain app. A thread pool
  is chosen because it measures the submit path (the DataFlowKernel plus the wrapper) with
  no interchange or worker processes whose polling intervals dominate and vary between
  batches. Target: at most 1.03x. Skipped, with the reason, when Parsl is not installed.

The store of the proxying engines is a FileStore under ``/dev/shm`` (never written here).
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
import time
from typing import Any, Callable

from benchmarks.context import Context
from benchmarks.harness import Case, SkipCase, Target, Trial

THRESHOLD = 1_000_000
WORKERS = 2
REPEATS = 21
"""Repetitions of the short cases (each batch well under a second): the ratios sit within a
few percent of 1, so the medians need more samples than the default 9 to settle (Dask's
batches take over a second and keep 9)."""
DICT_FLOATS = 5_000


def _integration(name: str) -> Any:
    return importlib.import_module(f"proxystore.integrations.{name}")


def tiny_task(i: int) -> int:
    """A task's body for the tiny cases."""
    return i + 1


def dict_task(values: dict[str, float]) -> float:
    """A task's body for the dict cases: read every value."""
    return float(sum(values.values()))


def _dicts(count: int) -> list[dict[str, float]]:
    """``count`` distinct dicts of :data:`DICT_FLOATS` floats (about 100 KB pickled each)."""
    return [
        {f"k{j}": float(i * DICT_FLOATS + j) * 0.5 for j in range(DICT_FLOATS)}
        for i in range(count)
    ]


def cases(ctx: Context) -> list[Case]:
    """The below-threshold cases: pools first (forked before Dask and Parsl start threads)."""
    return [*pool_cases(ctx), *other_cases(ctx)]


def pool_cases(ctx: Context) -> list[Case]:
    """The ``ProcessPoolExecutor`` cases (they fork their workers)."""
    tiny = 200 if ctx.quick else 2000
    dicts = 20 if ctx.quick else 200
    repeats = 3 if ctx.quick else REPEATS
    return [
        Case(
            f"overhead/futures/tiny-{tiny}",
            _futures_preparer(ctx, tiny, kind="tiny"),
            "plain ProcessPoolExecutor(2)",
            target=Target("<= 1.03x", bound=1.03),
            repeats=repeats,
            throughput=False,
        ),
        Case(
            f"overhead/futures/dict-100KB-{dicts}",
            _futures_preparer(ctx, dicts, kind="dict"),
            "plain ProcessPoolExecutor(2)",
            target=Target("<= 1.05x", bound=1.05),
            repeats=repeats,
            throughput=False,
        ),
    ]


def other_cases(ctx: Context) -> list[Case]:
    """The Dask and Parsl cases."""
    dask_tasks = 50 if ctx.quick else 500
    parsl_tasks = 50 if ctx.quick else 500
    repeats = 3 if ctx.quick else 9
    return [
        Case(
            f"overhead/dask/tiny-{dask_tasks}",
            _dask_preparer(ctx, dask_tasks),
            "plain Dask Client (2-process LocalCluster)",
            target=Target("<= 1.03x", bound=1.03),
            repeats=repeats,
            throughput=False,
        ),
        Case(
            f"overhead/parsl/tiny-{parsl_tasks}",
            _parsl_preparer(ctx, parsl_tasks),
            "plain python_app (Parsl ThreadPoolExecutor, 2 threads)",
            target=Target("<= 1.03x", bound=1.03),
            repeats=3 if ctx.quick else REPEATS,
            throughput=False,
        ),
    ]


def _batch(submit: Callable[..., Any], fn: Callable[..., Any], args: list[Any]) -> float:
    """Submit ``fn(arg)`` for every ``arg``, wait for every result; return the wall time."""
    start = time.perf_counter()
    futures = [submit(fn, arg) for arg in args]
    results = [future.result(timeout=600) for future in futures]
    elapsed = time.perf_counter() - start
    if len(results) != len(args):
        raise RuntimeError("a batch lost results")
    return elapsed


def _futures_preparer(ctx: Context, count: int, *, kind: str) -> Callable[[], Trial]:
    def prepare() -> Trial:
        from benchmarks.zero_copy_cases import _start_workers

        pool = ctx.process_pool("overhead", WORKERS)
        _start_workers(pool, WORKERS)
        store = ctx.store("file-shm", cache_size=0, purpose="overhead")
        proxying = _integration("futures").ProxyExecutor(pool, store=store, threshold=THRESHOLD)
        fn: Callable[..., Any]
        args: list[Any]
        if kind == "tiny":
            fn, args = tiny_task, list(range(count))
        else:
            fn, args = dict_task, _dicts(count)
        return Trial(
            run=lambda: _batch(proxying.submit, fn, args),
            floor=lambda: _batch(pool.submit, fn, args),
        )

    return prepare


def _dask_preparer(ctx: Context, count: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        client = ctx.dask_client(WORKERS)
        client.wait_for_workers(WORKERS, timeout=120)
        store = ctx.store("file-shm", cache_size=0, purpose="overhead-dask")
        proxying = _integration("dask").ProxyClient(client, store=store, threshold=THRESHOLD)
        args = list(range(count))

        def plain(fn: Callable[..., Any], arg: Any) -> Any:
            return client.submit(fn, arg, pure=False)

        def proxied(fn: Callable[..., Any], arg: Any) -> Any:
            return proxying.submit(fn, arg, pure=False)

        return Trial(
            run=lambda: _batch(proxied, tiny_task, args),
            floor=lambda: _batch(plain, tiny_task, args),
        )

    return prepare


def parsl_dfk(ctx: Context) -> Any:
    """A Parsl DataFlowKernel with a 2-thread ``ThreadPoolExecutor`` (cleaned up at the end)."""

    def make() -> Any:
        try:
            import parsl
            from parsl.config import Config
            from parsl.executors import ThreadPoolExecutor
        except ImportError as exc:
            raise SkipCase(f"Parsl is not installed ({exc})") from exc
        run_dir = tempfile.mkdtemp(prefix="proxystore-bench-parsl-")
        config = Config(
            executors=[ThreadPoolExecutor(label="threads", max_threads=WORKERS)],
            run_dir=run_dir,
            strategy="none",
            initialize_logging=False,
        )
        dfk = parsl.load(config)

        def close() -> None:
            dfk.cleanup()
            parsl.clear()
            shutil.rmtree(run_dir, ignore_errors=True)

        ctx.exit.callback(close)
        return dfk

    return ctx.resource("parsl-dfk", make)


def _parsl_preparer(ctx: Context, count: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        parsl_dfk(ctx)
        from parsl import python_app

        store = ctx.store("file-shm", cache_size=0, purpose="overhead-parsl")
        plain_app = python_app(tiny_task, executors=["threads"])
        proxied_app = _integration("parsl").proxy_app(store=store, threshold=THRESHOLD)(
            python_app(tiny_task, executors=["threads"])
        )
        args = list(range(count))

        def plain(fn: Callable[..., Any], arg: Any) -> Any:
            return plain_app(arg)

        def proxied(fn: Callable[..., Any], arg: Any) -> Any:
            return proxied_app(arg)

        return Trial(
            run=lambda: _batch(proxied, tiny_task, args),
            floor=lambda: _batch(plain, tiny_task, args),
        )

    return prepare
