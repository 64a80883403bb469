"""The registry: STORES, init_store, get_store, thread safety, lazy backends, missing extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import proxystore as ps
from proxystore.exceptions import MissingExtraError, ProxyStoreError, StoreError, UnknownStoreError
from proxystore.factory import SimpleFactory
from proxystore.proxy import Proxy, is_resolved
from proxystore.store import (
    STORES,
    Store,
    get_store,
    init_store,
    register_store,
    registered_stores,
    unregister_store,
)
from proxystore.store.file import FileStore
from proxystore.store.local import LocalStore
from proxystore.store.registry import get_or_init_store, resolve_store_class


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Names to register under; whatever a test registers under them is removed afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        store = get_store(name)
        if store is not None:
            store.cleanup()
        unregister_store(name)


def new_name(names: list[str]) -> str:
    name = f"registry-{uuid.uuid4().hex[:8]}"
    names.append(name)
    return name


class CustomStore(LocalStore):
    """A user-defined store type, importable as ``tests.store.test_registry:CustomStore``."""


def test_stores_members() -> None:
    assert [m.name for m in STORES] == ["LOCAL", "FILE", "REDIS", "GLOBUS"]
    for member in STORES:
        module, _, cls = member.value.partition(":")
        assert module.startswith("proxystore.store.") and cls.endswith("Store")
    assert STORES.get_str_by_type(FileStore) == "FILE"
    assert STORES.get_str_by_type(LocalStore) == "LOCAL"
    for member in STORES:  # every store class is named by its public path, as STORES names it
        cls = resolve_store_class(member)
        assert cls.type_path() == member.value
        assert STORES.get_str_by_type(cls) == member.name
        assert cls.factory_class.__module__ == member.value.partition(":")[0]
    with pytest.raises(KeyError):
        STORES.get_str_by_type(CustomStore)


@pytest.mark.parametrize(
    "store_type",
    [
        STORES.LOCAL,
        "local",
        "LOCAL",
        "Local",
        "LocalStore",
        LocalStore,
        "proxystore.store.local:LocalStore",
    ],
    ids=repr,
)
def test_init_store_type_spellings(store_type: Any, names: list[str]) -> None:
    name = new_name(names)
    store = init_store(store_type, name)
    assert type(store) is LocalStore
    assert store.name == name
    assert get_store(name) is store
    assert registered_stores()[name] is store


def test_init_store_redis_spellings(redis_address: tuple[str, int], names: list[str]) -> None:
    from proxystore.store.redis import RedisStore

    host, port = redis_address
    for store_type in (STORES.REDIS, "redis", "REDIS", RedisStore, STORES.REDIS.value):
        name = new_name(names)
        store = init_store(store_type, name, hostname=host, port=port)
        assert type(store) is RedisStore
        assert get_store(name) is store


def test_init_store_file_passes_kwargs(tmp_path: Path, names: list[str]) -> None:
    name = new_name(names)
    store = init_store(STORES.FILE, name, store_dir=tmp_path / "s", cache_size=2)
    assert isinstance(store, FileStore)
    assert store.store_dir == str(tmp_path / "s")
    assert store.cache_size == 2


def test_init_store_custom_class_and_path(names: list[str]) -> None:
    by_class = init_store(CustomStore, new_name(names))
    assert type(by_class) is CustomStore
    by_path = init_store("tests.store.test_registry:CustomStore", new_name(names))
    assert type(by_path) is CustomStore
    assert type(by_class).type_path() == "tests.store.test_registry:CustomStore"


@pytest.mark.parametrize(
    "store_type",
    [
        "nosuchstore",
        "",
        "no.such.module:Store",
        "proxystore.store.file:NoSuchClass",
        "proxystore.store.file:os",  # exists, but is not a Store subclass
        dict,
        42,
        None,
    ],
    ids=repr,
)
def test_unknown_store_type(store_type: Any, names: list[str]) -> None:
    name = new_name(names)
    with pytest.raises(ValueError) as info:
        init_store(store_type, name)
    assert isinstance(info.value, UnknownStoreError)
    assert isinstance(info.value, StoreError)
    assert get_store(name) is None  # nothing registered on failure


def test_unknown_store_message_lists_known_types() -> None:
    with pytest.raises(UnknownStoreError) as info:
        resolve_store_class("nosuchstore")
    message = str(info.value)
    assert "nosuchstore" in message
    for member in STORES:
        assert member.name in message


def test_reinit_under_a_name_replaces(tmp_path: Path, names: list[str]) -> None:
    name = new_name(names)
    first = init_store("local", name)
    key = first.set("in first")
    second = init_store("local", name)
    assert second is not first
    assert get_store(name) is second
    assert not second.exists(key)
    third = init_store("file", name, store_dir=tmp_path / "third")
    assert get_store(name) is third
    assert list(registered_stores()).count(name) == 1


def test_get_store_by_name_and_by_proxy(names: list[str]) -> None:
    name = new_name(names)
    store = init_store("local", name)
    p = store.proxy([1, 2, 3])
    assert get_store(name) is store
    assert get_store(p) is store
    assert not is_resolved(p)  # looking up the store does not resolve the proxy


def test_get_store_absent_is_none(names: list[str]) -> None:
    assert get_store(f"absent-{uuid.uuid4().hex}") is None
    assert get_store(Proxy(SimpleFactory(1))) is None  # not a store proxy
    name = new_name(names)
    store = init_store("local", name)
    p = store.proxy("x")
    unregister_store(name)
    assert get_store(p) is None
    assert not is_resolved(p)


def test_register_and_unregister(names: list[str]) -> None:
    name = new_name(names)
    store = LocalStore(name)
    assert get_store(name) is None  # constructing does not register
    register_store(store)
    assert get_store(name) is store
    unregister_store(name)
    assert get_store(name) is None
    unregister_store(name)  # a second unregister is a no-op


def test_registered_stores_is_read_only_snapshot(names: list[str]) -> None:
    name = new_name(names)
    store = init_store("local", name)
    view = registered_stores()
    assert view[name] is store
    with pytest.raises(TypeError):
        view["other"] = store  # type: ignore[index]
    with pytest.raises(TypeError):
        del view[name]  # type: ignore[attr-defined]
    later = new_name(names)
    init_store("local", later)
    assert later not in view  # a snapshot: later registrations do not appear in it
    assert later in registered_stores()


def test_get_or_init_store_returns_existing(names: list[str]) -> None:
    name = new_name(names)
    store = init_store("local", name)
    assert get_or_init_store("local", name, {}) is store


def test_get_or_init_store_is_atomic_across_threads(tmp_path: Path, names: list[str]) -> None:
    name = new_name(names)
    count = 32
    barrier = threading.Barrier(count)
    results: list[Store] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            store = get_or_init_store(STORES.FILE.value, name, {"store_dir": str(tmp_path / "d")})
            with lock:
                results.append(store)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == count
    assert len({id(store) for store in results}) == 1  # every thread got the same object
    assert get_store(name) is results[0]


def test_concurrent_init_store_of_many_names(names: list[str]) -> None:
    count = 24
    wanted = [new_name(names) for _ in range(count)]
    barrier = threading.Barrier(count)
    made: dict[str, Store] = {}

    def worker(name: str) -> None:
        barrier.wait(timeout=30)
        made[name] = init_store("local", name)

    threads = [threading.Thread(target=worker, args=(name,)) for name in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    snapshot = registered_stores()
    for name in wanted:
        assert snapshot[name] is made[name]


def test_proxies_resolving_in_parallel_threads_share_one_recreated_store(
    tmp_path: Path, names: list[str]
) -> None:
    """Parallel proxies whose store is not registered re-create it exactly once."""
    name = new_name(names)
    creator = FileStore(name, store_dir=tmp_path / "shared")  # not registered
    keys = [creator.set(i) for i in range(16)]
    proxies = [creator.proxy(key=key) for key in keys]
    barrier = threading.Barrier(len(proxies))
    seen: list[Any] = []

    def use(p: Proxy) -> None:
        barrier.wait(timeout=30)
        seen.append(p + 0)

    threads = [threading.Thread(target=use, args=(p,)) for p in proxies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(seen) == list(range(16))
    recreated = get_store(name)
    assert isinstance(recreated, FileStore) and recreated is not creator
    assert recreated.store_dir == creator.store_dir
    assert [get_store(p) for p in proxies] == [recreated] * len(proxies)


MISSING_REDIS = textwrap.dedent(
    """
    import sys
    sys.modules["redis"] = None  # as if the redis extra were not installed

    import proxystore as ps
    from proxystore.exceptions import MissingExtraError, ProxyStoreError

    try:
        ps.store.init_store(ps.store.STORES.REDIS, "r", hostname="127.0.0.1", port=1)
    except ImportError as exc:
        assert isinstance(exc, MissingExtraError), type(exc)
        assert isinstance(exc, ProxyStoreError)
        assert exc.extra == "redis", exc.extra
        assert 'proxystore[redis]' in str(exc), str(exc)
        assert isinstance(exc.__cause__, ImportError)
    else:
        raise AssertionError("init_store did not fail")
    assert ps.store.get_store("r") is None
    # The rest of the library still works without the extra.
    store = ps.store.init_store("local", "still-fine")
    assert store.get(store.set(1)) == 1
    print("ok")
    """
)


def test_missing_extra_error_names_the_extra() -> None:
    result = subprocess.run(
        [sys.executable, "-c", MISSING_REDIS], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_extra_error_class() -> None:
    error = MissingExtraError("need it", extra="globus", store_type="GlobusStore")
    assert isinstance(error, ImportError)
    assert isinstance(error, ProxyStoreError)
    assert error.extra == "globus"


def test_package_exposes_registry() -> None:
    assert ps.store.init_store is init_store
    assert ps.store.get_store is get_store
    assert ps.store.STORES is STORES
