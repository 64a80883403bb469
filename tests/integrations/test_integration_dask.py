"""ProxyClient over a real Dask LocalCluster with worker processes, real File and Redis stores."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from proxystore.integrations.dask import ProxyClient  # noqa: E402
from proxystore.integrations.policy import ProxyPolicy  # noqa: E402
from proxystore.proxy import Proxy, extract  # noqa: E402
from proxystore.serialize import SerializationError  # noqa: E402
from proxystore.store import Store, init_store, unregister_store  # noqa: E402
from tests.support.integration_helpers import (  # noqa: E402
    ReadLoggingFileStore,
    fail,
    large_arguments,
    make_big,
    make_result,
    mapped_from_store,
    read_pids,
    result_type,
    sleep_then_total,
    total,
    transparency_probe,
    wait_until_released,
)

THRESHOLD = 10_000
BIG = np.arange(THRESHOLD, dtype=np.float64)
SMALL = np.arange(10, dtype=np.float64)

pytestmark = pytest.mark.filterwarnings(
    # Dask warns about large graphs when the *plain* client ships big arrays in the tests that
    # compare against it; that is the behaviour being compared, not a problem.
    "ignore:Sending large graph:UserWarning",
    "ignore::ResourceWarning",
    "ignore::DeprecationWarning",
)


def local_client(**cluster_options: Any) -> Iterator[Any]:
    """A client of a LocalCluster (any free dashboard port), closed with its cluster."""
    cluster = distributed.LocalCluster(dashboard_address=":0", **cluster_options)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    yield from local_client(n_workers=2, threads_per_worker=1, processes=True)


@pytest.fixture(params=["file", "redis"])
def remote_store(request: pytest.FixtureRequest, store_factory: Any) -> Store:
    return store_factory(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def pclient(client: Any, remote_store: Store) -> ProxyClient:
    return ProxyClient(client, store=remote_store, threshold=THRESHOLD)


def test_dask_options_still_work(pclient: ProxyClient) -> None:
    future = pclient.submit(total, BIG, key="my-own-key")
    assert future.key == "my-own-key"
    assert future.result() == total(BIG)
    futures = pclient.map(total, [BIG, BIG + 1], key=["k1", "k2"])
    assert [f.key for f in futures] == ["k1", "k2"]
    assert pclient.gather(futures) == [total(BIG), total(BIG + 1)]
    # Dask futures pass through untouched: Dask resolves them on the worker as usual.
    upstream = pclient.submit(make_big, THRESHOLD, pure=False)
    assert pclient.submit(total, upstream, pure=False).result() == total(make_big(THRESHOLD))


def test_evicted_after_failure_and_cancellation(pclient: ProxyClient) -> None:
    failing = pclient.submit(fail, BIG, pure=False)
    with pytest.raises(RuntimeError, match="on purpose"):
        failing.result()
    slow = [pclient.submit(sleep_then_total, 0.5, BIG + i, pure=False) for i in range(4)]
    keys = set(pclient.proxier.in_use())
    assert keys
    pclient.cancel(slow)
    wait_until_released(pclient)
    assert pclient.proxier.in_use() == {}
    assert not any(pclient.store.exists(k) for k in keys)


def test_store_reads_only_on_workers(client: Any, tmp_path: Any) -> None:
    name = f"read-log-{os.getpid()}"
    store = init_store(ReadLoggingFileStore, name, store_dir=str(tmp_path / "store"))
    try:
        pc = ProxyClient(client, store=store, threshold=THRESHOLD)
        futures = [pc.submit(total, BIG + i, SMALL, pure=True) for i in range(3)]
        futures += pc.map(total, [BIG, BIG * 2])
        results = pc.gather(futures)
        assert results[0] == total(BIG, SMALL)
        pids = read_pids(store.store_dir)
        assert pids, "workers must have read from the store"
        assert os.getpid() not in pids, "the client resolved a proxy"
    finally:
        store.cleanup()
        unregister_store(name)


def test_results_proxied_when_asked(client: Any, remote_store: Store) -> None:
    policy = ProxyPolicy(threshold=THRESHOLD, proxy_results=True)
    pc = ProxyClient(client, store=remote_store, policy=policy)
    big = pc.submit(make_big, THRESHOLD, pure=False).result()
    assert issubclass(type(big), Proxy)
    assert np.array_equal(extract(big), make_big(THRESHOLD))


def test_everything_else_is_the_clients(pclient: ProxyClient, client: Any) -> None:
    assert len(pclient.scheduler_info()["workers"]) == 2  # the wrapped client's method
    # hash=False: unique keys per run. With content hashing, the parametrized runs scattered
    # the same keys, and the first run's release could make the scheduler forget them while
    # the second gathered.
    futures = pclient.scatter([1, 2], hash=False)
    assert pclient.gather(futures) == [1, 2]
    assert callable(pclient.compute)


def test_bad_input(client: Any, store_factory: Any) -> None:
    with pytest.raises(TypeError, match="store"):
        ProxyClient(client, store=None)
    with pytest.raises(ValueError, match="process"):
        ProxyClient(client, store=store_factory("local"))
    with pytest.raises(ValueError, match=">= 0"):
        ProxyClient(client, store=store_factory("file"), threshold=-5)
    pc = ProxyClient(client, store=store_factory("file"), threshold=THRESHOLD)
    with pytest.raises(SerializationError, match="cannot be serialized"):
        pc.submit(total, threading.Lock())
    assert pc.proxier.in_use() == {}
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        ProxyClient(object(), store=store_factory("file"))  # type: ignore[arg-type]


def test_same_host_zero_copy_on_dev_shm(client: Any) -> None:
    name = f"shm-dask-{os.getpid()}"
    store = init_store("file", name, store_dir=f"/dev/shm/{name}")
    try:
        pc = ProxyClient(client, store=store, threshold=THRESHOLD)
        assert pc.submit(mapped_from_store, BIG, pure=False).result()
        assert not pc.submit(mapped_from_store, SMALL, pure=False).result()
    finally:
        store.cleanup()
        unregister_store(name)


# -- transparency: the body computes what it computes under the plain client --------------------


@pytest.fixture(scope="module")
def thread_client() -> Iterator[Any]:
    yield from local_client(n_workers=1, threads_per_worker=2, processes=False)


@pytest.fixture(params=["processes", "threads"])
def any_client(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("client" if request.param == "processes" else "thread_client")


def test_body_computes_what_the_plain_client_computes(any_client: Any, remote_store: Store) -> None:
    pclient = ProxyClient(any_client, store=remote_store, threshold=THRESHOLD)
    for kind, value in large_arguments().items():
        _, _, lease = pclient.proxier.carry_out((value,), {})
        assert lease.keys, f"{kind} must travel through the store"
        pclient.proxier.release(lease)
        expected = any_client.submit(transparency_probe, value, pure=False).result()
        assert pclient.submit(transparency_probe, value, pure=False).result() == expected, kind


def test_results_of_builtin_kinds_come_back_as_the_plain_client_returns_them(
    any_client: Any, remote_store: Store
) -> None:
    policy = ProxyPolicy(threshold=THRESHOLD, proxy_results=True)
    pclient = ProxyClient(any_client, store=remote_store, policy=policy)
    for kind in ("dict", "bytes", "list-of-arrays"):
        future = pclient.submit(make_result, kind, pure=False)
        assert type(future.result()) is type(large_arguments()[kind]), kind
        # A dependent task receives the result as the plain client would hand it over.
        assert (
            pclient.submit(result_type, future, pure=False).result()
            == type(large_arguments()[kind]).__name__
        )


def test_scalar_calls_go_to_the_client_as_they_are(
    pclient: ProxyClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
    submit = pclient.client.submit

    def spy(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((func, args, kwargs))
        return submit(func, *args, **kwargs)

    monkeypatch.setattr(pclient.client, "submit", spy)
    assert pclient.submit(total, 2.0, 3, pure=False).result() == 5.0
    assert calls == [(total, (2.0, 3), {"pure": False})]
    assert pclient.submit(total, BIG, 1, pure=False).result() == total(BIG) + 1
    assert type(calls[-1][0]).__name__ == "ProxyTask"
