"""The one submit path every adapter uses: lease taken, released on error and when done."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from proxystore.integrations.policy import ProxyPolicy
from proxystore.integrations.proxier import ArgumentProxier
from proxystore.store import Store
from tests.integration_helpers import wait_until_released

BIG = np.arange(2_000.0)


class Owner:
    def __init__(self, proxier: ArgumentProxier) -> None:
        self.proxier = proxier


@pytest.fixture
def proxier(store_factory: Any) -> ArgumentProxier:
    store: Store = store_factory("file")
    return ArgumentProxier(store, ProxyPolicy(threshold=1_000), owner="test", in_process=True)


def test_released_when_send_raises(proxier: ArgumentProxier) -> None:
    def send(*args: Any, **kwargs: Any) -> Future[Any]:
        assert proxier.in_use(), "the argument is stored while the engine is called"
        raise RuntimeError("engine refused the task")

    with pytest.raises(RuntimeError, match="refused"):
        proxier.submit(send, (BIG,), {"again": BIG})
    assert proxier.in_use() == {}


def test_released_when_done_failed_or_cancelled(proxier: ArgumentProxier) -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        blocker = pool.submit(gate.wait, 30)
        done = proxier.submit(lambda *a: pool.submit(len, *a), (BIG,), {})
        failed = proxier.submit(lambda *a: pool.submit(int, *a), (BIG,), {})
        queued = proxier.submit(lambda *a: pool.submit(len, *a), (BIG,), {})
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
            [((BIG,), {}), ((other,), {})],
            lambda calls: [pool.submit(lambda: gate.wait(30) and len(calls))],
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
        proxier.submit_calls(calls, lambda sent: [Future(), Future()])
    assert proxier.in_use() == {}
