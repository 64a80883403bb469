"""``RedisBackend``: a store's bytes in a Redis server.

Layout of a value under key ``k``: a fixed header (magic, write time, total size, chunk count)
followed by the payload. Payloads larger than ``chunk_size`` (Redis' bulk-string limit is
512 MB) are split: ``k`` then holds only the header and the chunks live in the Redis list
``k:ps-chunks``. Both are written in one ``MULTI``/``EXEC`` transaction and read in one, so a
reader never mixes two versions; any stale chunk list is deleted by the same transaction.

Two clients speak to the server, with the same layout:

* by default, :mod:`proxystore.store.redis_wire`, a minimal RESP client on a raw socket: the
  serialized pieces of an object are sent straight from its memory (``sendmsg``) and a value
  is received straight into one preallocated buffer (``recv_into``) that the deserializer
  shares with the arrays it rebuilds. A large value costs one copy on each side of the socket.
* redis-py, when the connection settings ask for something the raw client does not do: TLS
  (``ssl=True``), a unix socket, RESP3, a custom connection pool, retries, credential
  providers and every other option not listed in :data:`WIRE_OPTIONS`.

One set of connections per backend and per process: a backend used after ``fork`` opens new
ones. redis-py errors are translated here, in :meth:`RedisBackend.translate`. No password or
other connection setting appears in a ``repr`` or an error message.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Protocol

import redis

from proxystore.buffers import alloc_buffer, byte_view
from proxystore.exceptions import StoreAuthError, StoreConnectionError, StoreError
from proxystore.serialize import Buffer
from proxystore.store import redis_wire
from proxystore.store.backends.base import BackendBase, Fetched, Parts, new_key
from proxystore.store.redis_wire import SMALL_ARGUMENT, Argument

__all__ = ["DEFAULT_CHUNK_SIZE", "REDIS_BULK_LIMIT", "WIRE_OPTIONS", "RedisBackend", "uses_wire"]

_HEADER = struct.Struct("<4sdQI4x")  # magic, write time, payload size, chunk count (0: inline)
_MAGIC = b"PSR1"
_CHUNKS_SUFFIX = ":ps-chunks"
REDIS_BULK_LIMIT = 512 * 2**20
DEFAULT_CHUNK_SIZE = 256 * 2**20

# Bounded waits unless the user chooses otherwise: no call can hang on a dead server.
_DEFAULT_TIMEOUTS = {"socket_connect_timeout": 5.0, "socket_timeout": 60.0}

WIRE_OPTIONS = frozenset(
    {
        "password",
        "username",
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "client_name",
    }
)
"""The ``redis_kwargs`` the built-in RESP client honours. Any other option (except those
below, at their defaults) makes the store use redis-py instead."""

_NEUTRAL_OPTIONS: dict[str, Any] = {"ssl": False, "unix_socket_path": None}

_Parsed = tuple[float, int, int]  # timestamp, payload size, chunk count


class _Inconsistent(Exception):
    """A chunked value whose chunks do not add up to its header."""


def uses_wire(redis_kwargs: dict[str, Any]) -> bool:
    """Return whether the built-in RESP client can honour every one of ``redis_kwargs``."""
    return all(
        name in WIRE_OPTIONS or (name in _NEUTRAL_OPTIONS and value == _NEUTRAL_OPTIONS[name])
        for name, value in redis_kwargs.items()
    )


# -- the two clients ------------------------------------------------------------------------------


class _Client(Protocol):
    """What the store needs from a client (each method may raise redis-py exceptions)."""

    def ping(self) -> None: ...

    def client_id(self) -> int: ...

    def get(self, key: str) -> Buffer | None: ...

    def get_chunked(
        self, key: str, parse: Callable[[Buffer], _Parsed]
    ) -> tuple[Buffer, float] | None: ...

    def get_header(self, key: str) -> bytes: ...

    def write(self, commands: Sequence[Sequence[Argument]]) -> None: ...

    def exists(self, key: str) -> bool: ...

    def unlink(self, *keys: str) -> None: ...

    def close(self) -> None: ...


class _WireClient:
    """The store's operations over :mod:`proxystore.store.redis_wire` connections."""

    def __init__(self, host: str, port: int, options: dict[str, Any]) -> None:
        self.pool = redis_wire.ConnectionPool(
            host,
            port,
            connect_timeout=options.get("socket_connect_timeout"),
            timeout=options.get("socket_timeout"),
            password=options.get("password"),
            username=options.get("username"),
            db=int(options.get("db") or 0),
            client_name=options.get("client_name"),
            keepalive=bool(options.get("socket_keepalive", True)),  # as redis-py
        )

    def ping(self) -> None:
        self.pool.command("PING")

    def client_id(self) -> int:
        return self.pool.client_id()

    def get(self, key: str) -> Buffer | None:
        with self.pool.connection() as conn:
            value: Buffer | None = conn.command("GET", key, prefix=_HEADER.size)
            return value

    def get_chunked(
        self, key: str, parse: Callable[[Buffer], _Parsed]
    ) -> tuple[Buffer, float] | None:
        with self.pool.connection() as conn:
            chunks_key = key + _CHUNKS_SUFFIX
            conn.send([("MULTI",), ("GET", key), ("LRANGE", chunks_key, 0, -1), ("EXEC",)])
            for _ in range(3):  # +OK +QUEUED +QUEUED
                conn.read_reply()
            if conn.read_array_length() != 2:
                raise redis.exceptions.ResponseError("transaction was aborted")
            value = conn.read_reply(prefix=_HEADER.size)
            count = conn.read_array_length() or 0
            if value is None:  # evicted since the header was read
                for _ in range(count):
                    conn.read_reply()
                return None
            timestamp, size, expected = parse(value)
            if expected == 0:  # overwritten by a small (inline) value since the header was read
                for _ in range(count):
                    conn.read_reply()
                return memoryview(value)[_HEADER.size :], timestamp
            data = alloc_buffer(size)
            offset = 0
            for _ in range(count):
                try:
                    offset += max(conn.read_bulk_into(data[offset:]), 0)
                except ValueError as exc:  # more bytes than the header announced
                    raise _Inconsistent() from exc
            if count != expected or offset != size:
                raise _Inconsistent()
            return data, timestamp

    def get_header(self, key: str) -> bytes:
        value = self.pool.command("GETRANGE", key, 0, _HEADER.size - 1)
        return bytes(value or b"")

    def write(self, commands: Sequence[Sequence[Argument]]) -> None:
        with self.pool.connection() as conn:
            conn.transaction(commands)

    def exists(self, key: str) -> bool:
        return bool(self.pool.command("EXISTS", key))

    def unlink(self, *keys: str) -> None:
        self.pool.command("UNLINK", *keys)

    def close(self) -> None:
        self.pool.close()


def _joined(arg: Argument) -> Any:
    return b"".join(arg) if isinstance(arg, (list, tuple)) else arg


class _RedisPyClient:
    """The store's operations over redis-py (one client per process)."""

    def __init__(self, host: str, port: int, options: dict[str, Any]) -> None:
        self.host = host
        self.port = port
        self.options = options
        self._lock = threading.Lock()
        self._pid = -1
        self._client: redis.Redis[bytes] | None = None

    def client(self) -> redis.Redis[bytes]:
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    self._client = redis.Redis(host=self.host, port=self.port, **self.options)
                    self._pid = pid
        assert self._client is not None
        return self._client

    def ping(self) -> None:
        self.client().ping()

    def client_id(self) -> int:
        return int(self.client().client_id())

    def get(self, key: str) -> Buffer | None:
        return self.client().get(key)

    def get_chunked(
        self, key: str, parse: Callable[[Buffer], _Parsed]
    ) -> tuple[Buffer, float] | None:
        pipe = self.client().pipeline(transaction=True)
        pipe.get(key)
        pipe.lrange(key + _CHUNKS_SUFFIX, 0, -1)
        value, chunks = pipe.execute()
        if value is None:
            return None
        timestamp, size, count = parse(value)
        if count == 0:
            return memoryview(value)[_HEADER.size :], timestamp
        if len(chunks) != count or sum(map(len, chunks)) != size:
            raise _Inconsistent()
        data = alloc_buffer(size)
        offset = 0
        chunks.reverse()
        while chunks:  # pop as we go: each chunk is freed once copied
            chunk = chunks.pop()
            data[offset : offset + len(chunk)] = chunk
            offset += len(chunk)
        return data, timestamp

    def get_header(self, key: str) -> bytes:
        return bytes(self.client().getrange(key, 0, _HEADER.size - 1))  # type: ignore[no-untyped-call]

    def write(self, commands: Sequence[Sequence[Argument]]) -> None:
        pipe = self.client().pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*(_joined(arg) for arg in command))  # type: ignore[no-untyped-call]
        pipe.execute()

    def exists(self, key: str) -> bool:
        return bool(self.client().exists(key))

    def unlink(self, *keys: str) -> None:
        self.client().unlink(*keys)

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None
            self._pid = -1


def _split(views: Sequence[memoryview], size: int) -> Iterator[list[memoryview]]:
    """Cut the concatenation of ``views`` into pieces of ``size`` bytes, without copying."""
    chunk: list[memoryview] = []
    room = size
    for view in views:
        while view.nbytes:
            take = view[:room]
            chunk.append(take)
            view = view[take.nbytes :]
            room -= take.nbytes
            if not room:
                yield chunk
                chunk, room = [], size
    if chunk:
        yield chunk


class RedisBackend(BackendBase):
    """Values in a Redis server at ``host:port``.

    Args:
        host: Redis server host.
        port: Redis server port.
        chunk_size: Largest payload written as one Redis value; larger ones are split.
        options: Connection settings (see :data:`WIRE_OPTIONS`; others select redis-py).
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.

    Raises:
        ValueError: If ``chunk_size`` is out of range.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        options: dict[str, Any] | None = None,
        store_name: str = "",
        store_type: str = "RedisStore",
    ) -> None:
        super().__init__(store_name=store_name, store_type=store_type)
        if not 0 < chunk_size <= REDIS_BULK_LIMIT - _HEADER.size:
            raise ValueError(
                f"chunk_size must be in (0, {REDIS_BULK_LIMIT - _HEADER.size}], got {chunk_size}"
            )
        self.host = host
        self.port = port
        self.chunk_size = chunk_size
        settings = dict(options or {})
        merged = {**_DEFAULT_TIMEOUTS, **settings}
        client: _Client
        if uses_wire(settings):
            client = _WireClient(host, port, merged)
        else:
            client = _RedisPyClient(host, port, merged)
        self.client = client

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return f"{self.host}:{self.port}"

    def ping(self) -> None:
        """Check that the server answers and accepts the credentials.

        Raises:
            StoreConnectionError: If the server does not answer.
            StoreAuthError: If it refuses the credentials.
        """
        with self.translate():
            self.client.ping()

    @contextlib.contextmanager
    def translate(self) -> Iterator[None]:
        """Translate redis-py errors (raised by either client) into ProxyStore errors."""
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise StoreAuthError(
                f"Redis at {self.address} refused the credentials of {self.where}: "
                f"{str(exc).rstrip('.')}. Check the password/username passed to the store.",
                store_name=self.store_name,
                store_type=self.store_type,
            ) from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreConnectionError(
                f"{self.where} cannot reach the Redis server at {self.address}: "
                f"{str(exc).rstrip('.')}. Is redis-server running there, and is the host:port "
                "right?",
                address=self.address,
                store_name=self.store_name,
                store_type=self.store_type,
            ) from exc
        except redis.exceptions.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise StoreAuthError(
                    f"Redis at {self.address} needs credentials for {self.where}: {exc}",
                    store_name=self.store_name,
                    store_type=self.store_type,
                ) from exc
            raise self.error(
                f"Redis at {self.address} rejected a command of {self.where}: {exc}"
            ) from exc
        except redis.exceptions.RedisError as exc:
            raise self.error(
                f"{self.where} got an unexpected reply from {self.address}: {exc}"
            ) from exc

    def put(self, key: str | None, parts: Parts) -> str:
        """Write the serialized pieces under ``key`` in one transaction (chunked if large).

        The pieces are sent as they are (no joined copy); chunks are views into them.
        """
        if key is None:
            key = new_key()
        views = [byte_view(part) for part in parts]
        size = sum(view.nbytes for view in views)
        chunks_key = key + _CHUNKS_SUFFIX
        commands: list[tuple[Argument, ...]]
        if size <= self.chunk_size:
            header = _HEADER.pack(_MAGIC, time.time(), size, 0)
            pieces: list[Buffer] = [header, *views]
            # Small: one short copy is cheaper than a list of pieces.
            value: Argument = b"".join(pieces) if size < SMALL_ARGUMENT else pieces
            commands = [("SET", key, value), ("UNLINK", chunks_key)]
        else:
            count = (size + self.chunk_size - 1) // self.chunk_size
            header = _HEADER.pack(_MAGIC, time.time(), size, count)
            commands = [("UNLINK", chunks_key)]
            commands.extend(
                ("RPUSH", chunks_key, chunk) for chunk in _split(views, self.chunk_size)
            )
            commands.append(("SET", key, header))
        with self.translate():
            self.client.write(commands)
        return key

    def _parse(self, key: str, value: Buffer) -> _Parsed:
        view = memoryview(value)
        if view.nbytes < _HEADER.size or view[:4] != _MAGIC:
            raise self.error(
                f"Redis key {key!r} at {self.address} does not hold a ProxyStore value "
                "(written by another program?)"
            )
        _, timestamp, size, count = _HEADER.unpack_from(view)
        return timestamp, size, count

    def _inconsistent(self, key: str) -> StoreError:
        return self.error(
            f"{self.where}: the chunks of key {key!r} at {self.address} are inconsistent with "
            "its header (the value was damaged or written by another program)"
        )

    def get(self, key: str) -> Fetched:
        """Fetch ``key``'s payload and write time (chunked values in one transaction).

        A small value is one ``GET``. A large one arrives in one fresh buffer, which the
        deserializer shares with the arrays it rebuilds.
        """
        with self.translate():
            value = self.client.get(key)
            if value is None:
                return None
            timestamp, size, count = self._parse(key, value)
            if count == 0:
                payload = memoryview(value)[_HEADER.size :]
                if payload.nbytes != size:
                    raise self._inconsistent(key)
                return payload, timestamp
            del value
            try:
                return self.client.get_chunked(key, lambda v: self._parse(key, v))
            except _Inconsistent:
                raise self._inconsistent(key) from None

    def timestamp(self, key: str) -> float | None:
        """Return the write time of ``key`` (reads only the header), or ``None``."""
        with self.translate():
            value = self.client.get_header(key)
        if not value:
            return None
        return self._parse(key, value)[0]

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is in Redis."""
        with self.translate():
            return self.client.exists(key)

    def evict(self, key: str) -> None:
        """Delete ``key`` and its chunks (a missing key is not an error)."""
        with self.translate():
            self.client.unlink(key, key + _CHUNKS_SUFFIX)

    def close(self) -> None:
        """Close this process's connections (objects in Redis are left alone)."""
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisBackend({self.address})"
