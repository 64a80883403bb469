"""Peak memory of a round trip (put, then get with the cache off) through each store.

Each repetition runs :mod:`benchmarks.memory_probe` in a fresh interpreter and reports the
peak resident memory above that interpreter's baseline. The floor is the object's own size:
the issue's target is at most one extra copy, i.e. a ratio of at most 2.2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable

from benchmarks.context import Context
from benchmarks.harness import MB, Case, Target, Trial

STORES = ["local", "file-shm", "file-tmp", "redis"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cases(ctx: Context) -> list[Case]:
    """One memory case per store (100 MB, or 8 MB in quick mode)."""
    size = 8 * MB if ctx.quick else 100 * MB
    label = f"array-{size // MB}MB"
    return [
        Case(
            f"memory/{store}/{label}",
            _preparer(ctx, store, size),
            "object size",
            size=size,
            unit="B",
            target=Target("<= 2.2x", bound=2.2) if not ctx.quick else None,
            repeats=1 if ctx.quick else 3,
            warmup=0,
            needs_redis=store == "redis",
        )
        for store in STORES
    ]


def run_memory_probe(
    store_type: str, kwargs: dict[str, Any], size: int, *, timeout: float
) -> dict[str, float]:
    """Round-trip ``size`` bytes through a store in a fresh process; its baseline and peak RSS.

    Raises:
        RuntimeError: If the probe fails (with the end of its standard error).
    """
    environment = dict(os.environ)
    environment["PROXYSTORE_BENCH_STORE"] = json.dumps(kwargs)
    environment["PYTHONPATH"] = os.pathsep.join(
        [ROOT, *filter(None, [environment.get("PYTHONPATH")])]
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_probe", store_type, str(size)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip()[-500:]}")
    measured: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


def _preparer(ctx: Context, store: str, size: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        store_type, kwargs = ctx.store_kwargs(store)
        if store_type != "local":
            kwargs["cache_size"] = 0
        extra: dict[str, list[float]] = {"baseline_bytes": []}

        def run() -> float:
            measured = run_memory_probe(store_type, kwargs, size, timeout=600)
            extra["baseline_bytes"].append(float(measured["baseline"]))
            return float(measured["peak"] - measured["baseline"])

        return Trial(run=run, floor_value=float(size), extra=extra)

    return prepare
