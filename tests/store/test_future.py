"""Proxy futures (``store.future()``): across threads and processes, and bounded waits.

Real stores only: a file store in a temporary directory, a private redis-server, the
simulated Globus sites and a ``LocalStore``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import pickle
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from proxystore.exceptions import (
    FutureStateError,
    FutureTimeoutError,
    InvalidKeyError,
    ProxyResolveMissingKey,
    ProxyStoreError,
    StoreError,
    StoreTimeoutError,
)
from proxystore.proxy import Proxy, extract, get_key, is_resolved
from proxystore.store import Store, get_store, init_store, unregister_store
from proxystore.store.future import DEFAULT_TIMEOUT, Future, FutureFactory, ProxyFuture
from proxystore.store.globus.endpoints import HOSTNAME_ENV
from proxystore.store.globus.store import GlobusStore
from proxystore.store.redis.backend import READY_SUFFIX
from tests.support.globus_sim import SITE_B
from tests.support.redis_server import private_redis
from tests.support.waiting import wait_until

KINDS = ["file", "redis", "local", "globus"]
SHARED_KINDS = ["file", "redis"]  # stores that another process can reach

_SPAWN = multiprocessing.get_context("spawn")
START_METHODS = ["spawn", "fork"]


# -- helpers run in child processes (module level: spawn imports them) -------------------------


def _produce(future: ProxyFuture[Any], value: Any) -> None:
    future.set_result(value)


def _consume(proxy: Proxy, started: Any, results: Any) -> None:
    started.set()
    try:
        results.put(("value", extract(proxy)))
    except ProxyStoreError as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _result_in_child(future: ProxyFuture[Any], results: Any) -> None:
    results.put(future.result(timeout=60))


def _address(store: Store) -> tuple[str, int]:
    host, _, port = store.address.rpartition(":")  # type: ignore[attr-defined]
    return host, int(port)


def _blocked_clients(address: tuple[str, int]) -> int:
    client = redis.Redis(host=address[0], port=address[1])
    try:
        return int(client.info("clients")["blocked_clients"])
    finally:
        client.close()


# -- across threads -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_proxy_resolved_before_set_result_gets_the_value(store_factory: Any, kind: str) -> None:
    store: Store = store_factory(kind)
    future = store.future(timeout=60)
    proxy = future.proxy()
    assert not future.done()
    assert get_key(proxy) == future.key
    started = threading.Event()
    seen: list[Any] = []

    def consumer() -> None:
        started.set()
        seen.append(extract(proxy))

    thread = threading.Thread(target=consumer)
    thread.start()
    started.wait(10)
    assert not future.done()
    future.set_result({"answer": 42})
    thread.join(60)
    assert not thread.is_alive()
    assert seen == [{"answer": 42}]
    assert future.done()
    assert future.result() == {"answer": 42}
    assert proxy["answer"] == 42


@pytest.mark.parametrize("kind", KINDS)
def test_many_waiters_all_wake(store_factory: Any, kind: str) -> None:
    store: Store = store_factory(kind)
    future = store.future(timeout=60)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        waits = [pool.submit(future.result) for _ in range(3)]
        proxies = [pool.submit(lambda: extract(future.proxy())) for _ in range(3)]
        future.set_result("ready")
        assert [w.result(60) for w in waits + proxies] == ["ready"] * 6


def test_resolve_async_waits_in_the_background(store_factory: Any) -> None:
    store: Store = store_factory("file")
    future = store.future(timeout=60)
    proxy = future.proxy()
    factory = proxy.__factory__
    assert isinstance(factory, FutureFactory)
    factory.resolve_async()
    future.set_result([1, 2, 3])
    assert list(proxy) == [1, 2, 3]


# -- across processes -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_consumer_process_waits_for_producer_process(
    store_factory: Any, kind: str, method: str
) -> None:
    context = multiprocessing.get_context(method)
    store: Store = store_factory(kind)
    future = store.future(timeout=120)
    started, results = context.Event(), context.Queue()
    consumer = context.Process(target=_consume, args=(future.proxy(), started, results))
    consumer.start()
    try:
        assert started.wait(60)
        if kind == "redis":  # the consumer is blocked on the server, not polling it
            wait_until(lambda: _blocked_clients(_address(store)) >= 1, 60, "the consumer to block")
        assert not future.done()
        producer = context.Process(target=_produce, args=(pickle.loads(pickle.dumps(future)), 7))
        producer.start()
        producer.join(120)
        assert producer.exitcode == 0
        assert results.get(timeout=120) == ("value", 7)
    finally:
        consumer.join(120)
    assert consumer.exitcode == 0
    assert future.done()


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_producer_process_first_then_consumer_process(
    store_factory: Any, kind: str, method: str
) -> None:
    context = multiprocessing.get_context(method)
    store: Store = store_factory(kind)
    future = store.future(timeout=120)
    producer = context.Process(target=_produce, args=(future, {"rows": [1, 2]}))
    producer.start()
    producer.join(120)
    assert producer.exitcode == 0
    assert future.done()
    started, results = context.Event(), context.Queue()
    consumer = context.Process(target=_consume, args=(future.proxy(), started, results))
    consumer.start()
    assert results.get(timeout=120) == ("value", {"rows": [1, 2]})
    consumer.join(120)
    assert consumer.exitcode == 0
    assert future.result() == {"rows": [1, 2]}


def test_result_in_another_process(store_factory: Any) -> None:
    store: Store = store_factory("redis")
    future = store.future()
    results = _SPAWN.Queue()
    child = _SPAWN.Process(target=_result_in_child, args=(future, results))
    child.start()
    future.set_result(b"bytes")
    assert results.get(timeout=120) == b"bytes"
    child.join(120)
    assert child.exitcode == 0


# -- bounded waits and states ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_result_times_out_naming_store_key_and_seconds(store_factory: Any, kind: str) -> None:
    store: Store = store_factory(kind)
    future = store.future()
    with pytest.raises(StoreTimeoutError) as info:
        future.result(timeout=0.2)
    message = str(info.value)
    assert isinstance(info.value, TimeoutError)
    assert type(store).__name__ in message and repr(store.name) in message
    assert future.key in message
    waited = float(re.search(r"after waiting ([0-9.]+) s", message).group(1))  # type: ignore[union-attr]
    assert waited >= 0.2
    assert info.value.store_name == store.name
    assert isinstance(info.value, FutureTimeoutError)
    assert info.value.key == future.key and info.value.waited >= 0.2
    copy = pickle.loads(pickle.dumps(info.value))  # errors cross process boundaries
    assert (type(copy), copy.key, str(copy)) == (FutureTimeoutError, future.key, message)
    assert not future.done()


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_proxy_times_out_with_the_future_timeout(store_factory: Any, kind: str) -> None:
    store: Store = store_factory(kind)
    future = store.future(timeout=0.2)
    proxy = pickle.loads(pickle.dumps(future.proxy()))
    with pytest.raises(FutureTimeoutError, match=re.escape(future.key)) as info:
        extract(proxy)
    assert f"{type(store).__name__} {store.name!r}" in str(info.value)
    assert info.value.waited >= 0.2 and "after waiting" in str(info.value)
    assert not is_resolved(proxy)
    future.set_result("late")  # a later resolve of the same proxy succeeds
    assert extract(proxy) == "late"


def test_except_timeout_error_as_concurrent_futures(store_factory: Any) -> None:
    future = store_factory("file").future()
    try:
        future.result(timeout=0)
    except concurrent.futures.TimeoutError:
        pass
    else:  # pragma: no cover - the test fails
        raise AssertionError("result(timeout=0) of an unset future returned")


@pytest.mark.parametrize("kind", KINDS)
def test_second_set_result_is_refused(store_factory: Any, kind: str) -> None:
    store: Store = store_factory(kind)
    future = store.future()
    future.set_result(1)
    with pytest.raises(FutureStateError) as info:
        future.set_result(2)
    assert isinstance(info.value, concurrent.futures.InvalidStateError)
    assert isinstance(info.value, ProxyStoreError)
    assert info.value.key == future.key
    assert future.key in str(info.value) and store.name in str(info.value)
    copy = pickle.loads(pickle.dumps(future))  # another producer: the store has the key
    with pytest.raises(FutureStateError):
        copy.set_result(3)
    assert future.result() == 1


def test_timeout_is_checked() -> None:
    store = init_store("local", "future-timeouts")
    try:
        for bad in (-1, float("inf"), float("nan")):
            with pytest.raises(ValueError, match="finite"):
                store.future(timeout=bad)
        with pytest.raises(TypeError):
            store.future(timeout="1")  # type: ignore[arg-type]
        future = store.future()
        assert future.timeout == DEFAULT_TIMEOUT
        with pytest.raises(ValueError):
            future.result(timeout=-1)
    finally:
        store.cleanup()
        unregister_store("future-timeouts")


def test_set_then_evicted_is_a_missing_key(store_factory: Any) -> None:
    store: Store = store_factory("redis")
    future = store.future(evict=True)
    proxy = future.proxy()
    future.set_result("once")
    assert extract(proxy) == "once"
    assert not future.done()  # evict=True: gone once resolved
    client = redis.Redis(*_address(store))
    try:
        assert client.exists((future.key + READY_SUFFIX).encode()) == 0
    finally:
        client.close()
    with pytest.raises(StoreTimeoutError):  # the announcement went with it: no stale wake
        future.result(timeout=0.2)
    with pytest.raises(ProxyResolveMissingKey):  # the proxy itself resolved once, and evicted
        proxy.__factory__.inner.resolve()


def test_future_pickles_small_and_keeps_its_settings(store_factory: Any) -> None:
    store: Store = store_factory("file")
    future = store.future(timeout=12.5, evict=True)
    copy = pickle.loads(pickle.dumps(future))
    assert (copy.key, copy.timeout, copy.evict) == (future.key, 12.5, True)
    assert len(pickle.dumps(future.proxy())) < 2000
    assert Future is ProxyFuture
    assert get_store(future.proxy()) is store
    assert future.key in repr(future) and store.name in repr(future)


def test_store_that_cannot_be_recreated(store_factory: Any) -> None:
    store: Store = store_factory("file")
    future = pickle.loads(pickle.dumps(store.future()))
    future.description = dataclasses.replace(
        future.description, type_path="proxystore.no_such_module:Nope", name="not-registered"
    )
    with pytest.raises(StoreError) as info:
        future.set_result(1)
    assert future.key in str(info.value) and "cannot re-create" in str(info.value)
    assert info.value.__cause__ is not None


def test_local_store_future_refuses_another_process() -> None:
    store = init_store("local", "future-local")
    try:
        future = store.future()
        future._pid = -1  # as in a process other than the one that made the store
        with pytest.raises(ProxyStoreError, match="process-local"):
            future.set_result(1)
    finally:
        store.cleanup()
        unregister_store("future-local")


def test_lifetime_evicts_the_result(store_factory: Any) -> None:
    from proxystore.store.lifetimes import ContextLifetime

    store: Store = store_factory("file")
    with ContextLifetime(store) as lifetime:
        future = store.future(lifetime=lifetime)
        future.set_result("x")
        assert future.done()
    assert not future.done()


# -- Redis: the wait blocks on the server ----------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[tuple[str, int]]:
    """A redis-server of this test alone, so its command counts are the test's."""
    with private_redis() as address:
        yield address


def _command_calls(address: tuple[str, int]) -> dict[str, int]:
    client = redis.Redis(host=address[0], port=address[1])
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.mark.parametrize(
    "options", [{}, {"stats": True}, {"signing_key": b"s" * 32, "stats": True}, {"protocol": 3}]
)
def test_redis_wait_sends_few_commands(own_redis: tuple[str, int], options: dict[str, Any]) -> None:
    """A 1.5 s wait is O(1) commands; polling every 50 ms would send dozens."""
    host, port = own_redis
    store = init_store("redis", "future-count", hostname=host, port=port, **options)
    try:
        future = store.future()
        before = _command_calls(own_redis)
        with pytest.raises(StoreTimeoutError):
            future.result(timeout=1.5)
        after = _command_calls(own_redis)
        sent = {name: after[name] - before.get(name, 0) for name in after}
        sent.pop("info", None)
        assert sent.get("blmove", 0) >= 1
        assert sum(sent.values()) <= 8, sent
    finally:
        store.close()
        unregister_store("future-count")


def test_redis_waiter_is_woken_by_set_result(own_redis: tuple[str, int]) -> None:
    host, port = own_redis
    store = init_store("redis", "future-wake", hostname=host, port=port, ttl=600)
    try:
        future = store.future(timeout=60)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(future.result)
            wait_until(lambda: _blocked_clients(own_redis) == 1, 30, "the waiter to block")
            future.set_result("woken")
            assert waiting.result(60) == "woken"
        client = redis.Redis(host=host, port=port)
        try:
            ready = (future.key + READY_SUFFIX).encode()
            assert client.lrange(ready, 0, -1) == [b"1"]  # rotated onto itself: still there
            assert 0 < client.pttl(ready) <= 600_000  # the store's ttl, as the value's
            store.evict(future.key)
            assert client.exists(ready) == 0
        finally:
            client.close()
    finally:
        store.close()
        unregister_store("future-wake")


def test_redis_ready_suffix_is_reserved(store_factory: Any) -> None:
    store: Store = store_factory("redis")
    with pytest.raises(InvalidKeyError, match="reserved"):
        store.set(1, key="k" + READY_SUFFIX)


def test_file_store_with_layers(store_factory: Any) -> None:
    """The wait passes through layers (signing, timing)."""
    store: Store = store_factory("file", signing_key=b"k" * 32, stats=True)
    future = store.future(timeout=30)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(future.result)
        future.set_result("signed")
        assert waiting.result(60) == "signed"


def test_globus_consumer_at_another_site(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set at site A, resolved at site B: the consumer waits for the file to arrive there."""
    store: Store = store_factory("globus")
    future = store.future(timeout=60)
    payload = pickle.dumps(future.proxy())
    unregister_store(store.name)  # "another process at site B": no store registered there
    monkeypatch.setenv(HOSTNAME_ENV, SITE_B)
    remote = pickle.loads(payload)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        resolving = pool.submit(extract, remote)
        future.set_result({"site": "a"})  # returns once the file is at every endpoint
        assert resolving.result(60) == {"site": "a"}
    recreated = get_store(remote)
    assert isinstance(recreated, GlobusStore) and recreated is not store
    recreated.close()


def test_redis_socket_timeout_too_short_to_block(store_factory: Any) -> None:
    """A socket timeout under 20 ms cannot carry a blocking command: the wait polls."""
    store: Store = store_factory("redis", socket_timeout=0.015)
    future = store.future()
    with pytest.raises(FutureTimeoutError):
        future.result(timeout=0.1)
    future.set_result("polled")
    assert future.result(timeout=5) == "polled"
