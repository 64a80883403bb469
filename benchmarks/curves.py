"""How cost grows: curves of time and memory against size, tasks and workers (issue 12).

``python -m benchmarks.curves`` measures three sweeps, writes their data as JSON and draws them
as SVG figures with matplotlib (into ``docs/_static/benchmarks/`` unless ``--out`` says
otherwise)::

    python -m benchmarks.curves                  # every sweep, full ranges
    python -m benchmarks.curves --quick          # tiny ranges (what CI runs)
    python -m benchmarks.curves --sweep size --max-size 1073741824

* **size**: ``put`` then ``get`` (cache off) of a float64 array, 1 KB to 4 GB, on each store
  (``local``, ``file-shm``, ``file-tmp``, ``redis``) against its raw floor (as in
  :mod:`benchmarks.store_cases`: a numpy copy, raw file write+read in the same directory,
  redis-py ``set``+``get``), and Ray's ``put``+``get`` when Ray is installed. The top size is
  capped so that six copies fit in the available memory (``MemAvailable``); the figure says
  where. redis-py cannot ``set`` values over Redis' 512 MB bulk limit, so the Redis floor
  stops there. Peak memory of each round trip (fresh process, :mod:`benchmarks.memory_probe`)
  for sizes of 1 MB and up, against the object's own size.
* **tasks**: total time of ``n`` tasks, 1 to 10,000, on 2 worker processes: the plain
  ``ProcessPoolExecutor(2)``, ``ProxyExecutor`` over it (FileStore under ``/dev/shm``) and Ray
  (2 CPUs), with arguments below the threshold (``f(i)``) and above it (every task given the
  same 1 MB array, threshold 1,000,000 bytes; Ray puts it once).
* **workers**: the standard workload (8 tasks, the same 100 MB array) on 1, 2 and 4 worker
  processes: plain pool, ``ProxyExecutor`` copy-on-write and read-only, Ray (``num_cpus=4``,
  tasks taking ``4 / workers`` CPUs each, so at most ``workers`` run at once).

Every point measures its variants interleaved (rotating their order each repetition) and keeps
the median. Without matplotlib the data is still written, and the figures are skipped with a
message; without Ray its lines are left out.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks import store_cases
from benchmarks.context import RAY_MISSING, ROOT, Context
from benchmarks.executor_cases import _sum_task
from benchmarks.harness import (
    MB,
    Case,
    SkipCase,
    Trial,
    format_size,
    machine_info,
    run_case,
    write_json,
)
from benchmarks.memory_cases import run_memory_probe
from benchmarks.overhead_cases import tiny_task
from benchmarks.ray_cases import ray_standard
from benchmarks.zero_copy_cases import _start_workers, _workload

OUT = os.path.join(ROOT, "docs", "_static", "benchmarks")
STORES = ["local", "file-shm", "file-tmp", "redis"]
FULL_SIZES = [2**10 * 8**i for i in range(7)] + [2**30, 2 * 2**30, 4 * 2**30]  # 1KB .. 4GB
QUICK_SIZES = [2**10, 64 * 2**10, MB]
FULL_TASKS = [1, 10, 100, 1000, 10_000]
QUICK_TASKS = [1, 10, 50]
WORKER_COUNTS = [1, 2, 4]
THRESHOLD = 1_000_000
REDIS_BULK_LIMIT = 512 * MB
SAFETY = 6
"""The top size is capped so that this many copies of it fit in the available memory."""


def mem_available() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (total RAM elsewhere)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def interleave(
    variants: dict[str, Callable[[], float]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Run each variant ``warmup`` times, then ``repeats`` times, rotating the order each round."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    values: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            values[name].append(variants[name]())
    return values


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _try_ray(ctx: Context, cpus: int) -> Any:
    try:
        return ctx.ray(cpus)
    except SkipCase as exc:
        print(f"  without Ray: {exc}", file=sys.stderr)
        return None


def _same(trial: Trial) -> Trial:
    return trial


# -- size ----------------------------------------------------------------------------------------


def sweep_size(ctx: Context, sizes: list[int], ray: Any) -> dict[str, Any]:
    """Time of put+get and peak memory against size, each store against its floor."""
    points: list[dict[str, Any]] = []
    for size in sizes:
        repeats = 3 if size < 256 * MB else 2
        for kind in STORES:
            sys.stderr.write(f"  size {format_size(size)} {kind} ...")
            sys.stderr.flush()
            start = time.perf_counter()
            if kind == "redis" and size > REDIS_BULK_LIMIT:
                trial = _store_only(ctx, kind, size)  # redis-py cannot set such a value
            else:
                trial = store_cases._prepare(ctx, kind, "put+get", "array", size)
            point: dict[str, Any] = {"size": size, "store": kind}
            case = Case(f"curve/{kind}/{size}", functools.partial(_same, trial), "floor")
            result = run_case(case, repeats, 0 if size >= 256 * MB else 1)
            point.update(time=result.median, floor=result.floor_median, ratio=result.ratio)
            if size >= MB:
                point["peak_bytes"] = _peak_memory(ctx, kind, size)
            points.append(point)
            sys.stderr.write(f" {time.perf_counter() - start:.1f}s\n")
        if ray is not None:
            array = np.random.default_rng(0).random(size // 8)

            def ray_roundtrip(array: np.ndarray = array) -> float:
                start = time.perf_counter()
                ref = ray.put(array)
                ray.get(ref, timeout=600)
                elapsed = time.perf_counter() - start
                del ref
                return elapsed

            values = interleave({"ray": ray_roundtrip}, repeats, 1)
            points.append({"size": size, "store": "ray", "time": _median(values["ray"])})
            del array
    return {"points": points}


def _store_only(ctx: Context, kind: str, size: int) -> Trial:
    """put+get on the store with no floor (where the raw backend cannot take the object)."""
    store = ctx.store(kind, cache_size=0)
    array = np.random.default_rng(0).random(size // 8)
    key = store.set(array)

    def put_get() -> float:
        start = time.perf_counter()
        store.set(array, key=key)
        store.get(key)
        return time.perf_counter() - start

    return Trial(run=put_get, close=lambda: store.evict(key))


def _peak_memory(ctx: Context, kind: str, size: int) -> float | None:
    store_type, kwargs = ctx.store_kwargs(kind)
    if store_type != "local":
        kwargs["cache_size"] = 0
    if "store_dir" in kwargs:  # the probe's store removes its directory when it ends
        kwargs["store_dir"] = os.path.join(ctx.directory(kind), "probe")
    try:
        measured = run_memory_probe(store_type, kwargs, size, timeout=900)
    except RuntimeError as exc:
        print(f"  {str(exc)[:320]}", file=sys.stderr)
        return None
    return float(measured["peak"] - measured["baseline"])


# -- tasks ---------------------------------------------------------------------------------------


def _batch(
    submit: Callable[..., Any], fn: Callable[..., Any], args: list[tuple[Any, ...]]
) -> float:
    start = time.perf_counter()
    futures = [submit(fn, *call) for call in args]
    for future in futures:
        future.result(timeout=900)
    return time.perf_counter() - start


def _ray_batch(ray: Any, remote: Any, args: list[tuple[Any, ...]], shared: Any) -> float:
    start = time.perf_counter()
    ref = None if shared is None else ray.put(shared)
    calls = [call if ref is None else (ref, *call[1:]) for call in args]
    ray.get([remote.remote(*call) for call in calls], timeout=900)
    elapsed = time.perf_counter() - start
    del ref
    return elapsed


def sweep_tasks(ctx: Context, counts: list[int], pool: Any, ray: Any) -> dict[str, Any]:
    """Total time against the number of tasks, below and above the threshold."""
    from benchmarks.overhead_cases import _integration

    store = ctx.store("file-shm", cache_size=1, purpose="curves-tasks")
    proxying = _integration("futures").ProxyExecutor(pool, store=store, threshold=THRESHOLD)
    array = np.random.default_rng(0).random(MB // 8)  # 1 MB: above the threshold
    points: list[dict[str, Any]] = []
    remotes = {}
    if ray is not None:
        remotes = {
            "tiny": ray.remote(num_cpus=2)(tiny_task),
            "array": ray.remote(num_cpus=2)(_sum_task),
        }
    for count in counts:
        for argument in ("tiny", "array"):
            sys.stderr.write(f"  tasks {count} {argument} ...")
            sys.stderr.flush()
            start = time.perf_counter()
            fn: Callable[..., Any] = tiny_task if argument == "tiny" else _sum_task
            args: list[tuple[Any, ...]] = (
                [(i,) for i in range(count)]
                if argument == "tiny"
                else [(array, i) for i in range(count)]
            )
            variants: dict[str, Callable[[], float]] = {
                "plain pool": functools.partial(_batch, pool.submit, fn, args),
                "ProxyExecutor": functools.partial(_batch, proxying.submit, fn, args),
            }
            if ray is not None:
                remote = remotes[argument]
                shared = None if argument == "tiny" else array
                variants["Ray"] = functools.partial(_ray_batch, ray, remote, args, shared)
            repeats = 1 if count >= 10_000 else (2 if count >= 1000 else 3)
            values = interleave(variants, repeats, 1 if count < 10_000 else 0)
            for name, measured in values.items():
                points.append(
                    {
                        "tasks": count,
                        "argument": argument,
                        "engine": name,
                        "time": _median(measured),
                    }
                )
            sys.stderr.write(f" {time.perf_counter() - start:.1f}s\n")
    return {"points": points, "array_bytes": int(array.nbytes), "threshold": THRESHOLD}


# -- workers -------------------------------------------------------------------------------------


def sweep_workers(
    ctx: Context, size: int, pools: dict[int, Any], ray: Any, ray_cpus: int
) -> dict[str, Any]:
    """The standard workload against the number of worker processes."""
    from benchmarks.overhead_cases import _integration

    cow = ctx.store("file-shm", cache_size=1, purpose="curves-workers")
    readonly = ctx.store("file-shm", cache_size=1, purpose="curves-workers-ro", readonly=True)
    array = np.random.default_rng(0).random(size // 8)
    points: list[dict[str, Any]] = []
    for workers, pool in pools.items():
        sys.stderr.write(f"  workers {workers} ...")
        sys.stderr.flush()
        start = time.perf_counter()
        executor = _integration("futures").ProxyExecutor
        on_cow = executor(pool, store=cow, threshold=THRESHOLD)
        on_readonly = executor(pool, store=readonly, threshold=THRESHOLD)
        variants: dict[str, Callable[[], float]] = {
            "plain pool": functools.partial(_workload, pool, array, None),
            "ProxyExecutor (cow)": functools.partial(_workload, on_cow, array, None),
            "ProxyExecutor (read-only)": functools.partial(_workload, on_readonly, array, None),
        }
        if ray is not None:
            remote = ray.remote(num_cpus=ray_cpus / workers)(_sum_task)
            variants["Ray"] = functools.partial(ray_standard, ray, remote, array)
        values = interleave(variants, 2 if ctx.quick else 5, 1)
        for name, measured in values.items():
            points.append({"workers": workers, "engine": name, "time": _median(measured)})
        sys.stderr.write(f" {time.perf_counter() - start:.1f}s\n")
    return {"points": points, "array_bytes": size, "cores": os.cpu_count()}


# -- figures -------------------------------------------------------------------------------------


def draw(data: dict[str, Any], out: str) -> list[str]:
    """Draw the figures of ``data`` as SVG files in ``out``; return their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed (python -m pip install -e '.[bench]'): no figures",
            file=sys.stderr,
        )
        return []
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "proxystore", "font.size": 9})
    written = []
    subtitle = f"{data['machine'].get('cores')} cores, {data['machine'].get('date', '')}"
    if "size" in data:
        written += _draw_size(plt, data["size"], data.get("size_cap"), subtitle, out)
    if "tasks" in data:
        written.append(_draw_tasks(plt, data["tasks"], subtitle, out))
    if "workers" in data:
        written.append(_draw_workers(plt, data["workers"], subtitle, out))
    return written


COLORS = {
    "local": "C0",
    "file-shm": "C1",
    "file-tmp": "C2",
    "redis": "C3",
    "ray": "C4",
    "plain pool": "0.3",
    "ProxyExecutor": "C1",
    "ProxyExecutor (cow)": "C1",
    "ProxyExecutor (read-only)": "C0",
    "Ray": "C4",
}


def _save(plt: Any, fig: Any, out: str, name: str) -> str:
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def _draw_size(
    plt: Any, size: dict[str, Any], cap: dict[str, Any] | None, subtitle: str, out: str
) -> list[str]:
    points = size["points"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for kind in [*STORES, "ray"]:
        mine = [p for p in points if p["store"] == kind and p.get("time") is not None]
        if not mine:
            continue
        xs = [p["size"] for p in mine]
        label = "Ray put+get" if kind == "ray" else kind
        top.plot(xs, [p["time"] for p in mine], "o-", color=COLORS[kind], label=label)
        floors = [p for p in mine if p.get("floor") is not None]
        if floors:
            top.plot(
                [p["size"] for p in floors],
                [p["floor"] for p in floors],
                "x--",
                color=COLORS[kind],
                alpha=0.6,
                label=f"{kind} raw floor",
            )
            bottom.plot(
                [p["size"] for p in floors],
                [p["ratio"] for p in floors],
                "o-",
                color=COLORS[kind],
                label=kind,
            )
    top.set_xscale("log", base=2)
    top.set_yscale("log")
    top.set_ylabel("put + get time (s)")
    top.set_title(f"Store round trip against object size ({subtitle})")
    top.legend(fontsize=7, ncol=2)
    top.grid(True, which="major", alpha=0.3)
    bottom.axhline(1.0, color="0.5", lw=0.8)
    bottom.set_xscale("log", base=2)
    bottom.set_yscale("log")
    bottom.set_ylabel("ratio to the raw floor")
    bottom.set_xlabel("object size (bytes)")
    bottom.grid(True, which="major", alpha=0.3)
    if cap is not None and cap.get("capped"):
        for axis in (top, bottom):
            axis.axvline(cap["top"], color="r", lw=0.8, ls=":")
        bottom.annotate(
            f"capped at {format_size(cap['top'])} (available memory)",
            (cap["top"], 1.0),
            fontsize=7,
            color="r",
            ha="right",
        )
    written = [_save(plt, fig, out, "size-time.svg")]

    fig, axis = plt.subplots(figsize=(7, 4))
    for kind in STORES:
        mine = [p for p in points if p["store"] == kind and p.get("peak_bytes") is not None]
        if mine:
            axis.plot(
                [p["size"] for p in mine],
                [p["peak_bytes"] / p["size"] for p in mine],
                "o-",
                color=COLORS[kind],
                label=kind,
            )
    axis.axhline(1.0, color="0.5", lw=0.8, ls="--", label="the object (1x)")
    axis.axhline(2.0, color="0.5", lw=0.8, ls=":", label="one copy (2x)")
    axis.set_xscale("log", base=2)
    axis.set_ylim(0, None)
    axis.set_xlabel("object size (bytes)")
    axis.set_ylabel("peak memory / object size")
    axis.set_title(f"Peak memory of a round trip, fresh process ({subtitle})")
    axis.legend(fontsize=7)
    axis.grid(True, alpha=0.3)
    written.append(_save(plt, fig, out, "size-memory.svg"))
    return written


def _draw_tasks(plt: Any, tasks: dict[str, Any], subtitle: str, out: str) -> str:
    points = tasks["points"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    styles = {"tiny": "-", "array": "--"}
    words = {"tiny": "f(i), below threshold", "array": "1 MB array, above threshold"}
    for argument, style in styles.items():
        plain = {
            p["tasks"]: p["time"]
            for p in points
            if p["argument"] == argument and p["engine"] == "plain pool"
        }
        for engine in ("plain pool", "ProxyExecutor", "Ray"):
            mine = [
                p
                for p in points
                if p["argument"] == argument and p["engine"] == engine and p["time"] is not None
            ]
            if not mine:
                continue
            xs = [p["tasks"] for p in mine]
            label = f"{engine}: {words[argument]}"
            top.plot(xs, [p["time"] for p in mine], "o" + style, color=COLORS[engine], label=label)
            if engine != "plain pool":
                bottom.plot(
                    xs,
                    [p["time"] / plain[p["tasks"]] for p in mine],
                    "o" + style,
                    color=COLORS[engine],
                    label=label,
                )
    for axis in (top, bottom):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.grid(True, which="major", alpha=0.3)
    bottom.axhline(1.0, color="0.5", lw=0.8)
    top.set_ylabel("total time (s)")
    top.set_title(f"Tasks on 2 worker processes ({subtitle})")
    top.legend(fontsize=7)
    bottom.set_ylabel("ratio to the plain pool")
    bottom.set_xlabel("number of tasks")
    bottom.legend(fontsize=7)
    return _save(plt, fig, out, "tasks.svg")


def _draw_workers(plt: Any, workers: dict[str, Any], subtitle: str, out: str) -> str:
    points = workers["points"]
    fig, axis = plt.subplots(figsize=(7, 4))
    for engine in ("plain pool", "ProxyExecutor (cow)", "ProxyExecutor (read-only)", "Ray"):
        mine = [p for p in points if p["engine"] == engine and p["time"] is not None]
        if mine:
            axis.plot(
                [p["workers"] for p in mine],
                [p["time"] for p in mine],
                "o-",
                color=COLORS[engine],
                label=engine,
            )
    cores = workers.get("cores")
    if cores:
        axis.axvline(cores, color="r", lw=0.8, ls=":", label=f"{cores} cores on this machine")
    axis.set_yscale("log")
    axis.set_xticks(sorted({p["workers"] for p in points}))
    axis.set_xlabel("worker processes")
    axis.set_ylabel("standard workload time (s)")
    size = format_size(workers.get("array_bytes"))
    axis.set_title(f"8 tasks x the same {size} array ({subtitle})")
    axis.legend(fontsize=7)
    axis.grid(True, alpha=0.3)
    return _save(plt, fig, out, "workers.svg")


# -- the command ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.curves",
        description="Cost against object size, number of tasks and worker processes (SVG).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny ranges, few repeats")
    parser.add_argument(
        "--sweep",
        action="append",
        choices=["size", "tasks", "workers"],
        help="run only this sweep (repeatable; default all)",
    )
    parser.add_argument("--out", default=OUT, help=f"directory of the figures and data ({OUT})")
    parser.add_argument("--max-size", type=int, help="largest object of the size sweep (bytes)")
    parser.add_argument("--no-ray", action="store_true", help="leave Ray out even if installed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure the selected sweeps, write ``curves.json`` and the SVG figures."""
    args = parse_args(argv)
    sweeps = args.sweep or ["size", "tasks", "workers"]
    os.makedirs(args.out, exist_ok=True)
    data: dict[str, Any] = {"schema": 1, "mode": "quick" if args.quick else "full"}
    started = time.perf_counter()
    with Context(quick=args.quick) as ctx:
        # Fork every pool before Ray, Redis or anything else starts threads.
        pools: dict[int, Any] = {}
        if "tasks" in sweeps or "workers" in sweeps:
            for workers in WORKER_COUNTS if "workers" in sweeps else [2]:
                pools[workers] = ctx.process_pool("curves", workers)
                _start_workers(pools[workers], workers)
        ray_cpus = max(WORKER_COUNTS)
        ray = None if args.no_ray else _try_ray(ctx, ray_cpus)
        data["ray"] = None if ray is None else getattr(ray, "__version__", "?")
        if ray is None and not args.no_ray:
            data["ray_missing"] = RAY_MISSING
        if "size" in sweeps:
            sizes = QUICK_SIZES if args.quick else FULL_SIZES
            available = mem_available()
            top = min(args.max_size or sizes[-1], available // SAFETY)
            chosen = [size for size in sizes if size <= top]
            data["size_cap"] = {
                "requested": args.max_size or sizes[-1],
                "top": chosen[-1],
                "available_bytes": available,
                "capped": chosen[-1] < (args.max_size or sizes[-1]),
            }
            ctx.redis_address()
            data["size"] = sweep_size(ctx, chosen, ray)
        if "tasks" in sweeps:
            counts = QUICK_TASKS if args.quick else FULL_TASKS
            data["tasks"] = sweep_tasks(ctx, counts, pools[2], ray)
        if "workers" in sweeps:
            size = 8 * MB if args.quick else 100 * MB
            data["workers"] = sweep_workers(ctx, size, pools, ray, ray_cpus)
        data["machine"] = machine_info(ctx.redis_version)
    data["seconds"] = time.perf_counter() - started
    data["load"] = os.getloadavg()
    path = os.path.join(args.out, "curves.json")
    write_json(path, data)
    print(f"wrote {path}", file=sys.stderr)
    for figure in draw(data, args.out):
        print(f"wrote {figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
