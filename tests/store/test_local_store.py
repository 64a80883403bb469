"""LocalStore: no copies, any thread of the process, a clear error in any other process."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import ProcessLocalStoreError, StoreError
from proxystore.proxy import Proxy, extract, is_resolved
from proxystore.store.local import LocalFactory, LocalSettings, LocalStore
from proxystore.store.settings import StoreSettings


def total(x: Any) -> float:
    """Module level, so that process pools can run it."""
    return float(np.sum(x))


def resolve_in_thread(p: Proxy) -> tuple[int, Any]:
    return threading.get_ident(), extract(p)


@pytest.fixture
def local(store_factory: Any) -> LocalStore:
    store = store_factory("local")
    assert isinstance(store, LocalStore)
    return store


def test_get_returns_the_same_object(local: LocalStore) -> None:
    array = np.arange(1_000_000)
    key = local.set(array)
    assert local.get(key) is array
    assert local.get(key) is local.get(key)
    items: list[int] = [1]
    local.set(items, key=key)
    items.append(2)
    assert local.get(key) == [1, 2]  # stored by reference: later mutation is visible


def test_proxy_resolves_to_the_same_object(local: LocalStore) -> None:
    obj = {"big": np.zeros(100_000)}
    p = local.proxy(obj)
    assert extract(p) is obj
    assert p["big"] is obj["big"]


def test_raw_bytes(local: LocalStore) -> None:
    key = local.set(b"raw", serialize=False)
    assert local.get(key, deserialize=False) == b"raw"
    key2 = local.set(bytearray(b"\x02text"), serialize=False)
    assert local.get(key2) == "text"  # raw bytes in serialize() format deserialize on request


def test_is_cached_is_exists(local: LocalStore) -> None:
    key = local.set(1)
    assert local.is_cached(key) and local.is_cached(key, strict=True)
    local.evict(key)
    assert not local.is_cached(key)


def test_proxies_work_across_threads(local: LocalStore) -> None:
    objs = [np.full(10, i) for i in range(20)]
    proxies = [local.proxy(obj) for obj in objs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(resolve_in_thread, proxies))
    assert all(value is obj for (_, value), obj in zip(results, objs))
    assert {ident for ident, _ in results} != {threading.get_ident()}


def test_concurrent_set_get_from_threads(local: LocalStore) -> None:
    def work(i: int) -> bool:
        key = local.set(i)
        ok = local.get(key) == i and local.exists(key)
        local.evict(key)
        return ok and not local.exists(key)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(500)))


def test_resolve_async_in_process(local: LocalStore) -> None:
    from proxystore.proxy import resolve_async

    obj = [1, 2]
    p = local.proxy(obj)
    resolve_async(p)
    assert extract(p) is obj


def test_cleanup_drops_objects(local: LocalStore) -> None:
    key = local.set("x")
    local.cleanup()
    assert not local.exists(key)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_proxy_in_another_process_raises_process_local_error(
    local: LocalStore, method: str
) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available on this platform")
    p = local.proxy(np.arange(10))
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(total, p)
        with pytest.raises(ProcessLocalStoreError) as info:
            future.result(timeout=120)
    error = info.value
    assert isinstance(error, StoreError)
    assert "process-local" in str(error)
    assert local.name in str(error)
    assert error.store_name == local.name
    assert error.store_type == "LocalStore"
    # The proxy still works in the process that made it.
    assert not is_resolved(p)
    assert total(p) == 45.0


def test_proxy_after_unregister_says_objects_are_gone(store_factory: Any) -> None:
    from proxystore.exceptions import ProcessLocalStoreError
    from proxystore.proxy import extract
    from proxystore.store import get_store, unregister_store

    store = store_factory("local")
    p = store.proxy([1, 2, 3])
    unregister_store(store.name)
    with pytest.raises(ProcessLocalStoreError, match="no longer registered"):
        extract(p)
    assert get_store(store.name) is None  # no empty store was created behind the user's back


def test_built_from_its_settings_and_described_by_them() -> None:
    store = LocalStore("local-settings")
    assert store.settings == LocalSettings("local-settings")
    assert isinstance(store.settings, StoreSettings)
    assert store.settings.where == "LocalStore 'local-settings'"
    assert store.description.kwargs == {} and store.factory_class is LocalFactory
    assert store.description.type_path == "proxystore.store.local:LocalStore"
    again = LocalStore(store.description.name, **store.description.kwargs)
    assert again.description == store.description  # the description re-creates an equal store
    assert repr(store.settings) == "LocalSettings(name='local-settings')"
    with pytest.raises(ValueError, match="non-empty"):
        LocalSettings("")
