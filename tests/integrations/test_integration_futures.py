"""ProxyExecutor over real thread and process pools, with real File and Redis stores."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from proxystore.integrations.futures import ProxyExecutor
from proxystore.integrations.policy import ProxyPolicy
from proxystore.proxy import Proxy, extract
from proxystore.serialize import SerializationError
from proxystore.store import Store
from tests.support.integration_helpers import (
    describe,
    large_arguments,
    make_big,
    make_result,
    mapped_from_store,
    result_type,
    sleep_then_total,
    total,
    transparency_probe,
    wait_until_released,
)

THRESHOLD = 10_000
BIG = np.arange(THRESHOLD, dtype=np.float64)  # 80 KB: above the threshold
SMALL = np.arange(10, dtype=np.float64)  # 80 B: below


def make_pool(kind: str) -> Executor:
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=2)
    return ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context(kind))


@pytest.fixture(params=["thread", "fork", "spawn"])
def pool_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["file", "redis"])
def remote_store(request: pytest.FixtureRequest, store_factory: Any) -> Store:
    return store_factory(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def shm_store(store_factory: Any, tmp_path: Any) -> Iterator[Store]:
    import shutil
    import uuid

    from proxystore.store import init_store, unregister_store

    name = f"shm-{uuid.uuid4().hex[:8]}"
    store = init_store("file", name, store_dir=f"/dev/shm/{name}")
    assert getattr(store, "zero_copy", False)
    yield store
    store.cleanup()
    unregister_store(name)
    shutil.rmtree(f"/dev/shm/{name}", ignore_errors=True)


@pytest.fixture
def executor(pool_kind: str, remote_store: Store) -> Iterator[ProxyExecutor]:
    with ProxyExecutor(make_pool(pool_kind), store=remote_store, threshold=THRESHOLD) as ex:
        yield ex


def test_keep_objects_when_evict_disabled(remote_store: Store) -> None:
    policy = ProxyPolicy(threshold=THRESHOLD, evict=False)
    with ProxyExecutor(ThreadPoolExecutor(1), store=remote_store, policy=policy) as ex:
        key = ex.submit(describe, BIG).result()["args"][0]["key"]
        wait_until_released(ex)
    assert remote_store.exists(key)
    remote_store.evict(key)


def test_map_chunksize_and_timeout(executor: ProxyExecutor) -> None:
    xs = [BIG + i for i in range(5)]
    assert list(executor.map(total, xs, chunksize=2)) == [total(x) for x in xs]
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(total, xs, chunksize=0)
    results = executor.map(sleep_then_total, [5.0], [BIG], timeout=0.2)
    with pytest.raises(TimeoutError):
        list(results)


def test_results_proxied_when_asked(pool_kind: str, remote_store: Store) -> None:
    policy = ProxyPolicy(threshold=THRESHOLD, proxy_results=True)
    with ProxyExecutor(make_pool(pool_kind), store=remote_store, policy=policy) as ex:
        big = ex.submit(make_big, THRESHOLD).result()
        small = ex.submit(make_big, 3).result()
    assert issubclass(type(big), Proxy)
    assert np.array_equal(extract(big), np.arange(THRESHOLD, dtype=np.float64))
    assert not issubclass(type(small), Proxy)


def test_existing_proxies_pass_through(executor: ProxyExecutor) -> None:
    proxy = executor.store.proxy(BIG)
    seen = executor.submit(describe, proxy).result()
    assert seen["args"][0]["proxy"]
    assert executor.proxier.in_use() == {}  # not re-stored, not leased


def test_bad_input_fails_at_construction_or_submit(store_factory: Any) -> None:
    file_store = store_factory("file")
    local = store_factory("local")
    with pytest.raises(TypeError, match="store"):
        ProxyExecutor(ThreadPoolExecutor(1), store=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no store is registered"):
        ProxyExecutor(ThreadPoolExecutor(1), store="no-such-store")
    with pytest.raises(ValueError, match=">= 0"):
        ProxyExecutor(ThreadPoolExecutor(1), store=file_store, threshold=-1)
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match="process"):
            ProxyExecutor(pool, store=local)
        ex = ProxyExecutor(pool, store=file_store, threshold=THRESHOLD)
        with pytest.raises(SerializationError, match="cannot be serialized"):
            ex.submit(total, threading.Lock())
        with pytest.raises(SerializationError, match="cannot be pickled"):
            ex.submit(lambda: 1)
        assert ex.proxier.in_use() == {}
    # A thread pool runs in-process, so a LocalStore is fine there.
    with ProxyExecutor(ThreadPoolExecutor(1), store=local, threshold=THRESHOLD) as ex:
        assert ex.submit(total, BIG).result() == total(BIG)


def test_store_by_name(remote_store: Store) -> None:
    with ProxyExecutor(ThreadPoolExecutor(1), store=remote_store.name, threshold=1) as ex:
        assert ex.store is remote_store
        assert ex.submit(total, BIG).result() == total(BIG)


def test_same_host_zero_copy_on_dev_shm(pool_kind: str, shm_store: Store) -> None:
    """With a FileStore under /dev/shm the workers map the array instead of copying it."""
    with ProxyExecutor(make_pool(pool_kind), store=shm_store, threshold=THRESHOLD) as ex:
        assert ex.submit(mapped_from_store, BIG).result()
        assert not ex.submit(mapped_from_store, SMALL).result()  # by value


# -- transparency: the body computes what it computes under the plain engine --------------------


@pytest.mark.parametrize("kind", sorted(large_arguments()))
@pytest.mark.parametrize("workers", ["thread", "spawn"])
def test_body_computes_what_the_plain_pool_computes(
    workers: str, kind: str, remote_store: Store
) -> None:
    value = large_arguments()[kind]
    with make_pool(workers) as plain:
        expected = plain.submit(transparency_probe, value).result()
    with ProxyExecutor(make_pool(workers), store=remote_store, threshold=THRESHOLD) as ex:
        _, _, lease = ex.proxier.carry_out((value,), {})
        assert lease.keys, f"{kind} must travel through the store"
        ex.proxier.release(lease)
        assert ex.submit(transparency_probe, value).result() == expected


@pytest.mark.parametrize("workers", ["thread", "spawn"])
def test_results_of_builtin_kinds_come_back_as_the_plain_pool_returns_them(
    workers: str, remote_store: Store
) -> None:
    policy = ProxyPolicy(threshold=THRESHOLD, proxy_results=True)
    with ProxyExecutor(make_pool(workers), store=remote_store, policy=policy) as ex:
        for kind in ("dict", "bytes", "list-of-arrays"):
            result = ex.submit(make_result, kind).result()
            assert type(result) is type(large_arguments()[kind]), kind
        assert ex.submit(result_type, ex.submit(make_big, THRESHOLD).result()).result() in (
            "Proxy",
            "ndarray",
        )


def test_deliver_as_chooses_per_type(remote_store: Store) -> None:
    policy = ProxyPolicy(threshold=THRESHOLD, deliver_as={dict: "proxy", np.ndarray: "object"})
    big_dict = large_arguments()["dict"]
    with ProxyExecutor(make_pool("spawn"), store=remote_store, policy=policy) as ex:
        assert ex.submit(result_type, big_dict).result() == "Proxy"
        assert ex.submit(result_type, BIG).result() == "ndarray"
        assert ex.submit(result_type, large_arguments()["bytes"]).result() == "bytes"


def test_small_arguments_reach_a_process_pool_with_the_plain_function(
    remote_store: Store,
) -> None:
    """Below the threshold a process pool gets what the plain pool would: the function itself
    (the bytes pickled to measure an argument unpickle into it on the way)."""
    pool = make_pool("fork")
    sent: list[Any] = []
    submit = pool.submit

    def spy(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        sent.append(fn)
        return submit(fn, *args, **kwargs)

    pool.submit = spy  # type: ignore[method-assign]
    with ProxyExecutor(pool, store=remote_store, threshold=THRESHOLD) as ex:
        assert ex.submit(total, [1.0, 2.0], 1).result() == 4.0
        assert sent == [total]
        assert ex.submit(total, BIG, [1.0]).result() == total(BIG) + 1.0
        assert type(sent[-1]).__name__ == "ProxyTask"
        wait_until_released(ex)
