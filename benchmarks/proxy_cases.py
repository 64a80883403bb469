"""The cost of the proxy itself, against a plain ``lazy_object_proxy.Proxy``.

ProxyStore's :class:`~proxystore.proxy.Proxy` derives from lazy-object-proxy's C proxy; once
resolved, every operation should cost what the plain proxy costs. The plain proxy's factory is
a closure returning the object, so the floor of *creation* and *first resolution* is the proxy
machinery alone, without a store.

Each repetition runs a tight loop (no function call per iteration, which would hide a
difference of a few nanoseconds) and reports the time per operation.
"""

from __future__ import annotations

import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Callable

import lazy_object_proxy

from benchmarks.context import Context
from benchmarks.harness import Case, Target, Trial
from proxystore.proxy import Proxy, get_key

PLAIN = "plain lazy-object-proxy"


def cases(ctx: Context) -> list[Case]:
    """The proxy cases (all run in quick mode too, with shorter loops)."""
    loops = 2_000 if ctx.quick else 20_000
    ops = 20_000 if ctx.quick else 200_000
    repeats = None if ctx.quick else 15  # cheap, and noisy at the nanosecond scale
    found = [
        Case(
            "proxy/create",
            lambda: _create(ctx, loops),
            PLAIN,
            target=Target("< 10us", on="median", bound=10e-6, strict=True),
        ),
        Case("proxy/first-resolve", lambda: _first_resolve(ctx, loops), PLAIN),
        Case("proxy/attribute", lambda: _resolved(ctx, "attribute", ops), PLAIN, target=_WITHIN),
        Case("proxy/len", lambda: _resolved(ctx, "len", ops), PLAIN, target=_WITHIN),
        Case("proxy/add", lambda: _resolved(ctx, "add", ops), PLAIN, target=_WITHIN),
    ]
    return [replace(case, repeats=repeats) for case in found]


_WITHIN = Target("<= 1.1x", bound=1.1)


def _create(ctx: Context, loops: int) -> Trial:
    """``store.proxy(obj)`` on a LocalStore (stores the object, makes factory and proxy)."""
    store = ctx.store("local", purpose="proxy")
    obj = {"small": 1}

    def run() -> float:
        start = time.perf_counter()
        made = [store.proxy(obj) for _ in range(loops)]
        elapsed = time.perf_counter() - start
        for proxy in made:
            store.evict(str(get_key(proxy)))
        return elapsed / loops

    def floor() -> float:
        def factory() -> Any:
            return obj

        start = time.perf_counter()
        made = [lazy_object_proxy.Proxy(factory) for _ in range(loops)]
        elapsed = time.perf_counter() - start
        del made
        return elapsed / loops

    return Trial(run=run, floor=floor)


def _first_resolve(ctx: Context, loops: int) -> Trial:
    """The first use of a LocalStore proxy (the factory fetches the object from the store)."""
    store = ctx.store("local", purpose="proxy")
    obj = {"small": 1}

    def run() -> float:
        proxies = [store.proxy(obj) for _ in range(loops)]
        start = time.perf_counter()
        for proxy in proxies:
            proxy.__wrapped__  # noqa: B018 - the first access resolves
        elapsed = time.perf_counter() - start
        for proxy in proxies:
            store.evict(str(get_key(proxy)))
        return elapsed / loops

    def floor() -> float:
        def factory() -> Any:
            return obj

        proxies = [lazy_object_proxy.Proxy(factory) for _ in range(loops)]
        start = time.perf_counter()
        for proxy in proxies:
            proxy.__wrapped__  # noqa: B018
        return (time.perf_counter() - start) / loops

    return Trial(run=run, floor=floor)


def _loop(kind: str) -> Callable[[Any, int], float]:
    # One loop per operation, written out: a call per iteration would cost more than the
    # difference being measured.
    def attribute(p: Any, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            p.value  # noqa: B018
        return (time.perf_counter() - start) / n

    def length(p: Any, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            len(p)
        return (time.perf_counter() - start) / n

    def add(p: Any, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            p + 1
        return (time.perf_counter() - start) / n

    return {"attribute": attribute, "len": length, "add": add}[kind]


def _resolved(ctx: Context, kind: str, ops: int) -> Trial:
    """An operation on an already resolved proxy: ``p.value``, ``len(p)`` or ``p + 1``."""
    store = ctx.store("local", purpose="proxy")
    obj: Any = {"attribute": SimpleNamespace(value=1), "len": [1, 2, 3], "add": 41}[kind]
    ours: Proxy = store.proxy(obj)
    plain = lazy_object_proxy.Proxy(lambda: obj)
    ours.__wrapped__  # noqa: B018 - resolve both before timing
    plain.__wrapped__  # noqa: B018
    loop = _loop(kind)
    return Trial(
        run=lambda: loop(ours, ops),
        floor=lambda: loop(plain, ops),
        close=lambda: store.evict(str(get_key(ours))),
    )
