"""StoreDescription: the one description of a store that travels and re-creates it."""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from proxystore.proxy import get_factory
from proxystore.store import Store, get_store, init_store, unregister_store
from proxystore.store.description import StoreDescription, is_secret
from proxystore.store.file import FileStore
from proxystore.store.local import LocalStore
from proxystore.store.registry import get_or_create, get_or_init_store

PASSWORD = "hunter2-do-not-show"


def test_repr_hides_secret_arguments_but_they_travel() -> None:
    description = StoreDescription(
        "proxystore.store.redis:RedisStore",
        "r",
        {"hostname": "db.example", "port": 6379, "password": PASSWORD, "username": "u"},
    )
    shown = repr(description)
    assert PASSWORD not in shown
    assert (
        "password=***" in shown and "hostname='db.example'" in shown and "RedisStore('r'" in shown
    )
    copy = pickle.loads(pickle.dumps(description))
    assert copy == description and copy.kwargs["password"] == PASSWORD
    assert is_secret("password") and is_secret("transfer_client") and not is_secret("port")


def test_store_description_is_what_factories_carry(store_factory: Any) -> None:
    store = store_factory("file", cache_size=3)
    assert store.description.type_path == "proxystore.store.file:FileStore"
    assert store.description.kwargs["cache_size"] == 3
    factory = get_factory(store.proxy([1]))
    assert factory.description == store.description  # type: ignore[attr-defined]
    assert factory.store_kwargs == dict(store.description.kwargs)  # type: ignore[attr-defined]


def test_description_records_statistics(tmp_path: Path) -> None:
    name = f"desc-stats-{uuid.uuid4().hex[:8]}"
    store = init_store("file", name, store_dir=str(tmp_path), stats=True)
    try:
        assert store.description.stats
        assert store.description.init_kwargs()["stats"] is True
    finally:
        store.cleanup()
        unregister_store(name)


def test_get_or_create_makes_the_store_once(tmp_path: Path) -> None:
    name = f"desc-{uuid.uuid4().hex[:8]}"
    original = FileStore(name, store_dir=tmp_path / "d")  # not registered: "another process"
    description = pickle.loads(pickle.dumps(original.description))
    try:
        made = description.get_or_create()
        assert isinstance(made, FileStore) and made is not original
        assert made.store_dir == original.store_dir
        assert description.get_or_create() is made is get_store(name)
        assert get_or_create(description) is made  # the method is the registry's call
        assert made.description == original.description  # an equal store
    finally:
        unregister_store(name)
        original.cleanup()


class SlowStore(LocalStore):
    """A store whose creation takes a while (think: a Redis ping or a Globus login)."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        time.sleep(delay)
        super().__init__(name)


class SignallingSlowStore(SlowStore):
    """A :class:`SlowStore` that says when its creation (under its name's lock) has begun."""

    creating = threading.Event()

    def __init__(self, name: str, delay: float = 0.0) -> None:
        type(self).creating.set()
        super().__init__(name, delay)


def test_registry_lookups_never_wait_on_a_slow_creation() -> None:
    slow, other, present = (f"reg-{kind}-{uuid.uuid4().hex[:8]}" for kind in "sop")
    ready = init_store("local", present)
    started = threading.Event()
    made: list[Store] = []

    def create_slow() -> None:
        started.set()
        made.append(
            get_or_init_store(
                "tests.store.test_description:SignallingSlowStore", slow, {"delay": 2.0}
            )
        )

    SignallingSlowStore.creating.clear()
    thread = threading.Thread(target=create_slow)
    thread.start()
    try:
        assert started.wait(timeout=10)
        # The slow creation is under way, holding its name's lock.
        assert SignallingSlowStore.creating.wait(timeout=10), "the slow creation never began"
        start = time.monotonic()
        assert get_store(present) is ready  # a lookup
        assert get_store(slow) is None  # not there yet, and no waiting for it
        fast = get_or_init_store("local", other, {})  # another name is created meanwhile
        elapsed = time.monotonic() - start
        assert thread.is_alive()  # the slow creation was under way during the lookups
        assert isinstance(fast, LocalStore)
        assert elapsed < 1.0, f"lookups waited {elapsed:.2f} s on another store's creation"
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert made and get_store(slow) is made[0]
    finally:
        thread.join(timeout=10)
        for name in (slow, other, present):
            unregister_store(name)


@pytest.mark.parametrize("count", [8])
def test_concurrent_get_or_create_of_one_slow_name_creates_once(count: int) -> None:
    name = f"reg-once-{uuid.uuid4().hex[:8]}"
    barrier = threading.Barrier(count)
    results: list[Store] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        results.append(
            get_or_init_store("tests.store.test_description:SlowStore", name, {"delay": 0.2})
        )

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert len(results) == count and len({id(store) for store in results}) == 1
    finally:
        unregister_store(name)
