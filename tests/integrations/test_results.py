"""Task-to-task data: stored results cannot leak, and futures are arguments (issue 19).

Over each adapter (``ProxyExecutor`` on a thread pool and on a fork pool, ``ProxyClient`` on a
LocalCluster of processes, ``proxy_app`` on Parsl threads and HTEX) and over a File and a
Redis store, with ``proxy_results=True``: chains ``consume(produce(i))`` and a fan-out (one
result to many consumers) compute what the plain engines compute, and once the caller drops
its futures and proxies the store holds no object (counted in the store itself); a result the
caller holds stays resolvable until it is dropped; a proxy pickled away by the user keeps its
object. ``ProxyExecutor`` takes futures as arguments without deadlocking a full pool.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from proxystore.proxy import Proxy, get_key, is_resolved
from proxystore.store import Store
from proxystore.store.lifetimes import ContextLifetime
from tests.support.integration_helpers import consume, consume_all, fail, parsl_dfk, produce
from tests.support.waiting import wait_until

THRESHOLD = 10_000
N = 20_000  # 160 KB results: above the threshold
CHAINS = 4
FAN = 4

pytestmark = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::DeprecationWarning", "ignore:Sending large graph"
)


_BEFORE: dict[str, set[str]] = {}  # store name -> keys there before the test (a shared Redis)


def _all_keys(store: Store) -> set[str]:
    backend = store.backend
    if hasattr(backend, "client"):  # Redis: the session's server is shared by many tests
        from proxystore.store.redis import scan_keys

        return {info.key for info in scan_keys(backend)}  # type: ignore[arg-type]
    return {info.key for info in backend.scan()}  # File: pooled pages are no objects


def stored_keys(store: Store) -> list[str]:
    """The keys of the objects this test put in the store (counted in the store itself)."""
    before = _BEFORE.setdefault(store.name, _all_keys(store))
    return sorted(_all_keys(store) - before)


def wait_empty(store: Store, what: str, timeout: float = 30.0) -> None:
    def empty() -> bool:
        gc.collect()
        return not stored_keys(store)

    wait_until(empty, timeout, f"{what}: the store to hold no object (left: {stored_keys(store)})")


def policy(**kwargs: Any) -> Any:
    from proxystore.integrations.policy import ProxyPolicy

    return ProxyPolicy(threshold=THRESHOLD, proxy_results=True, **kwargs)


class Adapter:
    """One engine behind its adapter with ``proxy_results=True``."""

    name: str

    def adapt(self, store: Store, **policy_kwargs: Any) -> None:
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def result(self, future: Any) -> Any:
        return future.result(timeout=60)


class Futures(Adapter):
    def __init__(self, kind: str) -> None:
        self.name = f"futures-{kind}"
        self.pool: Any = (
            ThreadPoolExecutor(2)
            if kind == "thread"
            else ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(kind))
        )
        self.executor: Any = None

    def adapt(self, store: Store, **policy_kwargs: Any) -> None:
        from proxystore.integrations.futures import ProxyExecutor

        self.executor = ProxyExecutor(self.pool, store=store, policy=policy(**policy_kwargs))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.executor.submit(fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class Dask(Adapter):
    name = "dask-processes"

    def __init__(self) -> None:
        import distributed

        self.cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        self.client = distributed.Client(self.cluster)
        self.pclient: Any = None

    def adapt(self, store: Store, **policy_kwargs: Any) -> None:
        from proxystore.integrations.dask import ProxyClient

        self.pclient = ProxyClient(self.client, store=store, policy=policy(**policy_kwargs))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pclient.submit(fn, *args, pure=False)

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class Parsl(Adapter):
    def __init__(self, label: str) -> None:
        self.name = f"parsl-{label}"
        self.label = label
        self.apps: dict[Any, Any] = {}
        self.store: Store | None = None
        self.policy_kwargs: dict[str, Any] = {}

    def adapt(self, store: Store, **policy_kwargs: Any) -> None:
        self.store = store
        self.policy_kwargs = policy_kwargs
        self.apps = {}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        from parsl import python_app

        from proxystore.integrations.parsl import proxy_app

        if fn not in self.apps:
            app = python_app(fn, executors=[self.label])
            decorate = proxy_app(store=self.store, policy=policy(**self.policy_kwargs))
            self.apps[fn] = decorate(app)
        return self.apps[fn](*args)


ADAPTERS = ["futures-thread", "futures-fork", "dask-processes", "parsl-threads", "parsl-htex"]


@pytest.fixture(scope="module")
def dfk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    parsl = pytest.importorskip("parsl")
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{old_path}"
    loaded = parsl_dfk(tmp_path_factory.mktemp("results-parsl"))
    try:
        yield loaded
    finally:
        loaded.cleanup()
        parsl.clear()
        os.environ["PATH"] = old_path


@pytest.fixture(scope="module", params=ADAPTERS)
def running(request: pytest.FixtureRequest) -> Iterator[Adapter]:
    kind: str = request.param
    if kind.startswith("futures-"):
        adapter: Adapter = Futures(kind.removeprefix("futures-"))
    elif kind == "dask-processes":
        pytest.importorskip("distributed")
        adapter = Dask()
    else:
        request.getfixturevalue("dfk")
        adapter = Parsl(kind.removeprefix("parsl-"))
    try:
        yield adapter
    finally:
        close = getattr(adapter, "close", None)
        if close is not None:
            close()


@pytest.fixture(params=["file", "redis"])
def adapter(request: pytest.FixtureRequest, running: Adapter, store_factory: Any) -> Adapter:
    store = store_factory(request.param)
    stored_keys(store)  # what was there before
    running.adapt(store)
    running.store = store  # type: ignore[attr-defined]
    return running


def test_chains_leave_the_store_empty(adapter: Adapter) -> None:
    store: Store = adapter.store  # type: ignore[attr-defined]
    futures = [adapter.submit(consume, adapter.submit(produce, N, i)) for i in range(CHAINS)]
    assert [adapter.result(f) for f in futures] == [float(N * i) for i in range(CHAINS)]
    del futures
    wait_empty(store, f"{adapter.name}: chains done and dropped")


def test_a_fan_out_leaves_the_store_empty(adapter: Adapter) -> None:
    store: Store = adapter.store  # type: ignore[attr-defined]
    shared = adapter.submit(produce, N, 3)
    consumers = [adapter.submit(consume, shared) for _ in range(FAN)]
    assert [adapter.result(f) for f in consumers] == [float(N * 3)] * FAN
    # The caller still holds the producer's future: its result stays.
    gc.collect()
    assert len(stored_keys(store)) == 1
    del shared, consumers
    wait_empty(store, f"{adapter.name}: fan-out dropped")


def test_a_held_result_stays_until_dropped(adapter: Adapter) -> None:
    store: Store = adapter.store  # type: ignore[attr-defined]
    future = adapter.submit(produce, N, 5)
    result = adapter.result(future)
    assert type(result) is Proxy  # a numpy result comes back by proxy
    key = get_key(result)
    del future
    # Tasks given the result run and end; the caller's proxy still holds it.
    assert adapter.result(adapter.submit(consume, result)) == float(N * 5)
    for _ in range(3):
        gc.collect()
        time.sleep(0.05)
    assert key in stored_keys(store)
    assert float(result.sum()) == float(N * 5)
    del result
    wait_empty(store, f"{adapter.name}: the held result dropped")


def test_a_failed_consumer_releases_what_it_was_given(adapter: Adapter) -> None:
    store: Store = adapter.store  # type: ignore[attr-defined]
    produced = adapter.submit(produce, N, 1)
    failed = adapter.submit(fail, produced)
    with pytest.raises(Exception, match="task failed on purpose"):
        adapter.result(failed)
    del produced, failed
    wait_empty(store, f"{adapter.name}: a failed consumer")


# -- futures-only behaviour ------------------------------------------------------------------


@pytest.fixture
def file_store(store_factory: Any) -> Store:
    store: Store = store_factory("file")
    stored_keys(store)
    return store


@pytest.fixture(scope="module")
def fork_pool() -> Iterator[ProcessPoolExecutor]:
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def _executor(pool: Any, store: Store, **policy_kwargs: Any) -> Any:
    from proxystore.integrations.futures import ProxyExecutor

    return ProxyExecutor(pool, store=store, policy=policy(**policy_kwargs))


def test_a_large_result_goes_store_to_worker_never_through_the_client(
    fork_pool: ProcessPoolExecutor, file_store: Store
) -> None:
    ex = _executor(fork_pool, file_store)
    produced = ex.submit(produce, N, 2)
    assert ex.submit(consume, produced).result(timeout=60) == float(N * 2)
    proxy = produced.result()
    assert not is_resolved(proxy), "the client resolved the result it only passed on"
    del produced, proxy
    wait_empty(file_store, "a chain")


def test_a_deep_chain_on_one_worker_never_deadlocks(file_store: Store) -> None:
    with ThreadPoolExecutor(1) as pool:
        ex = _executor(pool, file_store)
        future = ex.submit(produce, N, 1)
        for _ in range(5):  # each link needs the one before: on a single worker
            future = ex.submit(np.add, future, 1.0)
        assert float(future.result(timeout=60).sum()) == float(N * 6)
        del future
    wait_empty(file_store, "a deep chain")


def test_futures_in_a_list_argument_are_replaced_by_their_results(
    fork_pool: ProcessPoolExecutor, file_store: Store
) -> None:
    ex = _executor(fork_pool, file_store)
    parts = [ex.submit(produce, N, i) for i in range(3)]
    assert ex.submit(consume_all, parts).result(timeout=60) == float(N * 3)
    del parts
    wait_empty(file_store, "a fan-in")


def test_a_failed_input_fails_the_dependent_with_its_error(
    fork_pool: ProcessPoolExecutor, file_store: Store
) -> None:
    ex = _executor(fork_pool, file_store)
    dependent = ex.submit(consume, ex.submit(fail, np.ones(3)))
    with pytest.raises(RuntimeError, match="task failed on purpose"):
        dependent.result(timeout=60)


def test_a_cancelled_input_cancels_the_dependent(file_store: Store) -> None:
    with ThreadPoolExecutor(1) as pool:
        ex = _executor(pool, file_store)
        gate = threading.Event()
        blocker = ex.submit(gate.wait, 30)
        queued = ex.submit(produce, N, 1)
        dependent = ex.submit(consume, queued)
        assert queued.cancel()
        gate.set()
        with pytest.raises(CancelledError):
            dependent.result(timeout=30)
        assert blocker.result(timeout=30)


def test_shutdown_runs_the_tasks_still_waiting_for_their_inputs(file_store: Store) -> None:
    from proxystore.integrations.futures import ProxyExecutor

    with ProxyExecutor(ThreadPoolExecutor(2), store=file_store, policy=policy()) as ex:
        dependents = [ex.submit(consume, ex.submit(produce, N, i)) for i in range(4)]
    # Leaving the block shut the pool down: every dependent was still sent, and ran.
    assert [f.result(timeout=0) for f in dependents] == [float(N * i) for i in range(4)]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(consume, Future())


def test_a_proxy_pickled_by_the_user_keeps_its_object(
    fork_pool: ProcessPoolExecutor, file_store: Store
) -> None:
    ex = _executor(fork_pool, file_store)
    future = ex.submit(produce, N, 7)
    sent = pickle.dumps(future.result())  # leaves the adapter's sight
    key = get_key(future.result())
    del future
    gc.collect()
    assert key in ex.proxier.results.escaped()
    assert key in stored_keys(file_store)
    again = pickle.loads(sent)
    assert float(again.sum()) == float(N * 7)
    del again
    file_store.evict(key)  # kept until evicted (or its lifetime ends)


def test_the_policy_lifetime_evicts_escaped_results(
    fork_pool: ProcessPoolExecutor, file_store: Store
) -> None:
    with ContextLifetime(file_store) as lifetime:
        ex = _executor(fork_pool, file_store, lifetime=lifetime)
        future = ex.submit(produce, N, 7)
        pickle.dumps(future.result())
        del future
        gc.collect()
        assert stored_keys(file_store)  # escaped: kept while the lifetime lasts
    assert not stored_keys(file_store)


def test_the_policy_takes_only_lifetimes() -> None:
    from proxystore.integrations.policy import ProxyPolicy

    with pytest.raises(TypeError, match=r"lifetime must be a proxystore.store.lifetimes"):
        ProxyPolicy(lifetime=30)


CLIENT = textwrap.dedent(
    """
    import os, signal, sys
    from concurrent.futures import ProcessPoolExecutor
    import numpy as np
    from proxystore.store import init_store
    from proxystore.store.lifetimes import LeaseLifetime
    from proxystore.integrations.futures import ProxyExecutor
    from proxystore.integrations.policy import ProxyPolicy
    from proxystore.proxy import get_key
    from tests.support.integration_helpers import produce

    if __name__ == "__main__":
        host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        store = init_store("redis", name, hostname=host, port=port)
        lease = LeaseLifetime(store, expiry=3)
        ex = ProxyExecutor(
            ProcessPoolExecutor(1),
            store=store,
            policy=ProxyPolicy(threshold=10_000, proxy_results=True, lifetime=lease),
        )
        big = np.ones(20_000)
        results = [ex.submit(produce, 20_000, i).result() for i in range(3)]
        argument = ex.submit(np.add, big, 1.0)  # a stored argument, in use while killed
        print(" ".join(get_key(r) for r in results), flush=True)
        sys.stdin.readline()
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_clients_results_expire_with_its_lease(
    tmp_path: Path, redis_address: tuple[str, int], store_factory: Any
) -> None:
    store = store_factory("redis")
    stored_keys(store)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    client = subprocess.Popen(
        [sys.executable, str(script), redis_address[0], str(redis_address[1]), store.name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        keys = client.stdout.readline().split()
        assert len(keys) == 3
        assert all(store.exists(key) for key in keys)
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.wait(timeout=30) == -signal.SIGKILL
        wait_until(
            lambda: not any(store.exists(key) for key in keys),
            15,
            "the killed client's results to expire with its lease (Redis TTL)",
        )
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
