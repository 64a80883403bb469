"""The standard workload across hosts, on the multi-host test bed (issue 10's benchmark).

The bed (``tests/multihost/testbed.py``) is three hosts made of network namespaces on a
bridge, each with its own ``/dev/shm`` and ``/tmp``: Redis and the Dask scheduler on host a,
2 single-threaded Dask worker processes on each of hosts b and c, the client in the root
namespace. Every host's link is limited to 1 Gbit/s in each direction (``tc``).

The workload: 8 tasks all given the same array (100 MB; 8 MB with ``--quick``), 4 pinned to
each worker host, each summing it. One case per way of sending the array:

* ``multihost/plain-dask``: ``client.submit(f, array, ...)``: the array travels with every
  task, through the scheduler.
* ``multihost/scatter-broadcast``: ``client.scatter(array, broadcast=True, hash=False)``,
  then the 8 tasks get the future: one copy per worker process.
* ``multihost/proxy-client``: ``ProxyClient`` with a ``RedisStore`` on host a: the array is
  stored once and every worker process that runs a task fetches it once.
* ``multihost/proxy-client-host-tier``: the same with the per-host tier
  (``host_cache="/dev/shm/proxystore-hostcache"``; skipped where ``RedisStore`` does not
  accept ``host_cache=``). Target: one copy into each host (at most 1.2x the array) and faster than
  scatter.

The proxy cases and plain Dask run against ``scatter(broadcast=True)`` as their floor,
interleaved; scatter has no floor. Every repetition records the bytes each host received,
read from its interface counters (``into_<host>_bytes``; ``floor_into_<host>_bytes`` for the
floor). The cases are *explicit*: they run only when ``--case`` selects them (``python -m
benchmarks --case 'multihost/*'``), and are reported as skipped, with the reason, where the
bed cannot be built (not root, no ``ip netns``, no ``unshare``).
"""

from __future__ import annotations

import importlib
import time
import uuid
import warnings
from typing import Any, Callable

import numpy as np

from benchmarks.context import Context
from benchmarks.harness import MB, Case, SkipCase, Target, Trial
from proxystore.store import Store, init_store, unregister_store
from tests.multihost.tasks import sum_on_host
from tests.multihost.testbed import TestBed, unavailable_reason

TASKS = 8
THRESHOLD = 1_000_000
RATE = "1gbit"
HOST_CACHE = "/dev/shm/proxystore-hostcache"
MODES = ["plain-dask", "scatter-broadcast", "proxy-client", "proxy-client-host-tier"]


def cases(ctx: Context) -> list[Case]:
    """The multi-host cases (explicit: ``--case 'multihost/*'``)."""
    size = 8 * MB if ctx.quick else 100 * MB
    label = f"array-{size // MB}MB"
    repeats = 1 if ctx.quick else 3
    found = []
    for mode in MODES:
        target = None
        if mode == "proxy-client-host-tier" and not ctx.quick:
            target = Target(
                "1 copy/host, < 1x",
                on="check",
                also=Target("< 1x", bound=1.0, strict=True),
            )
        found.append(
            Case(
                f"multihost/{mode}/{label}",
                _preparer(ctx, mode, size),
                "none" if mode == "scatter-broadcast" else "scatter(broadcast=True)",
                size=size,
                target=target,
                repeats=repeats,
                warmup=1,
                throughput=False,
                explicit=True,
            )
        )
    return found


def _bed(ctx: Context) -> TestBed:
    """The run's test bed (built on first use, with links limited to :data:`RATE`)."""

    def make() -> TestBed:
        reason = unavailable_reason()
        if reason is not None:
            raise SkipCase(reason)
        bed = TestBed()
        ctx.exit.callback(bed.close)
        bed.build()
        bed.start_redis()
        bed.start_dask()
        for host in bed.hosts.values():
            host.limit_rate(RATE)
        return bed

    return ctx.resource("multihost-bed", make)


def _client(ctx: Context, bed: TestBed) -> Any:
    def make() -> Any:
        import dask

        dask.config.set({"distributed.admin.large-graph-warning-threshold": "10GB"})
        client = bed.dask_client()
        ctx.exit.callback(client.close)
        return client

    return ctx.resource("multihost-client", make)


def _store(ctx: Context, bed: TestBed, size: int, host_tier: bool) -> Store:
    host, port = bed.redis_address
    options: dict[str, Any] = {"hostname": host, "port": port, "cache_size": 2}
    if host_tier:
        options.update(host_cache=HOST_CACHE, host_cache_bytes=4 * size)
    name = f"multihost-{'tier' if host_tier else 'redis'}-{uuid.uuid4().hex[:8]}"
    try:
        store = init_store("redis", name, **options)
    except TypeError as exc:
        if host_tier:
            raise SkipCase(f"the host tier (host_cache=) is not built yet: {exc}") from exc
        raise
    ctx.exit.callback(unregister_store, name)
    ctx.exit.callback(store.cleanup)
    return store


def _preparer(ctx: Context, mode: str, size: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        bed = _bed(ctx)
        client = _client(ctx, bed)
        submit: Callable[..., Any] = client.submit
        if mode.startswith("proxy-client"):
            store = _store(ctx, bed, size, host_tier=mode.endswith("host-tier"))
            dask_integration = importlib.import_module("proxystore.integrations.dask")
            submit = dask_integration.ProxyClient(client, store=store, threshold=THRESHOLD).submit
        array = np.random.default_rng(10).random(size // 8)
        expected = float(np.sum(array))
        extra: dict[str, list[float]] = {}

        def run_mode(scatter: bool, prefix: str) -> float:
            peer = bed["a"].address
            workers = [bed["b"].address, bed["c"].address]
            with warnings.catch_warnings(), bed.traffic() as seen:
                warnings.simplefilter("ignore")  # Dask warns about large graphs
                start = time.perf_counter()
                argument: Any = array
                if scatter:
                    argument = client.scatter(array, broadcast=True, hash=False)
                futures = [
                    (submit if not scatter else client.submit)(
                        sum_on_host, argument, index, peer, workers=[workers[index % 2]], pure=False
                    )
                    for index in range(TASKS)
                ]
                results = [future.result(timeout=900) for future in futures]
                elapsed = time.perf_counter() - start
                if scatter:
                    argument.release()
            for index, (value, ran_on) in enumerate(results):
                if abs(value - expected - index) > 1e-9 * abs(expected) or ran_on not in workers:
                    raise RuntimeError(f"task {index} returned {value} on {ran_on}")
            for host in ("a", "b", "c"):
                extra.setdefault(f"{prefix}into_{host}_bytes", []).append(float(seen.rx[host]))
            return elapsed

        def one_copy_per_host() -> bool:
            import statistics

            return all(
                statistics.median(extra[f"into_{host}_bytes"]) <= 1.2 * size for host in ("b", "c")
            )

        if mode == "scatter-broadcast":
            return Trial(run=lambda: run_mode(True, ""), extra=extra)
        return Trial(
            run=lambda: run_mode(False, ""),
            floor=lambda: run_mode(True, "floor_"),
            extra=extra,
            check=one_copy_per_host,
        )

    return prepare
