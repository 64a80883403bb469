"""RedisStore tour: set/get, proxies, a proxy resolved in a fresh process, async and strict.

Needs a running Redis server; it never flushes a database and deletes every key it writes.

    REDIS_HOST=127.0.0.1 REDIS_PORT=6379 python examples/redis_example.py

REDIS_HOST and REDIS_PORT default to 127.0.0.1 and 6379.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import proxystore as ps
from proxystore.exceptions import StoreConnectionError
from proxystore.proxy import Proxy, get_key, is_resolved, resolve_async
from proxystore.store import Store

STORE_NAME = "redis-example"


def total_in_fresh_process(data: Proxy) -> tuple[bool, float, bool]:
    """Run in a spawned worker: the proxy re-creates the RedisStore here on first use."""
    registered_before = ps.store.get_store(data) is not None  # does not resolve the proxy
    total = float(data.sum())  # first use: re-create the store from the factory, fetch
    registered_after = ps.store.get_store(data) is not None
    return registered_before, total, registered_after


def key_of(proxy: Proxy) -> str:
    """Return the store key of a store proxy."""
    key = get_key(proxy)
    assert key is not None
    return key


def run(store: Store, host: str, port: int, written: list[str]) -> None:
    # An initialized store can be looked up by name anywhere in this process.
    assert ps.store.get_store(STORE_NAME) is store

    # Plain get/set.
    key = store.set({"answer": 42})
    written.append(key)
    assert store.get(key) == {"answer": 42}
    print(f"set/get: key {key} holds {store.get(key)}")

    # store.proxy(obj) stores the object and returns a proxy to it.
    data = np.arange(1_000_000, dtype=np.float64)
    proxy = store.proxy(data)
    written.append(key_of(proxy))
    assert isinstance(proxy, Proxy) and not is_resolved(proxy)
    print(f"proxy: {data.nbytes} bytes stored, {len(pickle.dumps(proxy))} bytes pickled")

    # store.proxy(key=...) refers to an object that is already in the store.
    by_key = store.proxy(key=key)
    assert by_key["answer"] == 42
    print(f"proxy(key=...): resolved to {by_key}")

    # Pickling ships only the factory; a spawned process re-creates the store from it.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        before, total, after = pool.submit(total_in_fresh_process, proxy).result()
    assert not before and after and total == float(data.sum())
    print(f"fresh process: store registered before use: {before}, after: {after}, sum {total}")

    # resolve_async starts the fetch in a background thread; first use waits for it.
    background = store.proxy(np.ones(1_000))
    written.append(key_of(background))
    resolve_async(background)
    # ... other work overlaps with the fetch here ...
    assert float(np.sum(background)) == 1_000.0
    print("resolve_async: the background fetch finished on first use")

    # strict=True: the proxy resolves to the newest version even when a stale copy is cached.
    version_key = store.set({"version": 1})
    written.append(version_key)
    store.get(version_key)  # caches version 1 in this process
    writer = ps.store.init_store(
        ps.store.STORES.REDIS, name=f"{STORE_NAME}-writer", hostname=host, port=port
    )
    try:
        writer.set({"version": 2}, key=version_key)  # another client overwrites the key
    finally:
        writer.cleanup()
        ps.store.unregister_store(writer.name)
    loose = store.proxy(key=version_key)
    strict = store.proxy(key=version_key, strict=True)
    print(f"strict: default proxy saw version {loose['version']} (from the local cache)")
    assert strict["version"] == 2
    print(f"strict: strict proxy saw version {strict['version']}")

    # evict=True: the object is deleted from Redis once the proxy has resolved.
    once = store.proxy([1, 2, 3], evict=True)
    once_key = key_of(once)
    written.append(once_key)
    assert store.exists(once_key)
    assert sum(once) == 6
    assert not store.exists(once_key)
    print("evict=True: the key is gone after the proxy resolved")


def main() -> None:
    host = os.environ.get("REDIS_HOST", "127.0.0.1")
    port = int(os.environ.get("REDIS_PORT", "6379"))
    try:
        store = ps.store.init_store(
            ps.store.STORES.REDIS, name=STORE_NAME, hostname=host, port=port
        )
    except StoreConnectionError as exc:
        raise SystemExit(f"redis_example: {exc}") from exc

    written: list[str] = []
    try:
        run(store, host, port, written)
    finally:
        for key in written:
            store.evict(key)
        assert not any(store.exists(key) for key in written)
        store.cleanup()
        ps.store.unregister_store(STORE_NAME)
    print("redis example OK")


if __name__ == "__main__":
    main()
