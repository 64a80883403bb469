"""Proxy futures: send a consumer the proxy of a result that does not exist yet.

No server needed (a FileStore in a temporary directory). The pipelining pattern: the
consumer process gets the proxy of the producer's result at once and does its own setup
while the producer computes; the first use of the proxy waits (bounded by the future's
timeout) until the producer, another process that received the pickled future, calls
``set_result``.

    python examples/proxy_futures.py
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from typing import Any

import proxystore as ps
from proxystore.exceptions import FutureStateError, StoreTimeoutError
from proxystore.proxy import is_resolved
from proxystore.store.future import ProxyFuture


def producer(future: ProxyFuture[Any]) -> None:
    """Compute a result and set it: the future re-creates its store in this process."""
    time.sleep(0.2)  # stands for a long computation
    future.set_result({"weights": [0.5, 0.25, 0.25], "produced_by": "producer"})


def consumer(proxy: Any, results: Any) -> None:
    """Set up (overlapping the producer), then use the proxy: this waits for the result."""
    setup = sum(range(100_000))  # stands for loading a model, opening files...
    results.put((setup, sum(proxy["weights"]), proxy["produced_by"]))


def main() -> None:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="proxy-futures-") as directory:
        store = ps.store.init_store(ps.store.STORES.FILE, "futures", store_dir=directory)
        try:
            future = store.future(timeout=60)
            proxy = future.proxy()  # usable and picklable before the result exists
            assert not future.done() and not is_resolved(proxy)

            results = context.Queue()
            consuming = context.Process(target=consumer, args=(proxy, results))
            producing = context.Process(target=producer, args=(future,))
            consuming.start()  # starts before the result exists
            producing.start()
            setup, total, origin = results.get(timeout=120)
            consuming.join(60)
            producing.join(60)
            assert consuming.exitcode == producing.exitcode == 0
            assert (setup, total, origin) == (sum(range(100_000)), 1.0, "producer")
            print(f"consumer got weights summing to {total} from the {origin} process")

            assert future.done()
            assert future.result() == {"weights": [0.5, 0.25, 0.25], "produced_by": "producer"}
            try:
                future.set_result("again")
            except FutureStateError as exc:  # also a concurrent.futures.InvalidStateError
                print(f"a second set_result is refused: {type(exc).__name__}")
            else:
                raise AssertionError("a second set_result was accepted")

            unset = store.future(timeout=0.1)
            try:
                unset.result()
            except StoreTimeoutError as exc:  # also a TimeoutError
                assert unset.key in str(exc)
                print("a wait past its timeout is an error naming the store, key and seconds")
            else:
                raise AssertionError("an unset future returned a result")
        finally:
            store.cleanup()
            ps.store.unregister_store("futures")


if __name__ == "__main__":
    main()
