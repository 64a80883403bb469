"""Lifetimes (issue 19): groups of objects evicted together, on real stores and processes."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from proxystore.proxy import extract, get_key
from proxystore.store.base import Store
from proxystore.store.file.store import FileStore
from proxystore.store.lifetimes import ContextLifetime, LeaseLifetime, StaticLifetime
from proxystore.store.redis.store import RedisStore
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHUNKS = ":ps-chunks"


@pytest.fixture(params=["local", "file", "redis"])
def store(request: pytest.FixtureRequest, store_factory: Any) -> Store:
    return store_factory(request.param)  # type: ignore[no-any-return]


def lease_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("proxystore-lease-")]


def run_child(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- ContextLifetime ---------------------------------------------------------------------------


def test_context_lifetime_evicts_its_objects_and_nothing_else(store: Store) -> None:
    kept = store.set("kept")
    outside = get_key(store.proxy("also kept"))
    with ContextLifetime(store) as lifetime:
        p = store.proxy([1, 2, 3], lifetime=lifetime)
        named = store.proxy("named", key="lt-named", lifetime=lifetime)
        by_key = store.set("added by key")
        lifetime.add_key(by_key)
        by_proxy = store.set("added by proxy")
        lifetime.add_proxy(store.proxy(key=by_proxy))
        existing = store.set("proxied by key")
        store.proxy(key=existing, lifetime=lifetime)
        assert extract(p) == [1, 2, 3]
        keys = [get_key(p), get_key(named), by_key, by_proxy, existing]
        assert all(store.exists(k) for k in keys)
        assert not lifetime.done()
    assert lifetime.done()
    assert [k for k in keys if store.exists(k)] == []
    assert store.exists(kept)
    assert store.exists(outside)


def test_context_lifetime_evicts_when_the_block_raises(store: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"), ContextLifetime(store) as lifetime:
        key = get_key(store.proxy("x", lifetime=lifetime))
        assert store.exists(key)
        raise RuntimeError("boom")
    assert lifetime.done()
    assert not store.exists(key)


def test_close_is_idempotent_and_a_closed_lifetime_takes_nothing(store: Store) -> None:
    lifetime = ContextLifetime(store)
    key = get_key(store.proxy("x", lifetime=lifetime))
    lifetime.close()
    assert not store.exists(key)
    again = store.set("stored after the close")
    lifetime.close()  # idempotent: evicts nothing more
    assert store.exists(again)
    with pytest.raises(ValueError, match="is closed"):
        store.proxy("late", lifetime=lifetime)
    with pytest.raises(ValueError, match="is closed"):
        lifetime.add_key(again)


def test_lifetime_of_another_store_is_refused_before_storing(store_factory: Any) -> None:
    a, b = store_factory("local"), store_factory("local")
    lifetime = ContextLifetime(a)
    key = "lt-refused"
    with pytest.raises(ValueError, match=f"store {a.name!r}.*not of store {b.name!r}"):
        b.proxy("x", key=key, lifetime=lifetime)
    assert not b.exists(key)  # nothing was stored
    with pytest.raises(ValueError, match=b.name):
        lifetime.add_key("k", store=b)
    lifetime.close()


def test_add_proxy_refuses_a_proxy_without_a_store_key(store_factory: Any) -> None:
    from proxystore.factory import SimpleFactory
    from proxystore.proxy import Proxy

    lifetime = ContextLifetime(store_factory("local"))
    with pytest.raises(ValueError, match="no store key"):
        lifetime.add_proxy(Proxy(SimpleFactory(1)))
    lifetime.close()


def test_lifetime_needs_a_store() -> None:
    with pytest.raises(TypeError, match="needs a Store"):
        ContextLifetime("not a store")  # type: ignore[arg-type]


def test_proxy_without_a_lifetime_is_unchanged(store: Store) -> None:
    p = store.proxy([4, 5])
    assert extract(p) == [4, 5]
    assert store.exists(get_key(p))


# -- LeaseLifetime -----------------------------------------------------------------------------


def test_lease_evicts_its_objects_when_it_runs_out(store: Store) -> None:
    kept = store.set("kept")
    lifetime = LeaseLifetime(store, 0.3)
    keys = [get_key(store.proxy(i, lifetime=lifetime)) for i in range(3)]
    assert lease_threads()
    wait_until(lifetime.done, 30, "the lease to run out")
    assert [k for k in keys if store.exists(k)] == []
    assert store.exists(kept)
    wait_until(lambda: not lease_threads(), 10, "the lease thread to stop")


def test_extend_postpones_the_end_of_the_lease(store: Store) -> None:
    start = time.monotonic()
    lifetime = LeaseLifetime(store, 0.4)
    key = get_key(store.proxy("x", lifetime=lifetime))
    lifetime.extend(1.0)
    assert lifetime.remaining() > 0.6
    wait_until(lifetime.done, 30, "the extended lease to run out")
    assert time.monotonic() - start >= 1.4  # not before the extended deadline
    assert not store.exists(key)


def test_close_ends_the_lease_early_and_stops_its_thread(store: Store) -> None:
    lifetime = LeaseLifetime(store, 600)
    key = get_key(store.proxy("x", lifetime=lifetime))
    (name,) = lease_threads()
    lifetime.close()
    assert name not in lease_threads()  # close() joined it
    assert lifetime.done()
    assert lifetime.remaining() == 0
    assert not store.exists(key)
    with pytest.raises(ValueError, match="has ended"):
        lifetime.extend(1)


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan])
def test_bad_expiry_is_refused_naming_it(store_factory: Any, bad: float) -> None:
    store = store_factory("local")
    with pytest.raises(ValueError, match="expiry must be a finite number of seconds > 0"):
        LeaseLifetime(store, bad)
    lifetime = LeaseLifetime(store, 60)
    with pytest.raises(ValueError, match="extend"):
        lifetime.extend(bad)
    lifetime.close()


@pytest.mark.parametrize("bad", ["1", None, True])
def test_expiry_of_the_wrong_type_is_refused(store_factory: Any, bad: Any) -> None:
    with pytest.raises(TypeError, match="expiry must be a number"):
        LeaseLifetime(store_factory("local"), bad)
    assert not lease_threads()


def test_lease_keys_on_redis_carry_the_ttl_chunks_included(
    store_factory: Any, redis_address: tuple[str, int]
) -> None:
    store = store_factory("redis", chunk_size=1024)
    client = redis.Redis(*redis_address)
    lifetime = LeaseLifetime(store, 30)
    try:
        big = get_key(store.proxy(b"x" * 10_000, lifetime=lifetime))
        small = get_key(store.proxy("small", lifetime=lifetime))
        plain = store.set(b"y" * 10_000)
        assert client.exists(big + CHUNKS)  # really chunked
        for key in (big, big + CHUNKS, small):
            assert 25_000 < client.pttl(key) <= 30_000, key
        assert client.pttl(plain) == -1  # no expiry on objects outside the lease
        assert client.pttl(plain + CHUNKS) == -1
        lifetime.extend(60)
        for key in (big, big + CHUNKS, small):
            assert 85_000 < client.pttl(key) <= 90_000, key
        lifetime.close()
        assert not client.exists(big, big + CHUNKS, small)
        assert store.exists(plain)
    finally:
        lifetime.close()
        client.close()


def test_killed_client_with_a_lease_on_redis_leaks_nothing(
    redis_address: tuple[str, int],
) -> None:
    host, port = redis_address
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import time
                from proxystore.proxy import get_key
                from proxystore.store.lifetimes import LeaseLifetime
                from proxystore.store.redis.store import RedisStore
                store = RedisStore("lease-child", hostname={host!r}, port={port}, chunk_size=1024)
                lifetime = LeaseLifetime(store, 2)
                for obj in (b"x" * 10_000, "small"):
                    print(get_key(store.proxy(obj, lifetime=lifetime)), flush=True)
                print("ready", flush=True)
                time.sleep(120)
            """),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    client = redis.Redis(host, port)
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline().strip() for _ in range(3)]
        assert lines[-1] == "ready", lines
        keys = [lines[0], lines[0] + CHUNKS, lines[1]]
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        assert client.exists(*keys) == 3  # still there: the child died before its lease ended
        wait_until(lambda: client.exists(*keys) == 0, 30, "Redis to expire the dead client's keys")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
        client.close()


# -- StaticLifetime ----------------------------------------------------------------------------


def test_static_lifetime_is_one_per_process() -> None:
    assert StaticLifetime() is StaticLifetime()
    assert not StaticLifetime().done()


def test_static_lifetime_needs_the_store_of_its_keys() -> None:
    with pytest.raises(ValueError, match="store="):
        StaticLifetime().add_key("k")


def test_static_lifetime_evicts_at_interpreter_exit(
    tmp_path: Path, redis_address: tuple[str, int]
) -> None:
    host, port = redis_address
    store_dir = tmp_path / "static"
    name = f"static-{uuid.uuid4().hex[:8]}"
    result = run_child(f"""
        from proxystore.proxy import get_key
        from proxystore.store.file.store import FileStore
        from proxystore.store.lifetimes import StaticLifetime
        from proxystore.store.redis.store import RedisStore
        files = FileStore({name!r}, store_dir={str(store_dir)!r})
        red = RedisStore({name!r} + "-r", hostname={host!r}, port={port})
        for store, tag in ((files, "file"), (red, "redis")):
            print(tag, "gone", get_key(store.proxy("a", lifetime=StaticLifetime())))
            store.proxy("b", key={name!r} + tag, lifetime=StaticLifetime())
            print(tag, "gone", {name!r} + tag)
            print(tag, "kept", store.set("c"))
    """)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert len(rows) == 6, result.stdout
    files = FileStore(f"{name}-check", store_dir=store_dir)
    red = RedisStore(f"{name}-check-r", hostname=host, port=port)
    try:
        for tag, fate, key in rows:
            target = files if tag == "file" else red
            assert target.exists(key) == (fate == "kept"), (tag, fate, key)
    finally:
        for tag, _fate, key in rows:
            (files if tag == "file" else red).evict(key)
        files.close()
        red.close()


def test_an_object_stored_for_a_lifetime_that_ends_meanwhile_is_evicted(
    store_factory: Any,
) -> None:
    """The lease may run out between the check and the registration: nothing is left."""
    store = store_factory("local")

    class EndsWhileStoring(ContextLifetime):
        def check_store(self, store: Store) -> None:
            super().check_store(store)
            self.close()  # as a lease running out right after the check would

    lifetime = EndsWhileStoring(store)
    with pytest.raises(ValueError, match="is closed"):
        store.proxy("x", key="lt-raced", lifetime=lifetime)
    assert not store.exists("lt-raced")


def test_proxy_batch_takes_a_lifetime(store: Store) -> None:
    kept = store.set("kept")
    with ContextLifetime(store) as lifetime:
        stored = [get_key(p) for p in store.proxy_batch([1, 2, 3], lifetime=lifetime)]
        existing = [store.set("a"), store.set("b")]
        store.proxy_batch(keys=existing, lifetime=lifetime)
        assert all(store.exists(k) for k in stored + existing)
    assert [k for k in stored + existing if store.exists(k)] == []
    assert store.exists(kept)
    with pytest.raises(ValueError, match="is closed"):
        store.proxy_batch([4], keys=["lt-batch-late"], lifetime=lifetime)
    assert not store.exists("lt-batch-late")
