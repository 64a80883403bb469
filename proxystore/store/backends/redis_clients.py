"""The two clients of :class:`~proxystore.store.backends.redis.RedisBackend`, one layout.

* ``_WireClient``, over :mod:`proxystore.store.redis_wire` connections (the default: plain
  TCP, unix sockets and TLS), moves values without extra copies;
* ``_RedisPyClient``, over redis-py, for settings the wire client does not do (RESP3,
  custom pools, credential providers, ...). redis-py's default retries are turned off unless
  the caller passes ``retry=``: a retry multiplies every timeout.

Both raise redis-py's exception classes; the backend translates them. Passwords stay
:class:`~proxystore.secret.Secret` in every attribute and are unwrapped only to connect.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Sequence
from typing import Any, Callable, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from proxystore.buffers import alloc_buffer
from proxystore.secret import reveal
from proxystore.serialize import Buffer
from proxystore.store.redis_config import ssl_context
from proxystore.store.redis_pool import ConnectionPool
from proxystore.store.redis_resp import Argument
from proxystore.store.redis_wire import Stalled

__all__ = ["CHUNKS_SUFFIX", "HEADER", "MAGIC", "Inconsistent", "Parsed", "make_client"]

HEADER = struct.Struct("<4sdQI4x")  # magic, write time, payload size, chunk count (0: inline)
MAGIC = b"PSR1"
CHUNKS_SUFFIX = ":ps-chunks"

Parsed = tuple[float, int, int]  # timestamp, payload size, chunk count


class Inconsistent(Exception):
    """A chunked value whose chunks do not add up to its header."""


class _Client(Protocol):
    """What the backend needs from a client (each method may raise redis-py exceptions)."""

    def ping(self) -> None: ...

    def client_id(self) -> int: ...

    def get(self, key: str) -> Buffer | None: ...

    def get_chunked(
        self, key: str, parse: Callable[[Buffer], Parsed]
    ) -> tuple[Buffer, float] | None: ...

    def get_header(self, key: str) -> bytes: ...

    def probe(self, key: str) -> tuple[bytes, int]: ...

    def write(self, commands: Sequence[Sequence[Argument]]) -> None: ...

    def unlink(self, *keys: str) -> None: ...

    def close(self) -> None: ...


class _WireClient:
    """The backend's operations over :mod:`proxystore.store.redis_wire` connections."""

    def __init__(self, host: str, port: int, options: dict[str, Any]) -> None:
        self.pool = ConnectionPool(
            host,
            port,
            connect_timeout=options.get("socket_connect_timeout"),
            timeout=options.get("socket_timeout"),
            password=options.get("password"),
            username=options.get("username"),
            db=int(options.get("db") or 0),
            client_name=options.get("client_name"),
            keepalive=bool(options.get("socket_keepalive", True)),  # as redis-py
            unix_socket_path=options.get("unix_socket_path"),
            ssl_context=ssl_context(options),
        )

    def ping(self) -> None:
        self.pool.command("PING")

    def client_id(self) -> int:
        return self.pool.client_id()

    def get(self, key: str) -> Buffer | None:
        with self.pool.connection() as conn:
            value: Buffer | None = conn.command("GET", key, prefix=HEADER.size)
            return value

    def get_chunked(
        self, key: str, parse: Callable[[Buffer], Parsed]
    ) -> tuple[Buffer, float] | None:
        with self.pool.connection() as conn:
            chunks_key = key + CHUNKS_SUFFIX
            conn.send([("MULTI",), ("GET", key), ("LRANGE", chunks_key, 0, -1), ("EXEC",)])
            for _ in range(3):  # +OK +QUEUED +QUEUED
                conn.read_reply()
            if conn.read_array_length() != 2:
                raise redis.exceptions.ResponseError("transaction was aborted")
            value = conn.read_reply(prefix=HEADER.size)
            count = conn.read_array_length() or 0
            if value is None:  # evicted since the header was read
                for _ in range(count):
                    conn.read_reply()
                return None
            timestamp, size, expected = parse(value)
            if expected == 0:  # overwritten by a small (inline) value since the header was read
                for _ in range(count):
                    conn.read_reply()
                return memoryview(value)[HEADER.size :], timestamp
            if count == 0:  # the chunk list is gone (evicted by Redis' maxmemory policy)
                return None
            data = alloc_buffer(size)
            offset = 0
            for _ in range(count):
                try:
                    offset += max(conn.read_bulk_into(data[offset:]), 0)
                except ValueError as exc:  # more bytes than the header announced
                    raise Inconsistent() from exc
                except Stalled as exc:  # count the bytes of the whole value
                    raise Stalled(exc.address, offset + exc.received, size) from exc
            if count != expected or offset != size:
                raise Inconsistent()
            return data, timestamp

    def get_header(self, key: str) -> bytes:
        value = self.pool.command("GETRANGE", key, 0, HEADER.size - 1)
        return bytes(value or b"")

    def probe(self, key: str) -> tuple[bytes, int]:
        with self.pool.connection() as conn:
            header, length = conn.pipeline(
                [("GETRANGE", key, 0, HEADER.size - 1), ("LLEN", key + CHUNKS_SUFFIX)]
            )
        return bytes(header or b""), int(length)

    def write(self, commands: Sequence[Sequence[Argument]]) -> None:
        with self.pool.connection() as conn:
            conn.transaction(commands)

    def unlink(self, *keys: str) -> None:
        self.pool.command("UNLINK", *keys)

    def close(self) -> None:
        self.pool.close()


def _joined(arg: Argument) -> Any:
    return b"".join(arg) if isinstance(arg, (list, tuple)) else arg


class _RedisPyClient:
    """The backend's operations over redis-py (one client per process)."""

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
                    self._client = self._connect()
                    self._pid = pid
        assert self._client is not None
        return self._client

    def _connect(self) -> redis.Redis[bytes]:
        options = dict(self.options)
        options.setdefault("retry", Retry(NoBackoff(), 0))  # one wait per timeout, no retries
        for name in ("password", "ssl_password"):
            if name in options:
                options[name] = reveal(options[name])
        return redis.Redis(host=self.host, port=self.port, **options)

    def ping(self) -> None:
        self.client().ping()

    def client_id(self) -> int:
        return int(self.client().client_id())

    def get(self, key: str) -> Buffer | None:
        return self.client().get(key)

    def get_chunked(
        self, key: str, parse: Callable[[Buffer], Parsed]
    ) -> tuple[Buffer, float] | None:
        pipe = self.client().pipeline(transaction=True)
        pipe.get(key)
        pipe.lrange(key + CHUNKS_SUFFIX, 0, -1)
        value, chunks = pipe.execute()
        if value is None:
            return None
        timestamp, size, count = parse(value)
        if count == 0:
            return memoryview(value)[HEADER.size :], timestamp
        if not chunks:  # the chunk list is gone (evicted by Redis' maxmemory policy)
            return None
        if len(chunks) != count or sum(map(len, chunks)) != size:
            raise Inconsistent()
        data = alloc_buffer(size)
        offset = 0
        chunks.reverse()
        while chunks:  # pop as we go: each chunk is freed once copied
            chunk = chunks.pop()
            data[offset : offset + len(chunk)] = chunk
            offset += len(chunk)
        return data, timestamp

    def get_header(self, key: str) -> bytes:
        return bytes(self.client().getrange(key, 0, HEADER.size - 1))  # type: ignore[no-untyped-call]

    def probe(self, key: str) -> tuple[bytes, int]:
        pipe = self.client().pipeline(transaction=False)
        pipe.getrange(key, 0, HEADER.size - 1)
        pipe.llen(key + CHUNKS_SUFFIX)
        header, length = pipe.execute()
        return bytes(header or b""), int(length)

    def write(self, commands: Sequence[Sequence[Argument]]) -> None:
        pipe = self.client().pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*(_joined(arg) for arg in command))  # type: ignore[no-untyped-call]
        pipe.execute()

    def unlink(self, *keys: str) -> None:
        self.client().unlink(*keys)

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None
            self._pid = -1


def make_client(host: str, port: int, options: dict[str, Any], *, wire: bool) -> _Client:
    """Return the client for ``options``: the wire client if ``wire``, else redis-py's."""
    if wire:
        return _WireClient(host, port, options)
    return _RedisPyClient(host, port, options)
