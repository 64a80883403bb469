"""The raw RESP client (proxystore.store.redis._wire) and RedisStore's use of it, on servers."""

from __future__ import annotations

import gc
import multiprocessing
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import redis

from proxystore.buffers import alloc_buffer
from proxystore.exceptions import (
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
)
from proxystore.serialize import serialize_parts
from proxystore.store.redis import WIRE_OPTIONS, RedisStore, uses_wire
from proxystore.store.redis._wire.connection import (
    LARGE_REPLY,
    SMALL_ARGUMENT,
    Connection,
    encode,
)
from proxystore.store.redis._wire.errors import Overflow
from proxystore.store.redis._wire.pool import ConnectionPool
from tests.store.redis.test_redis_store import PASSWORD, private_redis
from tests.support.redis_server import free_port

CHUNKS = ":ps-chunks"


def _key(prefix: str = "wire") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@pytest.fixture
def conn(redis_address: tuple[str, int]) -> Iterator[Connection]:
    connection = Connection(*redis_address, timeout=30)
    keys: list[str] = []
    connection.test_keys = keys  # type: ignore[attr-defined]
    yield connection
    connection.close()
    if keys:  # on a fresh connection: a test may leave its own out of step on purpose
        cleaner = Connection(*redis_address)
        cleaner.command("UNLINK", *keys)
        cleaner.close()


def new_key(conn: Connection) -> str:
    key = _key()
    conn.test_keys.append(key)  # type: ignore[attr-defined]
    return key


@pytest.fixture
def raw(redis_address: tuple[str, int]) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis(host=redis_address[0], port=redis_address[1])
    yield client
    client.close()


# -- encoding ------------------------------------------------------------------------------------


def test_encode_small_command_is_one_piece() -> None:
    assert encode([("SET", b"k", "é", 12)]) == [
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n$2\r\n12\r\n"
    ]


def test_encode_sends_large_pieces_from_the_callers_memory() -> None:
    array = np.arange(SMALL_ARGUMENT, dtype=np.uint8)
    data = b"x" * SMALL_ARGUMENT
    pieces = encode([("SET", "k", [b"head", memoryview(array), data])])
    views = [piece for piece in pieces if isinstance(piece, memoryview)]
    assert [view.obj for view in views] == [array, data]  # not copies
    assert b"".join(pieces) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\nhead" % (4 + 2 * SMALL_ARGUMENT)
        + array.tobytes()
        + data
        + b"\r\n"
    )


def test_encode_rejects_unknown_argument_types() -> None:
    with pytest.raises(TypeError, match="float"):
        encode([("SET", "k", 1.5)])  # type: ignore[list-item]


# -- replies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, SMALL_ARGUMENT - 1, SMALL_ARGUMENT, 64 * 1024 - 2, 64 * 1024 - 1, 300_000, LARGE_REPLY],
)
def test_bulk_roundtrip_at_every_size(conn: Connection, size: int) -> None:
    key = new_key(conn)
    data = os.urandom(size)
    assert conn.command("SET", key, data) == b"OK"
    got = conn.command("GET", key)
    assert bytes(got) == data
    if size >= 64 * 1024:
        assert not memoryview(got).readonly  # read straight into a writable buffer


def test_value_in_several_pieces_arrives_joined(conn: Connection, raw: redis.Redis[bytes]) -> None:
    key = new_key(conn)
    array = np.random.default_rng(1).random(100_000)
    parts = [b"\x00" * 7, memoryview(array), b"tail", bytearray(b"x" * 20_000)]
    conn.command("SET", key, parts)
    assert raw.get(key) == b"\x00" * 7 + array.tobytes() + b"tail" + b"x" * 20_000


def test_reply_types(conn: Connection) -> None:
    key = new_key(conn)
    assert conn.command("PING") == b"PONG"
    assert conn.command("GET", key) is None
    assert conn.command("RPUSH", key, b"a", b"b", b"") == 3
    assert conn.command("LRANGE", key, 0, -1) == [b"a", b"b", b""]
    assert conn.command("EXISTS", key, key) == 2


def test_large_reply_is_aligned_after_prefix(conn: Connection) -> None:
    key = new_key(conn)
    conn.command("SET", key, os.urandom(LARGE_REPLY + 100))
    for prefix in (0, 32, 100):
        value = conn.command("GET", key, prefix=prefix)
        address = np.frombuffer(value, dtype=np.uint8).ctypes.data
        assert (address + prefix) % 64 == 0
        assert not memoryview(value).readonly


def test_error_reply_raises_and_connection_stays_usable(conn: Connection) -> None:
    key = new_key(conn)
    conn.command("SET", key, b"string")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        conn.command("LPUSH", key, b"x")
    with pytest.raises(StoreError, match="unknown command"):
        conn.command("NO-SUCH-COMMAND")
    assert conn.command("GET", key) == b"string"


def test_pipeline_reads_every_reply_before_raising(conn: Connection) -> None:
    key = new_key(conn)
    with pytest.raises(StoreError):
        conn.pipeline([("SET", key, b"1"), ("INCRBY", key, b"not a number"), ("INCR", key)])
    assert conn.command("GET", key) == b"2"  # every command ran; the stream is still in step


def test_transaction(conn: Connection) -> None:
    key = new_key(conn)
    assert conn.transaction([("SET", key, b"v"), ("GET", key), ("STRLEN", key)]) == [
        b"OK",
        b"v",
        1,
    ]
    with pytest.raises(StoreError, match="WRONGTYPE"):
        conn.transaction([("LPUSH", key, b"x"), ("SET", key, b"w")])
    assert conn.command("GET", key) == b"w"  # EXEC ran the rest
    with pytest.raises(StoreError):  # refused while queued: nothing runs
        conn.transaction([("SET", key, b"z"), ("NO-SUCH-COMMAND",)])
    assert conn.command("GET", key) == b"w"


def test_streaming_reads(conn: Connection) -> None:
    key = new_key(conn)
    chunks = [os.urandom(n) for n in (10, 70_000, 5)]
    conn.command("RPUSH", key, *chunks)
    conn.send([("LRANGE", key, 0, -1)])
    assert conn.read_array_length() == 3
    target = memoryview(bytearray(70_015))
    offset = 0
    for _ in range(3):
        offset += conn.read_bulk_into(target[offset:])
    assert bytes(target) == b"".join(chunks)
    conn.send([("GET", new_key(conn))])
    assert conn.read_bulk_into(target) == -1
    conn.send([("LRANGE", key, 0, 0)])
    assert conn.read_array_length() == 1
    with pytest.raises(Overflow, match="does not fit"):
        conn.read_bulk_into(target[:5])


def test_alloc_buffer() -> None:
    small = alloc_buffer(10)
    large = alloc_buffer(LARGE_REPLY)
    for buffer, size in ((small, 10), (large, LARGE_REPLY)):
        assert buffer.nbytes == size and not buffer.readonly
        assert not any(buffer[:: 4096 if size > 10 else 1])
    large[-1] = 7
    del small, large
    gc.collect()


# -- connecting ----------------------------------------------------------------------------------


def test_refused_connection_names_the_address() -> None:
    port = free_port()
    with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}") as info:
        Connection("127.0.0.1", port, connect_timeout=2)
    assert not str(info.value).endswith(".")


def test_silent_server_times_out() -> None:
    """A peer that accepts but never answers: every wait is bounded by the timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        conn = Connection("127.0.0.1", port, connect_timeout=2, timeout=0.2)
        try:
            with pytest.raises(StoreTimeoutError, match=f"127.0.0.1:{port}"):
                conn.command("PING")
        finally:
            conn.close()


def test_server_closing_the_connection_is_a_connection_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def serve() -> None:
            peer, _ = listener.accept()
            peer.recv(100)
            peer.close()

        thread = threading.Thread(target=serve)
        thread.start()
        conn = Connection("127.0.0.1", port, connect_timeout=2, timeout=5)
        try:
            with pytest.raises(StoreConnectionError, match="closed"):
                conn.command("PING")
        finally:
            conn.close()
            thread.join()


@pytest.fixture(scope="module")
def auth_redis() -> Iterator[tuple[str, int]]:
    with private_redis("--requirepass", PASSWORD) as address:
        yield address


def test_auth(auth_redis: tuple[str, int]) -> None:
    host, port = auth_redis
    conn = Connection(host, port, password=PASSWORD)
    assert conn.command("PING") == b"PONG"
    assert PASSWORD not in repr(conn) + str(conn.__dict__)
    conn.close()
    conn = Connection(host, port, username="default", password=PASSWORD)
    assert conn.command("PING") == b"PONG"
    conn.close()
    with pytest.raises(StoreAuthError) as info:
        Connection(host, port, password="wrong")
    assert "wrong" not in str(info.value)
    conn = Connection(host, port)  # no password: the first command is refused
    with pytest.raises(StoreAuthError, match="NOAUTH"):
        conn.command("PING")
    conn.close()


def test_db_and_client_name(redis_address: tuple[str, int]) -> None:
    key = _key()
    conn5 = Connection(*redis_address, db=5, client_name="ps-wire-test")
    conn0 = Connection(*redis_address)
    try:
        conn5.command("SET", key, b"in db 5")
        assert conn0.command("GET", key) is None
        assert conn5.command("GET", key) == b"in db 5"
        assert conn5.command("CLIENT", "GETNAME") == b"ps-wire-test"
    finally:
        conn5.command("UNLINK", key)
        conn5.close()
        conn0.close()


# -- the pool ------------------------------------------------------------------------------------


def test_pool_reuses_and_lends_one_connection_per_thread(redis_address: tuple[str, int]) -> None:
    pool = ConnectionPool(*redis_address, timeout=30)
    try:
        first = pool.client_id()
        assert pool.client_id() == first  # an idle connection is reused
        barrier = threading.Barrier(4)

        def hold() -> int:
            with pool.connection() as conn:
                barrier.wait(timeout=30)
                reply = conn.command("CLIENT", "ID")
                assert isinstance(reply, int)
                return reply

        with ThreadPoolExecutor(4) as threads:
            ids = list(threads.map(lambda _: hold(), range(4)))
        assert len(set(ids)) == 4  # four threads at once: four connections
    finally:
        pool.close()


def test_pool_drops_a_connection_whose_operation_failed(redis_address: tuple[str, int]) -> None:
    pool = ConnectionPool(*redis_address, timeout=30)
    try:
        first = pool.client_id()
        with pytest.raises(RuntimeError), pool.connection():
            raise RuntimeError("interrupted mid-operation")
        assert pool.client_id() != first  # possibly out of step: closed, not reused
        assert pool.client_id() == pool.client_id()
    finally:
        pool.close()


def _client_id_in_child(pool: ConnectionPool, queue: Any) -> None:
    queue.put(pool.client_id())


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_pool_after_fork_uses_new_connections(redis_address: tuple[str, int]) -> None:
    pool = ConnectionPool(*redis_address, timeout=30)
    try:
        parent = pool.client_id()
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_client_id_in_child, args=(pool, queue))
        child.start()
        child_id = queue.get(timeout=60)
        child.join(60)
        assert child.exitcode == 0
        assert child_id != parent
        assert pool.client_id() == parent  # the parent's connection is untouched
    finally:
        pool.close()


# -- RedisStore on both clients ------------------------------------------------------------------


def test_which_client_the_options_choose() -> None:
    assert uses_wire({})
    assert uses_wire({"password": "p", "db": 2, "socket_timeout": 1, "ssl": False})
    assert uses_wire(dict.fromkeys(WIRE_OPTIONS))
    assert uses_wire({"ssl": True, "ssl_ca_certs": "ca.pem"})  # TLS on the fast path
    assert uses_wire({"unix_socket_path": "/tmp/redis.sock"})
    assert not uses_wire({"max_connections": 10})


CLIENTS = {"wire": {}, "redis-py": {"max_connections": 64}}


@pytest.fixture(params=sorted(CLIENTS))
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(store_factory: Any, kind: str, **kwargs: Any) -> RedisStore:
    store = store_factory("redis", **CLIENTS[kind], **kwargs)
    assert isinstance(store, RedisStore)
    assert type(store._client()).__name__ == ("_WireClient" if kind == "wire" else "_RedisPyClient")
    return store


@pytest.mark.parametrize("chunk_size", [1000, 256 * 2**20])
def test_both_clients_read_what_the_other_wrote(store_factory: Any, chunk_size: int) -> None:
    wire = make(store_factory, "wire", chunk_size=chunk_size, cache_size=0)
    redis_py = make(store_factory, "redis-py", chunk_size=chunk_size, cache_size=0)
    objects = [b"x" * 5000, {"a": np.arange(3000.0), "b": [1, "two"]}, "short", np.ones(7)]
    for writer, reader in ((wire, redis_py), (redis_py, wire)):
        for obj in objects:
            key = writer.set(obj)
            got = reader.get(key)
            if isinstance(obj, dict):
                assert np.array_equal(got["a"], obj["a"]) and got["b"] == obj["b"]
            elif isinstance(obj, np.ndarray):
                assert np.array_equal(got, obj)
            else:
                assert got == obj
            assert reader.get_timestamp(key) == writer.get_timestamp(key)
            writer.evict(key)
            assert not reader.exists(key)


def test_large_array_arrives_writable_and_aligned_in_one_buffer(
    store_factory: Any, client_kind: str
) -> None:
    store = make(store_factory, client_kind, cache_size=0)
    array = np.random.default_rng(3).random(LARGE_REPLY // 8 + 1000)
    key = store.set(array)
    try:
        got = store.get(key)
        assert np.array_equal(got, array)
        assert got.flags.writeable
        got[0] = -1.0  # and it is ours
        if client_kind == "wire":
            assert got.ctypes.data % 64 == 0
    finally:
        store.evict(key)


def test_chunked_multipart_value(
    store_factory: Any, client_kind: str, raw: redis.Redis[bytes]
) -> None:
    """Chunks cut across the serialized pieces of an object and are read into one buffer."""
    store = make(store_factory, client_kind, chunk_size=4096, cache_size=0)
    obj = {"x": np.arange(5000.0), "y": np.arange(3000, dtype=np.int32), "z": "text"}
    assert len(serialize_parts(obj)) > 3
    key = store.set(obj)
    try:
        assert raw.llen(key + CHUNKS) > 10
        got = store.get(key)
        assert np.array_equal(got["x"], obj["x"]) and np.array_equal(got["y"], obj["y"])
        assert got["z"] == "text"
        store.set(b"small", key=key)  # overwrite removes the chunks
        assert not raw.exists(key + CHUNKS)
        assert store.get(key) == b"small"
    finally:
        store.evict(key)


def test_header_races_with_overwrite_and_evict(store_factory: Any, client_kind: str) -> None:
    """The chunked read transaction copes with a value changed since its header was read."""
    store = make(store_factory, client_kind, chunk_size=1000, cache_size=0)
    backend = store._client()
    key = store.set(b"small")  # inline now, though the reader saw a chunked header before
    try:
        fetched = backend.get_chunked(key, lambda value: store._redis._parse(key, value))
        assert fetched is not None and bytes(fetched[0]) == b"\x01small"
        store.evict(key)
        assert backend.get_chunked(key, lambda value: store._redis._parse(key, value)) is None
    finally:
        store.evict(key)


@pytest.mark.parametrize("damage", ["longer", "extra", "shorter"])
def test_damaged_chunks(
    store_factory: Any, client_kind: str, raw: redis.Redis[bytes], damage: str
) -> None:
    store = make(store_factory, client_kind, chunk_size=1000, cache_size=0)
    key = store.set(b"q" * 5_000)
    try:
        if damage == "longer":
            raw.lset(key + CHUNKS, 0, b"q" * 2000)
        elif damage == "extra":
            raw.rpush(key + CHUNKS, b"q")
        else:
            raw.lset(key + CHUNKS, 0, b"q")
        with pytest.raises(StoreError, match="inconsistent"):
            store.get(key)
        assert store.get(store.set("still works")) == "still works"
    finally:
        store.evict(key)


def test_truncated_inline_value(store_factory: Any, raw: redis.Redis[bytes]) -> None:
    store = make(store_factory, "wire", cache_size=0)
    key = store.set(b"z" * 100)
    try:
        raw.setrange(key, 200, b"more")  # the payload no longer matches its header's size
        with pytest.raises(StoreError, match="inconsistent"):
            store.get(key)
    finally:
        store.evict(key)


def test_connection_error_message_has_no_doubled_period() -> None:
    port = free_port()
    with pytest.raises(StoreConnectionError) as info:
        RedisStore("wire-refused", hostname="127.0.0.1", port=port, socket_connect_timeout=2)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert ".." not in message
    # Raised once, by the wire client: the cause is the socket's error, not redis-py's.
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_store_auth_errors_and_secrets(auth_redis: tuple[str, int]) -> None:
    host, port = auth_redis
    for kwargs in ({}, {"password": "not-" + PASSWORD}):
        with pytest.raises(StoreAuthError) as info:
            RedisStore("wire-auth", hostname=host, port=port, **kwargs)
        assert f"{host}:{port}" in str(info.value)
        assert ".." not in str(info.value)
        assert PASSWORD not in str(info.value) + repr(info.value.__cause__)
    store = RedisStore("wire-auth-ok", hostname=host, port=port, password=PASSWORD)
    try:
        assert store.get(store.set([1, 2])) == [1, 2]
        backend = store._client()
        texts = [repr(store), repr(backend), repr(getattr(backend, "pool", None))]
        assert all(PASSWORD not in text for text in texts)
    finally:
        store.cleanup()


def test_store_threads_share_the_pool(store_factory: Any, client_kind: str) -> None:
    store = make(store_factory, client_kind, cache_size=0)
    arrays = [np.full(200_000, float(i)) for i in range(6)]
    keys = [store.set(array) for array in arrays]
    try:
        with ThreadPoolExecutor(6) as threads:
            sums = list(threads.map(lambda key: float(store.get(key).sum()), keys))
        assert sums == [float(array.sum()) for array in arrays]
    finally:
        for key in keys:
            store.evict(key)


def test_the_wire_client_raises_only_our_errors_and_never_imports_redis_py() -> None:
    """One translation: the wire client makes this project's errors itself (no redis-py)."""
    import ast
    from pathlib import Path

    import proxystore.store.redis._wire as wire

    for path in Path(wire.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(name.split(".")[0] == "redis" for name in names), path.name
    # Each failure of a raw connection is one of ours, naming the server.
    port = free_port()
    with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}") as info:
        Connection("127.0.0.1", port, connect_timeout=2)
    assert not isinstance(info.value, redis.exceptions.RedisError)
