"""Same-host zero-copy: one large array handed to many tasks on a machine (issue 6's benchmarks).

The *standard workload*: 8 tasks on 2 worker processes, each given the same float64 array of
100 MB (8 MB in quick mode) and reading all of it (a sum). The store is a FileStore in a
directory under ``/dev/shm`` (tmpfs), so it memory-maps what it stores: copy-on-write by default
(each ``get`` maps the file privately; not cached), or read-only with ``readonly=True`` (the
array is mapped once per process and cached; ``cache_size=1`` here, enough for the one key a
repetition uses). The worker processes are started before anything is timed.

* ``zero-copy/process-pool/<cow|readonly>/...``: ``ProxyExecutor`` over a
  ``ProcessPoolExecutor``; the floor is the same pool passing the array by value, interleaved
  in the same run. The target is both absolute (at most 0.1 s) and relative (at least 15x
  faster than the floor, a ratio of at most 1/15). The time spent in the 8 ``submit`` calls
  (the first stores the array: the one-time write into tmpfs) is ``submit_s``, the first call
  alone ``first_submit_s``, and the time from the last ``submit`` to the last result
  ``tasks_s``; ``floor_submit_s`` is the plain pool's ``submit`` time.
* ``zero-copy/dask/...``: ``ProxyClient`` over a Dask client on a 2-process ``LocalCluster``
  against ``client.scatter(array)`` followed by 8 submits of the scattered future, in the same
  run (both with ``pure=False``). ``vs-scatter`` uses ``scatter``'s defaults (it hashes the
  array to name it); ``vs-scatter-unhashed`` passes ``hash=False``, a faster floor.
  ``floor_scatter_s`` is the time in ``scatter``.
* ``zero-copy/resolve/fresh-process/...``: each repetition starts a fresh ``python``
  (:mod:`benchmarks.resolve_probe`) that imports numpy and proxystore, imports
  :mod:`proxystore.store.file` (timed separately: ``import_s``), unpickles a proxy of the
  array (``unpickle_s``) and times :func:`proxystore.proxy.extract`: the store re-created from
  the proxy's factory, the file mapped, the array rebuilt on the mapping, no data touched. The
  floor is a fresh process mapping the same file by hand (``open``, ``fstat``, ``mmap``,
  ``numpy.frombuffer``).
* ``zero-copy/memory/<cow|readonly>/...``: the standard workload again, with a background
  thread sampling the used space of the store directory's file system (``os.statvfs``) and
  the ``RssAnon``/``RssShmem`` of both worker processes. The value is the peak used space
  above the baseline taken just before the first ``submit``; the floor is the array's size,
  so one shared copy is a ratio of 1.0 and a copy per task would be 8. The extras are each
  worker's peak increase of private (anonymous) memory and of mapped shared memory (largest
  of the two workers), and the used space left once the last task is done, above what was
  used before the case's first repetition (``after_bytes``, after waiting up to half a second
  for the eviction): what is still held after the store evicted the array.

With ``PROXYSTORE_BENCH_HUGE_TMPFS`` naming a directory on a tmpfs mounted with huge pages
(``huge=within_size``; mounting needs root), ``zero-copy/process-pool/<cow|readonly>-huge/...``
run the standard workload with the store there too: same code, 2 MiB pages instead of 4 KiB.

The file system is shared with everything else on the machine: other programs writing to
``/dev/shm`` during a repetition count too, which the median over repetitions tolerates.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import numpy as np

from benchmarks.context import Context
from benchmarks.executor_cases import _sum_task
from benchmarks.harness import MB, Case, Target, Trial, huge_tmpfs
from proxystore.proxy import get_key

TASKS = 8
WORKERS = 2
THRESHOLD = 1_000_000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STANDARD = Target(
    "<= 0.1s and >= 15x faster",
    on="median",
    bound=0.1,
    also=Target("", on="ratio", bound=1 / 15),
)
"""Issue 6: the standard workload in at most 0.1 s, at least 15x faster than the plain pool."""


def _integration(name: str) -> Any:
    # proxystore.integrations is mapped from integrations/ by the package metadata, which type
    # checkers do not follow: import it by name.
    return importlib.import_module(f"proxystore.integrations.{name}")


def _label(size: int) -> str:
    return f"array-{size // MB}MB"


def pool_cases(ctx: Context) -> list[Case]:
    """The cases that fork process pools (they run before any Dask cluster starts threads)."""
    size = 8 * MB if ctx.quick else 100 * MB
    label = _label(size)
    repeats = 2 if ctx.quick else 5
    modes = [("cow", "file-shm"), ("readonly", "file-shm")]
    if huge_tmpfs() is not None:
        modes += [("cow-huge", "file-huge"), ("readonly-huge", "file-huge")]
    found = [
        Case(
            f"zero-copy/process-pool/{mode}/{label}",
            _pool_preparer(ctx, size, readonly=mode.startswith("readonly"), kind=kind),
            "plain ProcessPoolExecutor",
            size=size,
            target=None if ctx.quick else STANDARD,
            repeats=repeats,
            throughput=False,
        )
        for mode, kind in modes
    ]
    found += [
        Case(
            f"zero-copy/memory/{mode}/{label}",
            _memory_preparer(ctx, size, readonly=mode == "readonly"),
            "array size",
            size=size,
            unit="B",
            target=None if ctx.quick else Target("~1x (<= 1.1x)", bound=1.1),
            repeats=2 if ctx.quick else 5,
            throughput=False,
        )
        for mode in ("cow", "readonly")
    ]
    return found


def other_cases(ctx: Context) -> list[Case]:
    """The Dask and fresh-process cases (after the process pools are forked)."""
    size = 8 * MB if ctx.quick else 100 * MB
    label = _label(size)
    repeats = 2 if ctx.quick else 5
    faster = None if ctx.quick else Target("< 1x", bound=1.0, strict=True)
    found = [
        Case(
            f"zero-copy/dask/{variant}/{label}",
            _dask_preparer(ctx, size, hashed=variant == "vs-scatter"),
            "client.scatter" + ("" if variant == "vs-scatter" else "(hash=False)") + " + submits",
            size=size,
            target=faster,
            repeats=repeats,
            throughput=False,
        )
        for variant in ("vs-scatter", "vs-scatter-unhashed")
    ]
    found.append(
        Case(
            f"zero-copy/resolve/fresh-process/{label}",
            _resolve_preparer(ctx, size),
            "raw mmap in a fresh process",
            size=size,
            target=None if ctx.quick else Target("< 1ms", on="median", bound=1e-3, strict=True),
            repeats=3 if ctx.quick else 9,
            throughput=False,
        )
    )
    return found


def cases(ctx: Context) -> list[Case]:
    """Every zero-copy case, in the order they run."""
    return [*pool_cases(ctx), *other_cases(ctx)]


# -- the standard workload -----------------------------------------------------------------------


def _start_workers(pool: ProcessPoolExecutor, workers: int) -> list[int]:
    """Start every worker of ``pool`` (before anything is timed); return their process ids."""
    seen: set[int] = set()
    for _ in range(50):
        seen.update(pool.map(_pid_after, [0.05] * workers * 2))
        if len(seen) >= workers:
            return sorted(seen)
    raise RuntimeError(f"only {len(seen)} of {workers} pool workers ran a task")


def _pid_after(delay: float) -> int:
    time.sleep(delay)
    return os.getpid()


def _workload(executor: Any, array: np.ndarray, times: dict[str, list[float]] | None) -> float:
    """Submit the 8 tasks, wait for them, check the results; return the wall time.

    Args:
        executor: ``submit(fn, *args)`` of a concurrent.futures executor (or a Dask client
            wrapped to take ``pure=False``).
        array: The array every task is given.
        times: Where to append ``submit_s``, ``first_submit_s`` and ``tasks_s`` (or ``None``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dask warns about large arguments
        start = time.perf_counter()
        futures = [executor.submit(_sum_task, array, 0)]
        first = time.perf_counter()
        futures += [executor.submit(_sum_task, array, index) for index in range(1, TASKS)]
        submitted = time.perf_counter()
        results = [future.result(timeout=900) for future in futures]
        end = time.perf_counter()
    _check_results(array, results)
    if times is not None:
        times["submit_s"].append(submitted - start)
        times["first_submit_s"].append(first - start)
        times["tasks_s"].append(end - submitted)
    return end - start


def _check_results(array: np.ndarray, results: list[float]) -> None:
    expected = float(array.sum())
    if not all(abs(r - expected - i) < 1e-6 * abs(expected) for i, r in enumerate(results)):
        raise RuntimeError("a task returned a wrong result")


def _standard_setup(
    ctx: Context, size: int, *, readonly: bool, pool_name: str, kind: str = "file-shm"
) -> tuple[ProcessPoolExecutor, list[int], Any, np.ndarray]:
    """The pool (workers started), its pids, a ProxyExecutor over it and the array."""
    pool = ctx.process_pool(pool_name, WORKERS)
    pids = _start_workers(pool, WORKERS)
    if readonly:
        store = ctx.store(kind, cache_size=1, purpose="zero-copy-ro", readonly=True)
    else:
        store = ctx.store(kind, cache_size=1, purpose="zero-copy")
    proxying = _integration("futures").ProxyExecutor(pool, store=store, threshold=THRESHOLD)
    array = np.random.default_rng(0).random(size // 8)
    return pool, pids, proxying, array


def _pool_preparer(ctx: Context, size: int, *, readonly: bool, kind: str) -> Callable[[], Trial]:
    def prepare() -> Trial:
        pool, _, proxying, array = _standard_setup(
            ctx, size, readonly=readonly, pool_name="zero-copy", kind=kind
        )
        times: dict[str, list[float]] = {"submit_s": [], "first_submit_s": [], "tasks_s": []}
        floor_times: dict[str, list[float]] = {
            "submit_s": [],
            "first_submit_s": [],
            "tasks_s": [],
        }
        extra = {**times, "floor_submit_s": floor_times["submit_s"]}

        return Trial(
            run=lambda: _workload(proxying, array, times),
            floor=lambda: _workload(pool, array, floor_times),
            extra=extra,
        )

    return prepare


# -- Dask ----------------------------------------------------------------------------------------


class _Unpure:
    """``submit(fn, *args)`` on a Dask client, with ``pure=False`` (no reuse of results)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)


def _dask_preparer(ctx: Context, size: int, *, hashed: bool) -> Callable[[], Trial]:
    def prepare() -> Trial:
        client = ctx.dask_client(WORKERS)
        client.wait_for_workers(WORKERS, timeout=120)
        store = ctx.store("file-shm", cache_size=1, purpose="zero-copy-dask")
        proxying = _integration("dask").ProxyClient(client, store=store, threshold=THRESHOLD)
        array = np.random.default_rng(0).random(size // 8)
        times: dict[str, list[float]] = {"submit_s": [], "first_submit_s": [], "tasks_s": []}
        extra = {**times, "floor_scatter_s": [], "floor_submit_s": []}

        def floor() -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                data = client.scatter(array) if hashed else client.scatter(array, hash=False)
                scattered = time.perf_counter()
                futures = [
                    client.submit(_sum_task, data, index, pure=False) for index in range(TASKS)
                ]
                submitted = time.perf_counter()
                results = [future.result(timeout=900) for future in futures]
                end = time.perf_counter()
            _check_results(array, results)
            extra["floor_scatter_s"].append(scattered - start)
            extra["floor_submit_s"].append(submitted - start)
            del data, futures
            return end - start

        return Trial(
            run=lambda: _workload(_Unpure(proxying), array, times),
            floor=floor,
            extra=extra,
        )

    return prepare


# -- resolving in a fresh process ----------------------------------------------------------------


def _probe_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [ROOT, *filter(None, [environment.get("PYTHONPATH")])]
    )
    return environment


def _probe(args: list[str], stdin: bytes, environment: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.resolve_probe", *args],
        input=stdin,
        capture_output=True,
        env=environment,
        cwd=ROOT,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"resolve probe failed: {done.stderr.decode().strip()[-500:]}")
    measured: dict[str, float] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return measured


def _resolve_preparer(ctx: Context, size: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        store = ctx.store("file-shm", cache_size=1, purpose="zero-copy-resolve")
        array = np.random.default_rng(0).random(size // 8)
        proxy = store.proxy(array)
        key = get_key(proxy)
        assert key is not None
        path = os.path.join(str(getattr(store, "store_dir", "")), key)
        if not os.path.isfile(path):
            raise RuntimeError(f"the FileStore did not write {path}")
        pickled = pickle.dumps(proxy)
        shape = ",".join(str(n) for n in array.shape)
        environment = _probe_environment()
        extra: dict[str, list[float]] = {"import_s": [], "unpickle_s": []}

        def run() -> float:
            measured = _probe(["proxy", shape], pickled, environment)
            extra["import_s"].append(measured["import_s"])
            extra["unpickle_s"].append(measured["unpickle_s"])
            return measured["resolve_s"]

        def floor() -> float:
            return _probe(["raw", path, str(array.nbytes)], b"", environment)["resolve_s"]

        return Trial(run=run, floor=floor, close=lambda: store.evict(key), extra=extra)

    return prepare


# -- peak memory ---------------------------------------------------------------------------------


def used_bytes(path: str) -> int:
    """Used space of the file system holding ``path`` (``os.statvfs``)."""
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def _status(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    """Fields of ``/proc/<pid>/status`` in bytes (missing ones are left out)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in fields:
                    found[name] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return found


class Sampler:
    """Samples a file system's used space and processes' memory in a background thread.

    Args:
        path: A path on the file system to watch.
        pids: Processes whose ``RssAnon`` and ``RssShmem`` are watched.
        interval: Seconds between samples.
    """

    FIELDS = ("RssAnon", "RssShmem")

    def __init__(self, path: str, pids: list[int], interval: float = 0.0005) -> None:
        self.path = path
        self.pids = pids
        self.interval = interval
        self.baseline = used_bytes(path)
        self.peak = self.baseline
        self.start = {pid: _status(pid, self.FIELDS) for pid in pids}
        self.highest = {pid: dict(fields) for pid, fields in self.start.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="zero-copy-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        self.peak = max(self.peak, used_bytes(self.path))
        for pid in self.pids:
            highest = self.highest[pid]
            for name, value in _status(pid, self.FIELDS).items():
                highest[name] = max(highest.get(name, 0), value)

    def increase(self, field: str) -> int:
        """The largest increase of ``field`` over its starting value, among the processes."""
        return max(
            (self.highest[pid].get(field, 0) - self.start[pid].get(field, 0) for pid in self.pids),
            default=0,
        )


def _memory_preparer(ctx: Context, size: int, *, readonly: bool) -> Callable[[], Trial]:
    def prepare() -> Trial:
        pool_name = "zero-copy-memory-ro" if readonly else "zero-copy-memory"
        _, pids, proxying, array = _standard_setup(
            ctx, size, readonly=readonly, pool_name=pool_name
        )
        store_dir = str(proxying.store.store_dir)
        initial = used_bytes(store_dir)
        extra: dict[str, list[float]] = {
            "worker_anon_peak_bytes": [],
            "worker_shmem_peak_bytes": [],
            "after_bytes": [],
            "baseline_bytes": [],
        }

        def run() -> float:
            with Sampler(store_dir, pids) as sampler:
                _workload(proxying, array, None)
            deadline = time.monotonic() + 0.5
            while used_bytes(store_dir) - initial > size // 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            extra["after_bytes"].append(float(used_bytes(store_dir) - initial))
            extra["worker_anon_peak_bytes"].append(float(sampler.increase("RssAnon")))
            extra["worker_shmem_peak_bytes"].append(float(sampler.increase("RssShmem")))
            extra["baseline_bytes"].append(float(sampler.baseline))
            return float(sampler.peak - sampler.baseline)

        return Trial(run=run, floor_value=float(size), extra=extra)

    return prepare
