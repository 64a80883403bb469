"""The one submit path every adapter uses: lease taken, released on error and when done."""

from __future__ import annotations

import logging
import numbers
import pickle
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, ClassVar

import numpy as np
import pytest

from proxystore.exceptions import StoreTimeoutError
from proxystore.integrations import proxier as proxier_module
from proxystore.integrations.policy import AS_IS, ITEMS, SEND, STORE, ProxyPolicy
from proxystore.integrations.proxier import ArgumentProxier, PickledArgument
from proxystore.integrations.task import ProxyTask
from proxystore.proxy import Proxy
from proxystore.serialize import SerializationError
from proxystore.store import Store
from proxystore.store.description import StoreDescription
from proxystore.store.file import FileStore
from tests.support.integration_helpers import wait_until_released

BIG = np.arange(2_000.0)


class Owner:
    def __init__(self, proxier: ArgumentProxier) -> None:
        self.proxier = proxier


@pytest.fixture
def proxier(store_factory: Any) -> ArgumentProxier:
    store: Store = store_factory("file")
    return ArgumentProxier(store, ProxyPolicy(threshold=1_000), owner="test", pickling="never")


def test_released_when_send_raises(proxier: ArgumentProxier) -> None:
    def send(task: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        assert proxier.in_use(), "the argument is stored while the engine is called"
        raise RuntimeError("engine refused the task")

    with pytest.raises(RuntimeError, match="refused"):
        proxier.submit(len, send, (BIG,), {"again": BIG})
    assert proxier.in_use() == {}


def test_released_when_done_failed_or_cancelled(proxier: ArgumentProxier) -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        blocker = pool.submit(gate.wait, 30)
        done = proxier.submit(len, pool.submit, (BIG,), {})
        failed = proxier.submit(int, pool.submit, (BIG,), {})
        queued = proxier.submit(len, pool.submit, (BIG,), {})
        assert list(proxier.in_use().values()) == [3]  # one stored copy, three leases
        (key,) = proxier.in_use()
        assert queued.cancel()
        gate.set()
        assert blocker.result() and done.result() == 2_000
        with pytest.raises(TypeError):
            failed.result()
    wait_until_released(Owner(proxier))
    assert not proxier.store.exists(key)  # evicted after the last of the three


def test_many_calls_one_future_hold_every_lease(proxier: ArgumentProxier) -> None:
    gate = threading.Event()
    other = np.arange(3_000.0)
    with ThreadPoolExecutor(1) as pool:
        futures = proxier.submit_calls(
            len,
            [((BIG,), {}), ((other,), {})],
            lambda task, calls: [pool.submit(lambda: gate.wait(30) and len(calls))],
        )
        assert len(futures) == 1 and len(proxier.in_use()) == 2
        gate.set()
        assert futures[0].result() == 2
    wait_until_released(Owner(proxier))


def test_engine_returning_the_wrong_number_of_futures_is_an_error(
    proxier: ArgumentProxier,
) -> None:
    calls = [((BIG,), {}), ((BIG,), {}), ((BIG,), {})]
    with pytest.raises(RuntimeError, match="2 futures for 3 calls"):
        proxier.submit_calls(len, calls, lambda task, sent: [Future(), Future()])
    assert proxier.in_use() == {}


class FlakyEvictFileStore(FileStore):
    """A real FileStore whose evict() fails for the keys in ``failing`` (``times`` times each)."""

    failing: ClassVar[dict[str, int]] = {}

    def evict(self, key: str) -> None:
        left = self.failing.get(key, 0)
        if left:
            self.failing[key] = left - 1
            raise StoreTimeoutError(f"evict {key}: Redis did not answer within 1 s (simulated)")
        super().evict(key)


def test_a_failing_eviction_is_logged_retried_and_strands_nothing(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyEvictFileStore("flaky-evict", store_dir=str(tmp_path / "store"))
    proxier = ArgumentProxier(store, ProxyPolicy(threshold=1_000), owner="test", pickling="never")
    first, second = np.arange(1_000.0), np.arange(2_000.0)
    _, _, lease = proxier.carry_out((first, second), {})
    key_first, key_second = lease.keys
    FlakyEvictFileStore.failing[key_first] = 1
    with caplog.at_level(logging.WARNING, logger="proxystore.integrations.proxier"):
        proxier.release(lease)
    assert proxier.in_use() == {}
    assert not store.exists(key_second), "the rest of the lease was released"
    assert any(key_first in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)
    deadline = time.monotonic() + 10
    while store.exists(key_first):
        assert time.monotonic() < deadline, "the failed eviction was never retried"
        time.sleep(0.05)
    store.cleanup()


def test_an_eviction_that_keeps_failing_is_logged_as_an_error(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxier_module, "EVICT_RETRY_DELAYS", (0.01, 0.01))
    store = FlakyEvictFileStore("flaky-evict-2", store_dir=str(tmp_path / "store"))
    proxier = ArgumentProxier(store, ProxyPolicy(threshold=1_000), owner="test", pickling="never")
    _, _, lease = proxier.carry_out((np.arange(1_000.0),), {})
    (key,) = lease.keys
    FlakyEvictFileStore.failing[key] = 10
    with caplog.at_level(logging.WARNING, logger="proxystore.integrations.proxier"):
        proxier.release(lease)
        deadline = time.monotonic() + 10
        while not any(r.levelno == logging.ERROR for r in caplog.records):
            assert time.monotonic() < deadline, "no error was logged after the last retry"
            time.sleep(0.02)
    error = next(r for r in caplog.records if r.levelno == logging.ERROR).getMessage()
    assert key in error and "failed 3 times" in error and "flaky-evict-2" in error
    assert store.exists(key) and FlakyEvictFileStore.failing[key] == 7
    FlakyEvictFileStore.failing.pop(key)
    store.cleanup()


def test_calls_the_worker_side_need_not_touch_run_the_plain_function(
    proxier: ArgumentProxier,
) -> None:
    sent: list[Any] = []

    def send(task: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        sent.append(task)
        future: Future[Any] = Future()
        future.set_result(None)
        return future

    proxier.submit(len, send, (1, 2.5), {"flag": True, "none": None})
    proxier.submit(len, send, ("short text",), {})  # known size, below the threshold
    assert sent == [len, len], "scalars and small strings: no wrapper on the worker"
    proxier.submit(len, send, (BIG,), {})
    assert isinstance(sent[-1], ProxyTask) and sent[-1].fn is len
    wait_until_released(Owner(proxier))


def test_a_pickling_engine_gets_the_plain_function_for_small_arguments(
    store_factory: Any,
) -> None:
    """An engine that always pickles (a process pool) unwraps the bytes pickled to measure a
    small argument by unpickling them: the plain function goes, and nothing is stored."""
    store: Store = store_factory("file")
    sent: list[tuple[Any, tuple[Any, ...], Future[Any]]] = []

    def send(task: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        sent.append((task, args, Future()))
        return sent[-1][2]

    small = {f"k{i}": float(i) for i in range(50)}
    policy = ProxyPolicy(threshold=10_000)
    pickling = ArgumentProxier(store, policy, owner="t", pickling="always")
    pickling.submit(len, send, (small,), {"more": [1.0, "x"]})
    task, args, _ = sent[-1]
    assert task is len and type(args[0]) is PickledArgument
    assert pickle.loads(pickle.dumps(args[0])) == small  # what the pool's pickling delivers
    assert pickling.in_use() == {}
    # Large arguments still go by proxy, with the worker-side wrapper.
    pickling.submit(len, send, (BIG, small), {})
    task, args, _ = sent[-1]
    assert isinstance(task, ProxyTask) and task.fn is len and issubclass(type(args[0]), Proxy)
    assert list(pickling.in_use().values()) == [1]
    # An engine that may hand the arguments over as they are needs the wrapper to unwrap them.
    other = ArgumentProxier(store, policy, owner="t")
    other.submit(len, send, (small,), {})
    task, args, _ = sent[-1]
    assert isinstance(task, ProxyTask) and type(args[0]) is PickledArgument
    assert task(*args) == len(small)
    for _, _, future in sent:
        future.set_result(None)
    assert pickling.in_use() == {} and other.in_use() == {}


def test_scalars_only_reach_the_engine_untouched(proxier: ArgumentProxier) -> None:
    assert proxier.plan((1, 2.5, None, True), {"n": 3, "c": 1j}) is AS_IS
    assert AS_IS.sends_as_is
    # Small arguments that know their size change nothing either: the plain call.
    assert proxier.plan((1, "text"), {"s": b"x"}).sends_as_is
    assert not proxier.plan((1,), {"s": b"x" * 2_000}).sends_as_is  # large: stored
    assert not proxier.plan(({"a": 1},), {}).sends_as_is  # sent as the bytes pickled
    results = ArgumentProxier(
        proxier.store, ProxyPolicy(threshold=1_000, proxy_results=True), owner="t"
    )
    assert not results.plan((1,), {}).sends_as_is, "results by proxy need the wrapper"


def test_passes_through_follows_abc_registration() -> None:
    """The policy remembers its verdict per type, but not past a new ABC registration."""

    class Amount:
        pass

    policy = ProxyPolicy(threshold=10)
    assert not policy.passes_through(Amount())
    numbers.Number.register(Amount)
    assert policy.passes_through(Amount())  # a number now: never proxied
    # The remembered verdicts stay behind when the policy travels to a worker.
    assert pickle.loads(pickle.dumps(policy)) == policy


# -- the plan: one decision per call, made without side effects -----------------------------------


class CountingFileStore(FileStore):
    """A real FileStore that records what it is asked to store and to evict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.puts: list[Any] = []
        self.evicts: list[str] = []

    def set(self, obj: Any, *, key: str | None = None, serialize: bool = True) -> str:
        self.puts.append(obj)
        return super().set(obj, key=key, serialize=serialize)

    def evict(self, key: str) -> None:
        self.evicts.append(key)
        super().evict(key)


@pytest.fixture
def counting(tmp_path: Any) -> Iterator[CountingFileStore]:
    store = CountingFileStore("counting", store_dir=str(tmp_path / "counting"))
    yield store
    store.cleanup()


def _held(sent: list[Future[Any]]) -> Callable[..., Future[Any]]:
    """An engine that takes a call and holds it: its future is done when the test says so."""

    def send(task: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        sent.append(Future())
        return sent[-1]

    return send


def test_planning_stores_nothing_and_decides_every_argument(counting: CountingFileStore) -> None:
    proxier = ArgumentProxier(counting, ProxyPolicy(threshold=1_000), owner="t")
    small = {"a": [1, 2]}
    big = np.arange(1_000.0)
    with_big_item = [big, 1, "x"]  # large, but small once its array is a reference
    still_large = [big, *[np.arange(i, i + 20.0) for i in range(50)]]
    args = (1, small, big, with_big_item, still_large, "short")
    plan = proxier.plan(args, {"n": 2, "big": big})
    assert counting.puts == [] and proxier.in_use() == {}, "planning stored something"
    steps = dict(plan.args)
    assert sorted(steps) == [1, 2, 3, 4], "scalars and small known-size arguments: no step"
    assert steps[1].action == SEND and steps[1].measured is not None
    assert steps[2].action == STORE and steps[2].delivery == "proxy"  # arrays: proxy-safe
    assert steps[3].action == ITEMS and [k for k, _ in steps[3].items] == [0]
    assert steps[4].action == STORE and steps[4].delivery == "object"  # whole, as passed
    assert dict(plan.kwargs)["big"].action == STORE
    assert plan.nested == {3} and plan.task and plan.sends_pickled and not plan.sends_as_is
    assert [type(obj) for obj in plan.stores] == [np.ndarray, np.ndarray, list, np.ndarray]
    assert "ndarray" in repr(steps[2]) and "8000 bytes" in repr(steps[2])
    # Pure: the same call planned again is decided the same way, and still nothing is stored.
    again = proxier.plan(args, {"n": 2, "big": big})
    assert [(p, s.action) for p, s in again.args] == [(p, s.action) for p, s in plan.args]
    assert counting.puts == [] and counting.evicts == []


def test_a_still_large_container_is_stored_whole_and_nothing_is_evicted(
    counting: CountingFileStore,
) -> None:
    """Its items are never stored first (and evicted again) to find out it must go whole."""
    proxier = ArgumentProxier(counting, ProxyPolicy(threshold=1_000), owner="t")
    big = np.arange(1_000.0)
    still_large = [big, *[np.arange(i, i + 20.0) for i in range(50)]]
    sent: list[Future[Any]] = []
    proxier.submit(len, _held(sent), (still_large,), {})
    assert len(counting.puts) == 1, f"stored {len(counting.puts)} times for one container"
    assert counting.evicts == [], "something stored in the call was evicted in the same call"
    (key,) = proxier.in_use()
    # A container small once its large items are references: only the items are stored.
    proxier.submit(len, _held(sent), ([np.arange(2_000.0), 1, "x"],), {})
    assert len(counting.puts) == 2 and counting.evicts == []
    for future in sent:
        future.set_result(None)
    assert proxier.in_use() == {} and key in counting.evicts  # evicted after the task only


def test_measured_bytes_are_what_is_stored_and_sent(counting: CountingFileStore) -> None:
    """Pickled once: the plan's bytes go to the store (large) or to the engine (small)."""
    proxier = ArgumentProxier(counting, ProxyPolicy(threshold=1_000), owner="t")
    large = {f"k{i}": float(i) for i in range(200)}
    small = {"a": 1.0}
    plan = proxier.plan((large, small), {})
    (_, store_step), (_, send_step) = plan.args
    assert store_step.measured is not None and send_step.measured is not None
    args, _, lease = proxier.carry_out((large, small), {}, plan)
    assert counting.puts == [store_step.measured.pickled], "the measured bytes were not stored"
    assert type(args[1]) is PickledArgument
    assert args[1].stream is send_step.measured.pickled.stream  # type: ignore[union-attr]
    # An object in use by another call is planned without being measured (pickled) again.
    again = proxier.plan((large,), {})
    assert again.args[0][1].action == STORE and again.args[0][1].measured is None
    _, _, second = proxier.carry_out((large,), {}, again)
    assert len(counting.puts) == 1 and proxier.in_use() == {lease.keys[0]: 2}
    proxier.release(lease)
    proxier.release(second)
    assert proxier.in_use() == {}


def test_scalar_calls_share_one_plan_and_reach_the_engine_as_they_are(
    counting: CountingFileStore,
) -> None:
    proxier = ArgumentProxier(counting, ProxyPolicy(threshold=1_000), owner="t")
    assert proxier.plan((), {}) is AS_IS and proxier.plan((1, None), {"x": 2.5}) is AS_IS
    sent: list[Any] = []

    def send(task: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        sent.append((task, args, kwargs))
        return Future()

    proxier.submit(len, send, (1, True), {"c": 1j}, AS_IS)
    assert sent == [(len, (1, True), {"c": 1j})] and counting.puts == []
    # Keyword arguments named as the engine's own options are left alone, however large.
    options = proxier.planner({"workers"})
    assert options((1,), {"workers": ["tcp://10.0.0.2:1"] * 500}) is AS_IS


def test_a_plan_error_names_the_adapter_and_the_argument(counting: CountingFileStore) -> None:
    proxier = ArgumentProxier(counting, ProxyPolicy(threshold=10), owner="MyAdapter")
    with pytest.raises(SerializationError, match=r"MyAdapter: keyword argument 'lock'"):
        proxier.plan((1,), {"lock": threading.Lock()})
    with pytest.raises(SerializationError, match=r"MyAdapter: argument 0 \(of type list\)"):
        proxier.plan(([np.arange(100.0), threading.Lock()],), {})
    # A container holding a future is looked into item by item: the item is named.
    with pytest.raises(SerializationError, match=r"item 1 of argument 0 \(of type lock\)"):
        proxier.plan(([Future(), threading.Lock()],), {})
    assert counting.puts == []


def test_the_engine_pickling_is_one_option_checked_at_construction(
    counting: CountingFileStore,
) -> None:
    with pytest.raises(ValueError, match="pickling= must be one of never, always, maybe"):
        ArgumentProxier(counting, ProxyPolicy(), owner="t", pickling="sometimes")  # type: ignore[arg-type]


def test_store_ref_is_a_deprecated_name_of_the_store_description() -> None:
    from proxystore.integrations import transit

    with pytest.warns(DeprecationWarning, match="StoreDescription"):
        assert transit.StoreRef is StoreDescription


class GatedFileStore(CountingFileStore):
    """Its first ``set`` waits (bounded) until the test opens the gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def set(self, obj: Any, *, key: str | None = None, serialize: bool = True) -> str:
        if not self.puts:
            self.puts.append(obj)
            assert self.gate.wait(30), "the test never opened the gate"
            return FileStore.set(self, obj, key=key, serialize=serialize)
        return super().set(obj, key=key, serialize=serialize)


def test_calls_storing_the_same_object_at_once_store_one_copy_and_evict_none(
    tmp_path: Any,
) -> None:
    """A second call needing an object the first is still storing waits for that copy."""
    store = GatedFileStore("gated", store_dir=str(tmp_path / "gated"))
    proxier = ArgumentProxier(store, ProxyPolicy(threshold=1_000), owner="t", pickling="never")
    big = np.arange(2_000.0)
    sent: list[Future[Any]] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            proxier.submit(len, _held(sent), (big,), {})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    deadline = time.monotonic() + 10
    while not store.puts:  # the first call is inside the store's set
        assert time.monotonic() < deadline, "the first call never started storing"
        time.sleep(0.01)
    second = threading.Thread(target=call)
    second.start()
    entry = proxier._entries.get(id(big))
    while len(store.puts) < 2 and (entry is None or entry.users < 2):
        assert time.monotonic() < deadline, "the second call neither stored nor waited"
        time.sleep(0.01)
        entry = proxier._entries.get(id(big))
    store.gate.set()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive() and errors == []
    assert len(store.puts) == 1, "the object was stored twice"
    assert store.evicts == [], "a call evicted what it had just stored"
    assert list(proxier.in_use().values()) == [2]
    for future in sent:
        future.set_result(None)
    assert proxier.in_use() == {} and len(store.evicts) == 1
    store.cleanup()


def test_a_call_waiting_for_another_calls_store_gives_up_in_bounded_time(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for a copy another thread is storing is bounded, and says what it waited on."""
    import proxystore.integrations.proxier as proxier_module

    monkeypatch.setattr(proxier_module, "SHARED_STORE_WAIT", 0.3)
    store = GatedFileStore("gated-wait", store_dir=str(tmp_path / "gated"))
    proxier = ArgumentProxier(store, ProxyPolicy(threshold=1_000), owner="t", pickling="never")
    big = np.arange(2_000.0)
    sent: list[Future[Any]] = []
    first = threading.Thread(target=lambda: proxier.submit(len, _held(sent), (big,), {}))
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not store.puts:  # the first call is inside the store's set, held by the gate
            assert time.monotonic() < deadline, "the first call never started storing"
            time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError, match="storing the same ndarray") as info:
            proxier.submit(len, _held(sent), (big,), {})
        assert 0.25 <= time.monotonic() - started < 5
        assert "gated-wait" in str(info.value)
    finally:
        store.gate.set()
        first.join(10)
    assert not first.is_alive()
    assert list(proxier.in_use().values()) == [1]  # the waiting call holds nothing
    for future in sent:
        future.set_result(None)
    assert proxier.in_use() == {}
    store.cleanup()


def test_a_failed_store_leaves_nothing_behind_and_the_next_call_stores(
    counting: CountingFileStore,
) -> None:
    proxier = ArgumentProxier(counting, ProxyPolicy(threshold=1_000), owner="t")
    big = np.arange(2_000.0)
    counting.set = _failing_once(counting.set)  # type: ignore[method-assign]
    with pytest.raises(StoreTimeoutError, match="simulated"):
        proxier.carry_out((big,), {})
    assert proxier.in_use() == {} and proxier._entries == {}
    _, _, lease = proxier.carry_out((big,), {})
    assert len(lease.keys) == 1 and proxier.store.exists(lease.keys[0])
    proxier.release(lease)


def _failing_once(set_: Callable[..., str]) -> Callable[..., str]:
    failed: list[bool] = []

    def once(obj: Any, **kwargs: Any) -> str:
        if not failed:
            failed.append(True)
            raise StoreTimeoutError("set: Redis did not answer within 1 s (simulated)")
        return set_(obj, **kwargs)

    return once
