"""Dask graphs through ProxyClient: compute, persist, get and as_current() on a real
LocalCluster with worker processes, over real File and Redis stores."""

from __future__ import annotations

import gc
import os
import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402

from proxystore.integrations.dask import ProxyClient  # noqa: E402
from proxystore.integrations.dask_graphs import GraphTask  # noqa: E402
from proxystore.store import Store  # noqa: E402
from tests.support.integration_helpers import (  # noqa: E402
    describe,
    fail,
    total,
    wait_until_released,
)

THRESHOLD = 10_000
BIG = np.arange(THRESHOLD, dtype=np.float64)  # 80 kB
SMALL = np.arange(10, dtype=np.float64)
LARGE_GRAPH = "Sending large graph"

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        dashboard_address=":0", n_workers=2, threads_per_worker=1, processes=True
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(params=["file", "redis"])
def remote_store(request: pytest.FixtureRequest, store_factory: Any) -> Store:
    return store_factory(request.param)  # type: ignore[no-any-return]


class Puts:
    """Counts the objects the client stores (a spy on the real store's ``set``)."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[str] = []
        self.store = store
        real = store.set

        def counting(*args: Any, **kwargs: Any) -> str:
            key = real(*args, **kwargs)
            self.keys.append(key)
            return key

        monkeypatch.setattr(store, "set", counting)

    def none_left(self) -> bool:
        return not any(self.store.exists(key) for key in self.keys)


@pytest.fixture
def pclient(client: Any, remote_store: Store) -> ProxyClient:
    return ProxyClient(client, store=remote_store, threshold=THRESHOLD)


@pytest.fixture
def puts(pclient: ProxyClient, monkeypatch: pytest.MonkeyPatch) -> Puts:
    return Puts(pclient.store, monkeypatch)


@pytest.fixture
def small_graph_warning() -> Iterator[None]:
    """Dask's large-graph warning from 50 kB (one BIG array in a graph makes it warn)."""
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "50kB"}):
        yield


def add_index(x: Any, i: int) -> float:
    return float(np.sum(x)) + i


def first_item(items: Any) -> float:
    values = list(items.values()) if isinstance(items, dict) else items
    return float(np.sum(values[0])) + len(values)


def flaky(marker: str, x: Any) -> float:
    """Fails the first time (no marker file yet), succeeds on the retry."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise RuntimeError("flaky task failed on purpose")
    return float(np.sum(x))


def identity(x: Any) -> Any:
    return x


def delayed_calls(array: Any, n: int = 8) -> list[Any]:
    return [dask.delayed(add_index)(array, i) for i in range(n)]


def graph_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if LARGE_GRAPH in str(w.message)]


# -- results equal plain Dask's ------------------------------------------------------------------


def test_compute_of_delayed_calls_equals_plain_dask(pclient: ProxyClient, client: Any) -> None:
    graph = delayed_calls(BIG)
    assert pclient.gather(pclient.compute(graph)) == client.gather(client.compute(graph))
    assert pclient.compute(graph, sync=True) == [add_index(BIG, i) for i in range(8)]


def test_collections_equal_plain_dask(pclient: ProxyClient, client: Any) -> None:
    matrix = np.arange(200 * 200, dtype=np.float64).reshape(200, 200)  # 4 chunks of 80 kB
    array = da.from_array(matrix, chunks=100)
    expected = client.compute((array * 2 + 1).sum(axis=0), sync=True)
    assert np.array_equal(pclient.compute((array * 2 + 1).sum(axis=0), sync=True), expected)
    bag = db.from_sequence([BIG, BIG + 1, BIG + 2], npartitions=3).map(np.sum)
    expected_sum = client.compute(bag.sum(), sync=True)
    assert pclient.compute(bag.sum(), sync=True) == expected_sum


def test_wrapped_objects_and_container_literals(
    pclient: ProxyClient, client: Any, puts: Puts
) -> None:
    wrapped = dask.delayed(BIG)  # a data node in the graph
    graph = [
        dask.delayed(add_index)(wrapped, 1),
        wrapped,  # the object itself comes back, as plain Dask returns it
        dask.delayed(first_item)([BIG + 1, SMALL]),
        dask.delayed(first_item)({"a": BIG + 2, "b": 1}, dask_key_name="dict-arg"),
        dask.delayed(identity)(BIG + 3),  # a body that returns its (proxied) argument
    ]
    # Plain Dask first: a key the scheduler still knows from the proxied run would be run again
    # from that run's (evicted) inputs (a known issue of the graph path, see the notes).
    expected = client.compute(graph, sync=True)
    results = pclient.compute(graph, sync=True)
    assert results[0] == expected[0]
    assert type(results[1]) is np.ndarray and np.array_equal(results[1], BIG)
    assert results[2] == expected[2]
    assert type(results[4]) is np.ndarray and np.array_equal(results[4], BIG + 3)
    wait_until_released(pclient)
    assert len(puts.keys) == 4  # BIG (once, for its two uses) and BIG + 1, + 2, + 3
    assert puts.none_left()


def test_get_of_a_low_level_graph(pclient: ProxyClient, client: Any, puts: Puts) -> None:
    dsk = {"a": (add_index, BIG, 1), "b": (add_index, "a", 2), "c": (total, BIG, SMALL)}
    expected = client.get(dsk, ["b", "c"])
    assert pclient.get(dsk, ["b", "c"]) == expected
    wait_until_released(pclient)
    assert len(puts.keys) == 1
    assert puts.none_left()


# -- stored once, evicted, the graph Dask sees is small -----------------------------------------


def test_object_used_by_many_tasks_is_stored_once(
    pclient: ProxyClient, puts: Puts, small_graph_warning: None
) -> None:
    graph = delayed_calls(BIG, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        futures = pclient.compute(graph)
        in_use = pclient.proxier.in_use()
        results = pclient.gather(futures)
    assert graph_warnings(caught) == []
    assert results == [add_index(BIG, i) for i in range(8)]
    assert len(puts.keys) == 1
    assert list(in_use.values()) in ([8], [])  # all 8 tasks share the key (unless done)
    wait_until_released(pclient)
    assert puts.none_left()


def test_plain_client_does_warn_about_the_same_graph(
    client: Any, small_graph_warning: None
) -> None:
    # The counterpart of the test above: the warning it checks for is real.
    with pytest.warns(UserWarning, match=LARGE_GRAPH):
        client.compute(delayed_calls(BIG, 8), sync=True)


def test_graph_sent_to_dask_is_small(pclient: ProxyClient) -> None:
    expr = dask.base.collections_to_expr(delayed_calls(BIG, 8), True).optimize()
    rewritten, lease = pclient.graphs.rewrite(expr, expr.__dask_keys__())
    try:
        assert rewritten is not None
        assert len(pickle.dumps(rewritten)) < THRESHOLD
        tasks = list(rewritten.__dask_graph__().values())
        assert all(isinstance(task.func, GraphTask) for task in tasks)
        assert {task.key for task in tasks} == set(expr.__dask_graph__())
    finally:
        pclient.proxier.release(lease)


def test_small_graph_goes_to_dask_untouched(pclient: ProxyClient, puts: Puts) -> None:
    expr = dask.base.collections_to_expr(delayed_calls(SMALL, 3), True).optimize()
    rewritten, lease = pclient.graphs.rewrite(expr, expr.__dask_keys__())
    assert rewritten is None and lease.keys == []
    assert pclient.compute(delayed_calls(SMALL, 3), sync=True) == [
        add_index(SMALL, i) for i in range(3)
    ]
    assert puts.keys == []


def test_store_empty_after_a_failed_task(pclient: ProxyClient, puts: Puts) -> None:
    failing = dask.delayed(fail)(BIG)
    with pytest.raises(RuntimeError, match="on purpose"):
        pclient.compute(failing, sync=True)
    future = pclient.compute(dask.delayed(total)(failing, BIG + 1))
    with pytest.raises(RuntimeError, match="on purpose"):
        future.result()
    wait_until_released(pclient)
    assert len(puts.keys) == 3
    assert puts.none_left()


def test_persisted_collection_keeps_its_inputs_until_dropped(
    pclient: ProxyClient, client: Any, puts: Puts
) -> None:
    persisted = pclient.persist(dask.delayed(add_index)(BIG, 5))
    distributed.wait(persisted)
    assert len(puts.keys) == 1 and not puts.none_left()  # kept: Dask may recompute from it
    assert pclient.proxier.in_use() != {}
    # Used again in another graph, as a persisted collection (Dask's futures inside).
    assert pclient.compute(dask.delayed(total)(persisted, BIG), sync=True) == add_index(
        BIG, 5
    ) + total(BIG)
    del persisted
    gc.collect()
    wait_until_released(pclient)
    assert puts.none_left()


# -- Dask's own options and objects pass through -------------------------------------------------


def test_keys_pure_annotations_and_retries_pass_through(
    pclient: ProxyClient, tmp_path: Any
) -> None:
    pure_a = dask.delayed(add_index, pure=True)(BIG, 1)
    pure_b = dask.delayed(add_index, pure=True)(BIG, 1)
    assert pure_a.key == pure_b.key
    named = dask.delayed(add_index)(BIG, 2, dask_key_name="my-own-key")
    future = pclient.compute(named)
    assert future.key == "my-own-key" and future.result() == add_index(BIG, 2)
    with dask.annotate(retries=2):
        retried = dask.delayed(flaky)(str(tmp_path / "marker"), BIG)
    assert pclient.compute(retried, sync=True) == float(np.sum(BIG))
    assert pclient.compute(dask.delayed(flaky)(str(tmp_path / "m2"), BIG), retries=1).result()


def test_dask_futures_inside_graphs(pclient: ProxyClient) -> None:
    upstream = pclient.submit(add_index, BIG, 1, pure=False)
    graph = dask.delayed(total)(upstream, BIG)
    assert pclient.compute(graph, sync=True) == add_index(BIG, 1) + total(BIG)


def test_workers_receive_prefetching_proxies(pclient: ProxyClient) -> None:
    seen = pclient.compute(dask.delayed(describe)(BIG, SMALL, big=BIG + 1), sync=True)
    assert seen["args"][0]["proxy"] and seen["args"][0]["prefetching"]
    assert not seen["args"][1]["proxy"]  # below the threshold: as it is
    assert seen["kwargs"]["big"]["proxy"] and seen["kwargs"]["big"]["prefetching"]
    assert seen["pid"] != os.getpid()


# -- as_current(): dask.compute and collection methods ------------------------------------------


def test_as_current_proxies_dask_compute_and_collection_methods(
    pclient: ProxyClient, client: Any, puts: Puts, small_graph_warning: None
) -> None:
    matrix = np.arange(200 * 200, dtype=np.float64).reshape(200, 200)
    array = da.from_array(matrix, chunks=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pclient.as_current():
            assert distributed.get_client() is client
            values = dask.compute(*delayed_calls(BIG, 4))
            column_sums = (array + 1).sum(axis=0).compute()
            persisted = (array * 2).persist()
            assert len(puts.keys) == 1 + 4 + 4  # BIG once, the chunks twice (two graphs)
            total_of_persisted = persisted.sum().compute()
            by_scheduler = dask.delayed(add_index)(BIG + 1, 0).compute(scheduler=pclient)
    assert graph_warnings(caught) == []
    assert list(values) == [add_index(BIG, i) for i in range(4)]
    assert np.array_equal(column_sums, (matrix + 1).sum(axis=0))
    assert total_of_persisted == float((matrix * 2).sum())
    assert by_scheduler == add_index(BIG + 1, 0)
    del persisted
    gc.collect()
    wait_until_released(pclient)
    assert puts.none_left()
