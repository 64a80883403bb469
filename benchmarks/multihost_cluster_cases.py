"""One object to every worker host: one Redis server against a 3-shard Redis Cluster.

On the multi-host test bed with seven hosts (``tests/multihost/testbed.py``): hosts a, b and
c each run one master of a Redis Cluster (``TestBed.start_redis_cluster``), host a also a
single Redis server; hosts d, e, f and g are worker hosts. Every link is limited to 1 Gbit/s
in each direction (``tc``). Both stores use the host tier (``host_cache=``), so each worker
host should receive about one copy of the object.

One repetition stores a fresh 100 MB array (8 MB with ``--quick``) and resolves its proxy on
``n`` worker hosts at the same moment (``tests/multihost/fanout.py``: one resolver process per
host, already connected, all released at once); the value is the time from release to the
last host done. Cases ``multihost-cluster/fanout-<n>-hosts/array-100MB`` for ``n`` = 1, 2, 3
and 4 (the curve of time against worker hosts): the cluster store is measured, the single
server is the floor, interleaved. Every repetition records the bytes into and out of every
host (``into_<host>_bytes``, ``out_of_<host>_bytes``; ``floor_...`` for the single server).

Target (2 and 4 hosts): with 3 shards at most half the single-server time, each worker host
still receiving about one copy (at most 1.2x the array). The single server's link carries
``n`` copies; the cluster's three links a third of them each, so the bound is a worker host's
own link (one copy) once ``n >= 3``, and exactly half the single-server time for ``n = 2``.

The cases are explicit (``python -m benchmarks --case 'multihost-cluster/*'``) and skip, with
the reason, where the bed cannot be built.
"""

from __future__ import annotations

import statistics
import uuid
from typing import Callable

import numpy as np

from benchmarks.context import Context
from benchmarks.harness import MB, Case, SkipCase, Target, Trial
from proxystore.store import Store, init_store, unregister_store
from tests.multihost.fanout import fan_out
from tests.multihost.testbed import TestBed, unavailable_reason

RATE = "1gbit"
SHARD_HOSTS = ("a", "b", "c")
WORKER_HOSTS = ("d", "e", "f", "g")
HOST_CACHE = "/dev/shm/proxystore-fanout"


def cases(ctx: Context) -> list[Case]:
    """The fan-out cases (explicit: ``--case 'multihost-cluster/*'``)."""
    size = 8 * MB if ctx.quick else 100 * MB
    counts = (1, 2) if ctx.quick else (1, 2, 3, 4)
    found = []
    for count in counts:
        target = None
        if count in (2, 4) and not ctx.quick:
            target = Target(
                "<= 0.5x, 1 copy/host", bound=0.5, also=Target("1 copy/host", on="check")
            )
        found.append(
            Case(
                f"multihost-cluster/fanout-{count}-hosts/array-{size // MB}MB",
                _preparer(ctx, count, size),
                "one Redis server",
                size=size,
                target=target,
                repeats=1 if ctx.quick else 3,
                warmup=1,
                throughput=False,
                explicit=True,
            )
        )
    return found


def _bed(ctx: Context) -> TestBed:
    """The run's seven-host bed: a Redis server and a 3-shard cluster, links at 1 Gbit/s."""

    def make() -> TestBed:
        reason = unavailable_reason()
        if reason is not None:
            raise SkipCase(reason)
        bed = TestBed(hosts=(*SHARD_HOSTS, *WORKER_HOSTS))
        ctx.exit.callback(bed.close)
        bed.build()
        bed.start_redis(SHARD_HOSTS[0])
        bed.start_redis_cluster(SHARD_HOSTS)
        for host in bed.hosts.values():
            host.limit_rate(RATE)
        return bed

    return ctx.resource("multihost-cluster-bed", make)


def _store(ctx: Context, bed: TestBed, cluster: bool, size: int) -> Store:
    def make() -> Store:
        if cluster:
            host, port = bed.cluster_nodes[0]
        else:
            host, port = bed.redis_address
        name = f"fanout-{'cluster' if cluster else 'single'}-{uuid.uuid4().hex[:8]}"
        store = init_store(
            "redis",
            name,
            hostname=host,
            port=port,
            cluster=cluster,
            cache_size=0,
            host_cache=HOST_CACHE,
            host_cache_bytes=4 * size,
        )
        ctx.exit.callback(unregister_store, name)
        ctx.exit.callback(store.cleanup)
        return store

    return ctx.resource(f"fanout-store-{cluster}", make)


def _preparer(ctx: Context, count: int, size: int) -> Callable[[], Trial]:
    def prepare() -> Trial:
        bed = _bed(ctx)
        stores = {True: _store(ctx, bed, True, size), False: _store(ctx, bed, False, size)}
        hosts = WORKER_HOSTS[:count]
        array = np.random.default_rng(count).random(size // 8)
        expected = float(np.sum(array))
        extra: dict[str, list[float]] = {}

        def run(cluster: bool) -> float:
            store = stores[cluster]
            prefix = "" if cluster else "floor_"
            warm = store.proxy(np.ones(2**19))  # 4 MB: striped, so every master is connected
            proxy = store.proxy(array)  # a fresh key: no host has it in its tier yet
            try:
                outcome = fan_out(bed, hosts, warm, proxy)
            finally:
                for made in (warm, proxy):
                    store.evict(made.__factory__.key)
            for name, total in outcome.sums.items():
                if abs(total - expected) > 1e-9 * abs(expected):
                    raise RuntimeError(f"host {name} resolved a sum of {total}, not {expected}")
            for name in bed.hosts:
                extra.setdefault(f"{prefix}into_{name}_bytes", []).append(
                    float(outcome.traffic.rx[name])
                )
                extra.setdefault(f"{prefix}out_of_{name}_bytes", []).append(
                    float(outcome.traffic.tx[name])
                )
            return outcome.seconds

        def one_copy_per_host() -> bool:
            return all(
                statistics.median(extra[f"into_{name}_bytes"]) <= 1.2 * size for name in hosts
            )

        return Trial(
            run=lambda: run(True),
            floor=lambda: run(False),
            extra=extra,
            check=one_copy_per_host,
        )

    return prepare
