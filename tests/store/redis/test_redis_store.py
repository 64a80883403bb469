"""RedisStore against real redis-servers: errors, secrets, redis_kwargs, chunking, fork, async."""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from types import FrameType
from typing import Any

import numpy as np
import pytest
import redis

from proxystore.exceptions import (
    ForeignValueError,
    InvalidKeyError,
    StoreAuthError,
    StoreConnectionError,
    StoreError,
)
from proxystore.proxy import Proxy, get_factory, get_key, is_resolved, resolve_async
from proxystore.secret import Secret
from proxystore.store import get_store, init_store, unregister_store
from proxystore.store.redis import RedisSettings, RedisStore
from tests.support.redis_server import free_port, private_redis, replies

CHUNKS = ":ps-chunks"


# -- private servers ----------------------------------------------------------------------------


PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def auth_redis() -> Iterator[tuple[str, int]]:
    """A private redis-server that requires ``PASSWORD``."""
    with private_redis("--requirepass", PASSWORD) as address:
        yield address


@pytest.fixture
def store(store_factory: Any) -> RedisStore:
    made = store_factory("redis")
    assert isinstance(made, RedisStore)
    return made


@pytest.fixture
def raw(redis_address: tuple[str, int]) -> Iterator[redis.Redis[bytes]]:
    """redis-py on the session server, to look at what the store wrote."""
    client: redis.Redis[bytes] = redis.Redis(host=redis_address[0], port=redis_address[1])
    yield client
    client.close()


def unused_port() -> int:
    port = free_port()
    assert not replies("127.0.0.1", port)
    return port


# -- connection errors --------------------------------------------------------------------------


@pytest.mark.timeout(90)  # bounded: an error, never a hang (redis-py's retries take seconds)
@pytest.mark.parametrize("client", ["wire", "redis-py"])
def test_connection_refused_raises_store_connection_error(client: str) -> None:
    port = unused_port()
    options = {"max_connections": 4} if client == "redis-py" else {}
    with pytest.raises(StoreConnectionError) as info:
        RedisStore("unreachable", hostname="127.0.0.1", port=port, **options)
    error = info.value
    assert f"127.0.0.1:{port}" in str(error)
    assert error.address == f"127.0.0.1:{port}"
    assert error.store_name == "unreachable" and error.store_type == "RedisStore"
    if client == "wire":  # raised once, where the socket failed: no redis-py error in between
        assert isinstance(error.__cause__, ConnectionRefusedError)
    else:  # redis-py's error, translated once
        assert isinstance(error.__cause__, redis.exceptions.ConnectionError)
    assert not isinstance(error, ConnectionError)  # never shadows the builtin meaning
    assert get_store("unreachable") is None


@pytest.mark.timeout(90)
def test_server_gone_after_creation_raises_store_connection_error() -> None:
    with private_redis() as (host, port):
        store = RedisStore("short-lived", hostname=host, port=port)
        key = store.set("value")
        p = store.proxy(key=key)
    with pytest.raises(StoreConnectionError, match=f"{host}:{port}"):
        store.get(key)
    assert get_store("short-lived") is None
    with pytest.raises(StoreConnectionError, match=f"{host}:{port}"):
        str(p)  # the proxy re-creates the store from its factory, which cannot connect
    assert get_store("short-lived") is None  # a store that cannot connect is not registered
    store.cleanup()


def test_connection_error_pickles_across_processes() -> None:
    error = StoreConnectionError("x", address="h:1", store_name="n", store_type="RedisStore")
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.address, clone.store_name, clone.store_type) == ("h:1", "n", "RedisStore")
    assert str(clone) == "x"


# -- authentication and secrets -----------------------------------------------------------------


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


@pytest.mark.timeout(90)
@pytest.mark.parametrize("credentials", ["wrong", "none"])
def test_auth_error(auth_redis: tuple[str, int], credentials: str) -> None:
    host, port = auth_redis
    kwargs = {"password": "wrong-" + PASSWORD[::-1]} if credentials == "wrong" else {}
    with pytest.raises(StoreAuthError) as info:
        RedisStore("auth-fails", hostname=host, port=port, **kwargs)
    error = info.value
    assert f"{host}:{port}" in str(error)
    assert error.store_name == "auth-fails"
    assert error.__cause__ is None  # raised once, by the wire client, from the server's reply
    assert_no_secret(str(error), repr(error), str(error.__cause__), repr(error.__dict__))
    if credentials == "wrong":
        assert kwargs["password"] not in str(error)


def test_password_never_in_reprs(auth_redis: tuple[str, int]) -> None:
    host, port = auth_redis
    name = f"secret-{uuid.uuid4().hex[:8]}"
    store = init_store("redis", name, hostname=host, port=port, password=PASSWORD)
    try:
        p = store.proxy({"data": 1})
        factory = get_factory(p)
        assert_no_secret(repr(store), str(store), repr(factory), str(factory), repr(p))
        assert p == {"data": 1}
        assert_no_secret(repr(p), str(p))
        # ... yet the password does travel with the factory, so workers can connect.
        assert factory.store_kwargs["password"].reveal() == PASSWORD
        assert PASSWORD.encode() in pickle.dumps(p)
        store.evict(str(get_key(p)))
    finally:
        store.cleanup()
        unregister_store(name)


RESOLVE_FROM_STDIN = textwrap.dedent(
    """
    import pickle, sys
    from proxystore.proxy import extract
    from proxystore.store import get_store
    p = pickle.load(sys.stdin.buffer)
    value = extract(p)
    store = get_store(p)
    print(repr(value))
    print(repr(store))
    """
)


def resolve_in_subprocess(p: Proxy) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE_FROM_STDIN],
        input=pickle.dumps(p),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


def test_password_travels_to_subprocess(auth_redis: tuple[str, int]) -> None:
    host, port = auth_redis
    store = RedisStore("secret-sub", hostname=host, port=port, password=PASSWORD)
    try:
        p = store.proxy(["authenticated", 1])
        lines = resolve_in_subprocess(p)
        assert lines[0] == repr(["authenticated", 1])
        assert "RedisStore" in lines[1]
        assert_no_secret(*lines)
    finally:
        store.cleanup()


# -- redis_kwargs travel with the factory -------------------------------------------------------


def test_redis_kwargs_db_travels_to_subprocess(
    store_factory: Any, redis_address: tuple[str, int]
) -> None:
    host, port = redis_address
    db3 = store_factory("redis", db=3)
    db0 = store_factory("redis")
    key = f"db-test-{uuid.uuid4().hex}"
    p = db3.proxy("from db 3", key=key)
    db0.set("from db 0", key=key)  # same key, other database
    direct3: redis.Redis[bytes] = redis.Redis(host=host, port=port, db=3)
    try:
        assert direct3.exists(key)
        assert get_factory(p).store_kwargs["db"] == 3
        assert resolve_in_subprocess(p)[0] == repr("from db 3")
    finally:
        db3.evict(key)
        db0.evict(key)
        direct3.close()


# -- values written by other programs -----------------------------------------------------------


@pytest.mark.parametrize("client", ["wire", "redis-py"])
@pytest.mark.parametrize("value", [b"not written by proxystore", b"PSR1 but too short"])
def test_foreign_value_is_a_clear_error(
    store_factory: Any, raw: redis.Redis[bytes], client: str, value: bytes
) -> None:
    extra: dict[str, Any] = {"max_connections": 4} if client == "redis-py" else {}
    store = store_factory("redis", cache_size=0, **extra)
    key = f"foreign-{uuid.uuid4().hex}"
    raw.set(key, value)
    try:
        for call in (store.get, store.get_timestamp):
            with pytest.raises(StoreError, match="does not hold a ProxyStore value") as info:
                call(key)
            assert type(info.value) is ForeignValueError  # the backend's one error for bad framing
            assert info.value.key == key
            message = str(info.value)
            assert repr(key) in message and store.address in message and store.name in message
    finally:
        raw.delete(key)


@pytest.mark.parametrize("client", ["wire", "redis-py"])
def test_a_key_of_another_redis_type_is_a_clear_error(
    store_factory: Any, raw: redis.Redis[bytes], client: str
) -> None:
    extra: dict[str, Any] = {"max_connections": 4} if client == "redis-py" else {}
    store = store_factory("redis", cache_size=0, **extra)
    key = f"foreign-list-{uuid.uuid4().hex}"
    raw.rpush(key, b"a", b"b")
    try:
        for call in (store.get, store.get_timestamp, store.exists):
            with pytest.raises(StoreError, match="another kind of Redis value") as info:
                call(key)
            assert repr(key) in str(info.value) and store.address in str(info.value)
    finally:
        raw.delete(key)


# -- keys: checked at every call ----------------------------------------------------------------


def _operations(store: RedisStore) -> dict[str, Any]:
    return {
        "set": lambda key: store.set("v", key=key),
        "set_batch": lambda key: store.set_batch(["v"], keys=[key]),
        "get": store.get,
        "exists": store.exists,
        "evict": store.evict,
        "get_timestamp": store.get_timestamp,
        "is_cached": store.is_cached,
        "proxy": lambda key: store.proxy(key=key),
        "proxy with an object": lambda key: store.proxy("v", key=key),
        "proxy_batch": lambda key: store.proxy_batch(keys=[key]),
    }


@pytest.fixture(params=["plain", "wire signed, host tier", "redis-py"])
def keyed(request: pytest.FixtureRequest, store_factory: Any) -> Iterator[RedisStore]:
    """A store of each shape: the key check comes before the host tier and signing."""
    if request.param == "plain":
        yield store_factory("redis", chunk_size=1000)
        return
    if request.param == "redis-py":
        yield store_factory("redis", chunk_size=1000, max_connections=4)
        return
    cache = f"/dev/shm/proxystore-test-keys-{uuid.uuid4().hex[:8]}"
    try:
        yield store_factory("redis", chunk_size=1000, signing_key=os.urandom(32), host_cache=cache)
    finally:
        import shutil

        shutil.rmtree(cache, ignore_errors=True)


@pytest.mark.parametrize("bad", [5, b"k", 1.5, ("t",), None], ids=repr)
def test_a_key_that_is_not_a_str_is_refused_at_every_call(keyed: RedisStore, bad: Any) -> None:
    for operation, call in _operations(keyed).items():
        if bad is None and operation.startswith(("set", "proxy")):
            continue  # no key: a new one is made
        with pytest.raises(InvalidKeyError) as info:
            call(bad)
        message = str(info.value)
        assert type(bad).__name__ in message and keyed.name in message, (operation, message)
        assert "must be str" in message, (operation, message)


def test_a_key_with_the_reserved_suffix_is_refused_at_every_call(
    keyed: RedisStore, raw: redis.Redis[bytes]
) -> None:
    victim = f"victim-{uuid.uuid4().hex}"
    keyed.set(b"c" * 5000, key=victim)  # chunked: its chunks are in victim:ps-chunks
    try:
        for operation, call in _operations(keyed).items():
            with pytest.raises(InvalidKeyError, match="reserved") as info:
                call(victim + CHUNKS)
            message = str(info.value)
            assert repr(victim + CHUNKS) in message and repr(victim) in message, operation
            assert info.value.key == victim + CHUNKS
        assert raw.llen(victim + CHUNKS) > 1  # untouched
        assert keyed.get(victim) == b"c" * 5000
    finally:
        keyed.evict(victim)


def test_a_key_that_cannot_be_encoded_is_refused(store: RedisStore) -> None:
    with pytest.raises(InvalidKeyError, match="UTF-8"):
        store.set("v", key="lone \ud800 surrogate")


@pytest.mark.parametrize("client", ["wire", "redis-py"])
def test_keys_with_bytes_that_are_not_utf8_round_trip(
    store_factory: Any, raw: redis.Redis[bytes], client: str
) -> None:
    extra: dict[str, Any] = {"max_connections": 4} if client == "redis-py" else {}
    store = store_factory("redis", chunk_size=1000, **extra)
    key = f"bin-{uuid.uuid4().hex}-\udcff\udc80"  # the bytes 0xff 0x80, as os.fsdecode has them
    data = os.urandom(3000)
    store.set(data, key=key)
    name = key.encode("utf-8", "surrogateescape")
    assert raw.exists(name) and raw.llen(name + CHUNKS.encode()) == 4
    assert store.get(key) == data and store.exists(key)
    store.evict(key)
    assert not raw.exists(name) and not raw.exists(name + CHUNKS.encode())


# -- numeric options: validated at construction -------------------------------------------------

BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"socket_timeout": float("nan")}, ValueError, "socket_timeout"),
    ({"socket_timeout": float("inf")}, ValueError, "socket_timeout"),
    ({"socket_timeout": 1e300}, ValueError, "socket_timeout"),
    ({"socket_timeout": 0}, ValueError, "socket_timeout"),
    ({"socket_timeout": -1}, ValueError, "socket_timeout"),
    ({"socket_timeout": "5"}, TypeError, "socket_timeout"),
    ({"socket_connect_timeout": float("inf")}, ValueError, "socket_connect_timeout"),
    ({"socket_connect_timeout": -0.5}, ValueError, "socket_connect_timeout"),
    ({"chunk_size": 0.5}, TypeError, "chunk_size"),
    ({"chunk_size": 1000.0}, TypeError, "chunk_size"),
    ({"chunk_size": True}, TypeError, "chunk_size"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"port": 0}, ValueError, "port"),
    ({"port": 70000}, ValueError, "port"),
    ({"port": -1}, ValueError, "port"),
    ({"port": True}, TypeError, "port"),
    ({"port": "6379"}, TypeError, "port"),
    ({"db": -1}, ValueError, "db"),
    ({"db": 2**40}, ValueError, "db"),
    ({"db": "1"}, TypeError, "db"),
    ({"db": 1.0}, TypeError, "db"),
    ({"max_connections": 0}, ValueError, "max_connections"),
    ({"max_connections": 2.5}, TypeError, "max_connections"),
    ({"health_check_interval": float("nan")}, ValueError, "health_check_interval"),
    ({"socket_keepalive": "yes"}, TypeError, "socket_keepalive"),
    ({"decode_responses": True}, ValueError, "decode_responses"),
]


@pytest.mark.parametrize(("options", "error", "option"), BAD_OPTIONS, ids=repr)
def test_numeric_options_are_checked_at_construction(
    options: dict[str, Any], error: type[Exception], option: str
) -> None:
    # Nothing listens on this port: an option let through would fail to connect instead.
    settings = {"hostname": "127.0.0.1", "port": free_port(), **options}
    with pytest.raises(error, match=option) as info:
        RedisStore("bad-options", **settings)
    assert "'bad-options'" in str(info.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://[::1", "Invalid IPv6 URL"),
        ("redis://", "needs a host"),
        ("redis://:hunter2@127.0.0.1:0", "port must be in 1..65535"),
        ("redis://:hunter2@127.0.0.1:{port}/x1", "database must be a number"),
        ("redis://127.0.0.1:{port}/ 1", "database must be a number"),
        ("unix://relative/redis.sock", "absolute socket path"),
        ("redis://127.0.0.1:{port}/0?socket_timeout=1", "unknown query setting"),
        ("redis://:pass#word@127.0.0.1:{port}", "%23"),
        ("http://127.0.0.1:{port}", "must start with redis://"),
    ],
)
def test_a_malformed_url_is_refused(url: str, problem: str) -> None:
    # Nothing listens on the port: a URL let through fails to connect instead (and never
    # reaches a Redis that may answer on this machine's 6379).
    with pytest.raises(ValueError, match=problem) as info:
        RedisStore("bad-url", url=url.format(port=free_port()))
    message = str(info.value)
    assert "'bad-url'" in message and "hunter2" not in message and "pass#word" not in message


def test_settings_check_the_arguments_without_connecting() -> None:
    port = free_port()  # nothing listens there: nothing may connect
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"ttl": float("inf")}, ValueError, "ttl"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"port": 0}, ValueError, "port"),
        ({"redis_kwargs": {"db": -1}}, ValueError, "db"),
        ({"redis_kwargs": {"socket_timeout": "1"}}, TypeError, "socket_timeout"),
        ({"redis_kwargs": {"ssl_validate_ocsp": True}}, ValueError, "ssl_validate_ocsp"),
    ]
    for change, error, option in cases:
        arguments: dict[str, Any] = {"hostname": "127.0.0.1", "port": port, **change}
        with pytest.raises(error, match=option) as info:
            RedisSettings("checked", **arguments)
        assert "RedisStore 'checked'" in str(info.value)
    settings = RedisSettings("parsed", url=f"redis://u:{PASSWORD}@127.0.0.1:{port}/2")
    assert (settings.hostname, settings.port, settings.url) == ("127.0.0.1", port, None)
    assert settings.redis_kwargs == {"username": "u", "password": Secret(PASSWORD), "db": 2}
    assert PASSWORD not in repr(settings) + repr(settings.kwargs())
    explicit = RedisSettings(
        "parsed", url=f"redis://127.0.0.1:{port}/2", port=port + 1, redis_kwargs={"db": 4}
    )
    assert explicit.port == port + 1 and explicit.redis_kwargs["db"] == 4  # explicit wins


def test_a_description_re_creates_an_equal_store(auth_redis: tuple[str, int]) -> None:
    host, port = auth_redis
    store = RedisStore(
        "described",
        url=f"redis://:{PASSWORD}@{host}:{port}/3",
        ttl=30,
        chunk_size=2**20,
        signing_key=b"k" * 32,
        socket_timeout=7,
    )
    try:
        kwargs = store.description.kwargs
        assert kwargs == store.settings.kwargs() and "url" not in kwargs
        assert kwargs["db"] == 3 and kwargs["password"] == Secret(PASSWORD)
        assert PASSWORD not in repr(store.settings) + repr(store.description)
        again = RedisStore("described-again", **kwargs)
        try:
            assert again.settings == dataclasses.replace(store.settings, name="described-again")
            assert again.description.kwargs == kwargs
            assert again.get(store.set([1, 2])) == [1, 2]  # same server, db, key and ttl
        finally:
            again.close()
    finally:
        store.close()


def test_a_database_the_server_lacks_is_reported_as_such(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    for client in ({}, {"max_connections": 4}):
        with pytest.raises(StoreError, match="db=99") as info:
            RedisStore("far-db", hostname=host, port=port, db=99, **client)
        message = str(info.value)
        assert f"{host}:{port}" in message and "databases" in message
        assert not isinstance(info.value, StoreAuthError) and "credentials" not in message


# -- chunking -----------------------------------------------------------------------------------


@pytest.fixture
def chunked(store_factory: Any) -> RedisStore:
    made = store_factory("redis", chunk_size=1000, cache_size=0)
    assert isinstance(made, RedisStore)
    return made


def test_chunk_size_bounds(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    for bad in (0, -1, 600 * 2**20):
        with pytest.raises(ValueError, match="chunk_size"):
            RedisStore("bad-chunks", hostname=host, port=port, chunk_size=bad)


def test_chunked_bytes_roundtrip(chunked: RedisStore, raw: redis.Redis[bytes]) -> None:
    data = os.urandom(10_000)
    key = chunked.set(data)
    try:
        assert raw.llen(key + CHUNKS) == 11  # 10_001 serialized bytes in 1000-byte chunks
        assert all(len(chunk) <= 1000 for chunk in raw.lrange(key + CHUNKS, 0, -1))
        assert raw.strlen(key) < 100  # the key itself holds only the header
        assert chunked.get(key) == data
        assert chunked.exists(key)
        assert chunked.get(key, deserialize=False) == b"\x01" + data
    finally:
        chunked.evict(key)


def test_chunked_numpy_roundtrip(chunked: RedisStore, raw: redis.Redis[bytes]) -> None:
    array = np.random.default_rng(7).random((50, 40))  # 16 KB
    key = chunked.set(array)
    try:
        assert raw.llen(key + CHUNKS) > 10
        got = chunked.get(key)
        assert np.array_equal(got, array) and got.dtype == array.dtype
        assert got.flags.writeable
        p = chunked.proxy(key=key)
        assert np.array_equal(p, array)
        assert resolve_in_subprocess(chunked.proxy(key=key))[0].startswith("array(")
    finally:
        chunked.evict(key)


def test_overwrite_chunked_small_chunked_leaves_no_stale_chunks(
    chunked: RedisStore, raw: redis.Redis[bytes]
) -> None:
    key = f"overwrite-{uuid.uuid4().hex}"
    try:
        chunked.set(b"a" * 10_000, key=key)
        assert raw.llen(key + CHUNKS) == 11
        chunked.set(b"small", key=key)
        assert not raw.exists(key + CHUNKS)
        assert chunked.get(key) == b"small"
        chunked.set(b"b" * 2_500, key=key)
        assert raw.llen(key + CHUNKS) == 3  # not 11 + 3: the old list was replaced
        assert chunked.get(key) == b"b" * 2_500
        chunked.set(b"c" * 9_000, key=key)
        assert raw.llen(key + CHUNKS) == 10
        assert chunked.get(key) == b"c" * 9_000
    finally:
        chunked.evict(key)


def test_evict_removes_chunk_list(chunked: RedisStore, raw: redis.Redis[bytes]) -> None:
    key = chunked.set(b"z" * 5_000)
    assert raw.exists(key + CHUNKS)
    chunked.evict(key)
    assert not raw.exists(key)
    assert not raw.exists(key + CHUNKS)
    assert not chunked.exists(key)
    assert chunked.get(key, default="gone") == "gone"


def test_damaged_chunks_are_a_clear_error(chunked: RedisStore, raw: redis.Redis[bytes]) -> None:
    key = chunked.set(b"q" * 5_000)
    try:
        raw.rpop(key + CHUNKS)  # another program damaged the value
        with pytest.raises(StoreError, match="inconsistent"):
            chunked.get(key)
    finally:
        chunked.evict(key)


def test_strict_with_chunked_values(store_factory: Any) -> None:
    writer = store_factory("redis", chunk_size=1000, cache_size=0)
    reader = store_factory("redis", chunk_size=1000, cache_size=4)
    key = f"strict-chunks-{uuid.uuid4().hex}"
    try:
        writer.set(b"1" * 3000, key=key)
        assert reader.get(key) == b"1" * 3000
        writer.set(b"2" * 4000, key=key)
        assert reader.get(key) == b"1" * 3000  # cached, non-strict
        assert reader.get(key, strict=True) == b"2" * 4000
        writer.set(b"3", key=key)
        assert reader.get(key, strict=True) == b"3"
    finally:
        writer.evict(key)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_value_beyond_512mb_bulk_limit(store_factory: Any, raw: redis.Redis[bytes]) -> None:
    store = store_factory("redis", cache_size=0)
    big = np.ones(600 * 2**20 // 8)  # 600 MB, more than one Redis bulk string may hold
    key = store.set(big)
    got: Any = None
    try:
        assert raw.llen(key + CHUNKS) >= 2
        assert raw.strlen(key) < 100
        got = store.get(key)
        assert isinstance(got, np.ndarray)
        assert got.shape == big.shape and got.dtype == big.dtype
        assert float(got[0]) == 1.0 and float(got[-1]) == 1.0
        assert float(got.sum()) == float(big.size)
    finally:
        store.evict(key)
        del big, got
        gc.collect()
    assert not raw.exists(key + CHUNKS)


# -- fork ---------------------------------------------------------------------------------------


def roundtrip_in_forked_child(name: str, key: str) -> tuple[int, int, Any, str]:
    """Runs in a forked worker: uses the store object inherited from the parent."""
    store = get_store(name)
    assert isinstance(store, RedisStore)
    value = store.get(key)
    new_key = store.set({"written by": os.getpid()})
    client_id = store._client().client_id()
    return os.getpid(), client_id, value, new_key


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_fresh_connection_after_fork(store: RedisStore) -> None:
    key = store.set("from the parent")
    parent_client = store._client().client_id()  # the parent has a live connection
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        futures = [pool.submit(roundtrip_in_forked_child, store.name, key) for _ in range(6)]
        # Keep the parent's connection busy while the children work.
        for _ in range(50):
            assert store.get(key, strict=True) == "from the parent"
        results = [future.result(timeout=120) for future in futures]
    for pid, client_id, value, new_key in results:
        assert pid != os.getpid()
        assert client_id != parent_client  # the child opened its own connection
        assert value == "from the parent"
        assert store.get(new_key) == {"written by": pid}
        store.evict(new_key)
    assert store._client().client_id() == parent_client  # the parent's connection survived
    store.evict(key)


# -- async resolution ---------------------------------------------------------------------------


def test_resolve_async_fetches_in_background_thread(store: RedisStore) -> None:
    array = np.arange(100_000)
    p = store.proxy(array)
    key = get_key(p)
    fetches: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == "get_bytes_with_timestamp":
            fetches.append(threading.current_thread().name)

    threading.setprofile(profile)  # threads started from now on
    sys.setprofile(profile)  # this thread
    try:
        resolve_async(p)
        assert not is_resolved(p)
        total = int(np.sum(p))  # first use waits on the background fetch
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    assert total == int(array.sum())
    assert is_resolved(p)
    assert fetches == [f"proxystore-resolve-{key}"]  # once, and not in this thread
    store.evict(str(key))


def test_resolve_async_error_surfaces_on_use(store: RedisStore) -> None:
    from proxystore.exceptions import ProxyResolveMissingKey

    key = f"missing-{uuid.uuid4().hex}"
    store.set("soon gone", key=key)
    p = store.proxy(key=key)
    store.evict(key)
    resolve_async(p)
    with pytest.raises(ProxyResolveMissingKey, match=key):
        len(p)


def test_cleanup_then_reuse_reconnects(store: RedisStore) -> None:
    key = store.set("v")
    store.cleanup()
    assert store.get(key) == "v"
    store.evict(key)


@pytest.mark.parametrize("count", [1_000, 20_000, 131_072, 300_000, 1_000_000])
def test_arrays_come_back_aligned_as_they_were_laid_out(store: RedisStore, count: int) -> None:
    # A misaligned float64 array is slower, and numpy's sums of it can differ from the
    # original's in the last bits: a task would compute something else than with the object.
    import numpy as np

    original = np.random.default_rng(count).random(count)
    key = store.set(original)
    store.cache.clear()
    got = store.get(key)
    assert got.flags.aligned and got.flags.writeable and got.ctypes.data % 16 == 0
    if got.nbytes >= 100_000:  # read straight into a buffer: as the serializer laid it out
        assert got.ctypes.data % 64 == 0
    assert np.sum(got) == np.sum(original)


def test_a_header_without_a_valid_write_time_is_refused(
    store_factory: Any, raw: redis.Redis[bytes]
) -> None:
    import struct

    store = store_factory("redis", cache_size=0)
    key = store.set(b"payload")
    value = bytearray(raw.get(key) or b"")
    struct.pack_into("<d", value, 4, float("nan"))  # the write time, after the magic
    raw.set(key, bytes(value))
    try:
        for call in (store.get, store.get_timestamp):
            with pytest.raises(StoreError, match="no valid write time") as info:
                call(key)
            assert repr(key) in str(info.value) and store.address in str(info.value)
    finally:
        store.evict(key)
