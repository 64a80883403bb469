"""What every adapter does, whatever the engine: one suite, run over each engine.

The adapters (``ProxyExecutor``, ``ProxyClient``, ``proxy_app``) put a task's large arguments
in a store and send proxies instead; below the threshold nothing changes. Over each engine
(thread, fork and spawn process pools; a Dask LocalCluster of threads and one of processes;
Parsl's ThreadPoolExecutor and HighThroughputExecutor) and over a File and a Redis store,
the suite checks: results equal the plain engine's (submit, and map where the engine has
it); a large argument reaches the task as a proxy that prefetches, is stored once however
many tasks share it, and is evicted after the last of them; small arguments travel as they
are; an error in the task reaches the caller and still releases the argument; cancelling a
queued task releases its argument.

Engine-specific behaviour (Dask and Parsl options, zero-copy, bad input, ...) stays in the
``tests/integrations/test_integration_*.py`` files.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from proxystore.store import Store
from tests.support.integration_helpers import (
    describe,
    describe_after_gate,
    fail,
    parsl_dfk,
    total,
    wait_until_released,
)

THRESHOLD = 10_000
BIG = np.arange(THRESHOLD, dtype=np.float64)  # 80 KB: above the threshold
SMALL = np.arange(10, dtype=np.float64)  # 80 B: below

pytestmark = pytest.mark.filterwarnings(
    # The plain engines ship the arrays themselves in the comparisons: that is what is compared.
    "ignore:Sending large graph:UserWarning",
    "ignore::ResourceWarning",
    "ignore::DeprecationWarning",
)


class Engine:
    """One engine, plain and behind its adapter, as the suite drives it."""

    name: str
    remote: bool
    """Tasks run in other processes."""
    has_map = True
    can_cancel = True

    def plain(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the plain engine; return its result."""
        raise NotImplementedError

    def adapt(self, store: Store) -> None:
        """Put the adapter in front of the engine, with ``store`` and the threshold."""
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Submit through the adapter; return the engine's future."""
        raise NotImplementedError

    def submit_as_usual(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Submit through the adapter with the engine's default options (Dask: ``pure``)."""
        return self.submit(fn, *args)

    def map(self, fn: Callable[..., Any], *iterables: Any) -> list[Any]:
        """Map through the adapter (the engine's default options); return the results."""
        raise NotImplementedError

    def plain_map(self, fn: Callable[..., Any], *iterables: Any) -> list[Any]:
        """Map on the plain engine; return the results."""
        raise NotImplementedError

    def cancel(self, future: Any) -> None:
        """Cancel a queued task."""
        assert future.cancel(), f"{self.name}: a queued task could not be cancelled"

    def in_use(self) -> dict[str, int]:
        """The stored arguments the adapter(s) still lease."""
        raise NotImplementedError

    def wait_released(self) -> None:
        """Wait (bounded) until the adapter(s) lease nothing."""
        raise NotImplementedError


class FuturesEngine(Engine):
    """A concurrent.futures pool behind ``ProxyExecutor``."""

    def __init__(self, kind: str) -> None:
        from proxystore.integrations.futures import ProxyExecutor

        self.name = f"futures-{kind}"
        self.remote = kind != "thread"
        self.pool = (
            ThreadPoolExecutor(max_workers=2)
            if kind == "thread"
            else ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context(kind))
        )
        self._wrap = ProxyExecutor
        self.executor: Any = None

    def plain(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.pool.submit(fn, *args, **kwargs).result(timeout=60)

    def adapt(self, store: Store) -> None:
        # Not shut down after the test: that would shut the shared pool down.
        self.executor = self._wrap(self.pool, store=store, threshold=THRESHOLD)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.executor.submit(fn, *args, **kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Any) -> list[Any]:
        return list(self.executor.map(fn, *iterables, timeout=60))

    def plain_map(self, fn: Callable[..., Any], *iterables: Any) -> list[Any]:
        return list(self.pool.map(fn, *iterables, timeout=60))

    def in_use(self) -> dict[str, int]:
        return dict(self.executor.proxier.in_use())

    def wait_released(self) -> None:
        wait_until_released(self.executor)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskEngine(Engine):
    """A Dask LocalCluster behind ``ProxyClient``."""

    def __init__(self, processes: bool) -> None:
        import distributed

        from proxystore.integrations.dask import ProxyClient

        self.name = f"dask-{'processes' if processes else 'threads'}"
        self.remote = processes
        options = {"n_workers": 2, "threads_per_worker": 1} if processes else {"n_workers": 1}
        self.cluster = distributed.LocalCluster(
            dashboard_address=":0", processes=processes, **options
        )
        self.client = distributed.Client(self.cluster)
        self._wrap = ProxyClient
        self.pclient: Any = None

    def plain(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, **kwargs).result(timeout=60)

    def adapt(self, store: Store) -> None:
        self.pclient = self._wrap(self.client, store=store, threshold=THRESHOLD)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # Tasks of the same arguments are distinct tasks here (not one, as pure tasks are).
        return self.pclient.submit(fn, *args, pure=False, **kwargs)

    def submit_as_usual(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pclient.submit(fn, *args)  # pure, as Dask's default: proxies are hashed

    def map(self, fn: Callable[..., Any], *iterables: Any) -> list[Any]:
        return list(self.pclient.gather(self.pclient.map(fn, *iterables)))

    def plain_map(self, fn: Callable[..., Any], *iterables: Any) -> list[Any]:
        return list(self.client.gather(self.client.map(fn, *iterables, pure=False)))

    def cancel(self, future: Any) -> None:
        self.pclient.cancel([future])

    def in_use(self) -> dict[str, int]:
        return dict(self.pclient.proxier.in_use())

    def wait_released(self) -> None:
        wait_until_released(self.pclient)

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class ParslEngine(Engine):
    """A Parsl executor behind ``proxy_app`` (one ``ProxyApp`` per task function)."""

    has_map = False
    can_cancel = False

    def __init__(self, label: str, dfk: Any) -> None:
        self.name = f"parsl-{label}"
        self.label = label
        self.remote = label == "htex"
        self.dfk = dfk
        self.store: Store | None = None
        self.apps: dict[Callable[..., Any], Any] = {}

    def plain(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from parsl import python_app

        return python_app(fn, executors=[self.label])(*args, **kwargs).result(timeout=60)

    def adapt(self, store: Store) -> None:
        self.store = store
        self.apps = {}

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from parsl import python_app

        from proxystore.integrations.parsl import proxy_app

        if fn not in self.apps:
            app = python_app(fn, executors=[self.label])
            self.apps[fn] = proxy_app(store=self.store, threshold=THRESHOLD)(app)
        return self.apps[fn](*args, **kwargs)

    def in_use(self) -> dict[str, int]:
        leased: dict[str, int] = {}
        for app in self.apps.values():
            leased.update(app.proxier.in_use())
        return leased

    def wait_released(self) -> None:
        for app in self.apps.values():
            wait_until_released(app)


ENGINES = [
    "futures-thread",
    "futures-fork",
    "futures-spawn",
    "dask-threads",
    "dask-processes",
    "parsl-threads",
    "parsl-htex",
]


@pytest.fixture(scope="module")
def dfk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Parsl DataFlowKernel for both Parsl engines (Parsl allows one at a time)."""
    parsl = pytest.importorskip("parsl")
    # Parsl starts its interchange and workers as scripts: this interpreter's scripts first.
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{old_path}"
    loaded = parsl_dfk(tmp_path_factory.mktemp("adapter-parsl"))
    try:
        yield loaded
    finally:
        loaded.cleanup()
        parsl.clear()
        os.environ["PATH"] = old_path


@pytest.fixture(scope="module", params=ENGINES)
def running(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each engine, started once for the module (one at a time: tests are grouped by it)."""
    kind: str = request.param
    if kind.startswith("futures-"):
        engine: Engine = FuturesEngine(kind.removeprefix("futures-"))
    elif kind.startswith("dask-"):
        pytest.importorskip("distributed")
        engine = DaskEngine(processes=kind == "dask-processes")
    else:
        engine = ParslEngine(kind.removeprefix("parsl-"), request.getfixturevalue("dfk"))
    try:
        yield engine
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()


@pytest.fixture(params=["file", "redis"])
def engine(request: pytest.FixtureRequest, running: Engine, store_factory: Any) -> Engine:
    """The engine behind its adapter, with a fresh File or Redis store."""
    running.adapt(store_factory(request.param))
    return running


def store_of(engine: Engine) -> Store:
    if isinstance(engine, FuturesEngine):
        return engine.executor.store  # type: ignore[no-any-return]
    if isinstance(engine, DaskEngine):
        return engine.pclient.store  # type: ignore[no-any-return]
    assert isinstance(engine, ParslEngine) and engine.store is not None
    return engine.store


CASES = [(BIG, SMALL), (BIG * 2, 3.0), (SMALL, BIG)]


def test_submit_results_equal_the_plain_engines(engine: Engine) -> None:
    expected = [engine.plain(total, *args) for args in CASES]
    assert [engine.submit_as_usual(total, *args).result(timeout=60) for args in CASES] == expected
    engine.wait_released()


def test_map_results_equal_the_plain_engines(engine: Engine) -> None:
    if not engine.has_map:
        pytest.skip(f"{engine.name} has no map")
    firsts, seconds = [args[0] for args in CASES], [args[1] for args in CASES]
    assert engine.map(total, firsts, seconds) == engine.plain_map(total, firsts, seconds)
    engine.wait_released()


def test_large_arguments_come_as_prefetching_proxies_small_ones_as_they_are(
    engine: Engine,
) -> None:
    seen = engine.submit(describe, BIG, SMALL, "text", big_kw=BIG, small_kw=7).result(timeout=60)
    big, small, text = seen["args"]
    assert big["proxy"] and not small["proxy"] and not text["proxy"]
    assert big["prefetching"], "the worker must start resolving before the body runs"
    assert seen["kwargs"]["big_kw"]["proxy"] and not seen["kwargs"]["small_kw"]["proxy"]
    assert seen["kwargs"]["big_kw"]["key"] == big["key"], "one array twice: stored once"
    assert (seen["pid"] != os.getpid()) is engine.remote
    # Items one level down in a list or dict; the containers themselves travel by value.
    nested = engine.submit(describe, [BIG, SMALL], {"a": BIG, "b": 1}).result(timeout=60)
    assert [item["proxy"] for item in nested["items"]] == [True, False, True, False]
    assert not nested["args"][0]["proxy"] and not nested["args"][1]["proxy"]
    engine.wait_released()
    assert not store_of(engine).exists(big["key"])


def test_a_call_below_the_threshold_stores_nothing(engine: Engine) -> None:
    future = engine.submit(describe, SMALL, 3.0, small_kw="text")
    assert engine.in_use() == {}, "nothing stored for a call of small arguments"
    seen = future.result(timeout=60)
    assert not any(arg["proxy"] for arg in seen["args"])
    assert not seen["kwargs"]["small_kw"]["proxy"]


def test_a_shared_argument_is_stored_once_and_evicted_after_the_last_task(
    engine: Engine, tmp_path: Path
) -> None:
    gate = str(tmp_path / "gate")
    futures = [engine.submit(describe_after_gate, gate, BIG) for _ in range(6)]
    try:
        assert len(engine.in_use()) == 1, "all tasks in flight share one stored copy"
        (key,) = engine.in_use()
        assert store_of(engine).exists(key)
    finally:
        open(gate, "w").close()
    keys = {future.result(timeout=60)["args"][0]["key"] for future in futures}
    assert keys == {key}
    engine.wait_released()
    assert not store_of(engine).exists(key)


def test_an_error_in_the_task_reaches_the_caller_and_releases(engine: Engine) -> None:
    future = engine.submit(fail, BIG)
    (key,) = engine.in_use()
    with pytest.raises(RuntimeError, match="on purpose"):
        future.result(timeout=60)
    engine.wait_released()
    assert engine.in_use() == {}
    assert not store_of(engine).exists(key)


def test_cancelling_a_queued_task_releases_its_argument(engine: Engine, tmp_path: Path) -> None:
    if not engine.can_cancel:
        pytest.skip(f"{engine.name} cannot cancel a task")
    gate = str(tmp_path / f"gate-{uuid.uuid4().hex[:8]}")
    # Blockers (small: nothing stored) for every worker and the queue a process pool fills
    # ahead of them (workers + 1 calls, already "running": not cancellable), and more.
    blockers = [engine.submit(describe_after_gate, gate, SMALL) for _ in range(8)]
    try:
        queued = engine.submit(total, BIG * 3)
        (key,) = engine.in_use()
        assert store_of(engine).exists(key)
        engine.cancel(queued)
        engine.wait_released()
        assert not store_of(engine).exists(key)
    finally:
        open(gate, "w").close()
    for blocker in blockers:
        assert not blocker.result(timeout=60)["args"][0]["proxy"]
