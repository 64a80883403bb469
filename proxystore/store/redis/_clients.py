"""The two clients of :class:`~proxystore.store.redis.backend.RedisBackend`, one layout.

* ``_WireClient``, over the store's own RESP connections (``_wire``; the default: plain
  TCP, unix sockets and TLS), moves values without extra copies;
* ``_RedisPyClient``, over redis-py, for settings the wire client does not do (RESP3,
  custom pools, credential providers, ...). redis-py's default retries are turned off unless
  the caller passes ``retry=``: a retry multiplies every timeout.

Both raise this project's errors, made once by the backend's
:class:`~proxystore.store.redis._wire.errors.Where` (the store, the key, the server): the wire
client where it sees a failure, the redis-py client by translating redis-py's exceptions
(:mod:`proxystore.store.redis._errors`, used by that client only). Passwords stay
:class:`~proxystore.secret.Secret` in every attribute and are unwrapped only to connect.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from proxystore.buffers import alloc_buffer
from proxystore.secret import reveal
from proxystore.serialize import Buffer
from proxystore.store.redis._errors import translated
from proxystore.store.redis._wire.connection import MAX_BULK, Connection, ssl_context
from proxystore.store.redis._wire.errors import Overflow, Where
from proxystore.store.redis._wire.pool import ConnectionPool
from proxystore.store.redis._wire.resp import Argument

__all__ = [
    "CHUNKS_SUFFIX",
    "HEADER",
    "MAGIC",
    "READY_SUFFIX",
    "Inconsistent",
    "Parsed",
    "make_client",
]

HEADER = struct.Struct("<4sdQI4x")  # magic, write time, payload size, chunk count (0: inline)
MAGIC = b"PSR1"
CHUNKS_SUFFIX = ":ps-chunks"
READY_SUFFIX = ":ps-ready"  # a one-element list: the key was announced (proxy futures)

Parsed = tuple[float, int, int]  # timestamp, payload size, chunk count


class Inconsistent(Exception):
    """A chunked value whose chunks do not add up to its header."""


class _Client(Protocol):
    """What the backend needs from a client (each method raises this project's errors)."""

    def ping(self) -> None: ...

    def client_id(self) -> int: ...

    def get(self, key: str) -> Buffer | None: ...

    def get_chunked(
        self, key: str, parse: Callable[[Buffer], Parsed]
    ) -> tuple[Buffer, float] | None: ...

    def get_header(self, key: str) -> bytes: ...

    def probe(self, key: str) -> tuple[bytes, int]: ...

    def scan(self, cursor: int, pattern: str, count: int) -> tuple[int, list[bytes]]: ...

    def write(self, key: str, commands: Sequence[Sequence[Argument]]) -> None: ...

    def block_rotate(self, key: str, list_key: str, seconds: float) -> bool: ...

    def unlink(self, *keys: str) -> None: ...

    def close(self) -> None: ...


_BULK = (bytes, bytearray, memoryview)


def _block(seconds: float) -> str:
    """A blocking command's timeout in seconds: never ``0``, which Redis takes for "forever"."""
    return f"{max(seconds, 0.01):.3f}"  # RedisBackend.wait_for relies on this floor


def _bulk(conn: Connection, reply: Any, command: str) -> Any:
    """``reply`` if it is a string (or nil), the reply ``command`` can have; else raise."""
    if reply is None or isinstance(reply, _BULK):
        return reply
    raise conn.malformed(f"{command} answered with a {type(reply).__name__}")


def _integer(conn: Connection, reply: Any, command: str) -> int:
    if isinstance(reply, int):
        return reply
    raise conn.malformed(f"{command} answered with a {type(reply).__name__}")


class _WireClient:
    """The backend's operations over the store's own RESP connections (``_wire``).

    Every reply is checked to be of the kind its command has (a string for ``GET``, an
    integer for ``LLEN``, ...): anything else is a ``MalformedReply``.
    """

    def __init__(self, host: str, port: int, options: dict[str, Any], where: Where) -> None:
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
            where=where,
        )

    def ping(self) -> None:
        self.pool.command("PING")

    def client_id(self) -> int:
        return self.pool.client_id()

    def get(self, key: str) -> Buffer | None:
        with self.pool.connection(key) as conn:
            value: Buffer | None = _bulk(conn, conn.command("GET", key, prefix=HEADER.size), "GET")
            return value

    def get_chunked(
        self, key: str, parse: Callable[[Buffer], Parsed]
    ) -> tuple[Buffer, float] | None:
        with self.pool.connection(key) as conn:
            chunks_key = key + CHUNKS_SUFFIX
            conn.send([("MULTI",), ("GET", key), ("LRANGE", chunks_key, 0, -1), ("EXEC",)])
            for _ in range(3):  # +OK +QUEUED +QUEUED
                conn.read_reply()
            if conn.read_array_length() != 2:
                raise conn.where.rejected("the transaction was aborted", key)
            value = _bulk(conn, conn.read_reply(prefix=HEADER.size), "GET")
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
            if count != expected or size > count * MAX_BULK:  # before any memory is set aside
                raise Inconsistent()
            data = alloc_buffer(size)
            offset = 0
            for _ in range(count):
                try:  # a stall counts the bytes of the whole value
                    offset += max(conn.read_bulk_into(data[offset:], before=offset, total=size), 0)
                except Overflow as exc:  # more bytes than the header announced
                    raise Inconsistent() from exc
            if count != expected or offset != size:
                raise Inconsistent()
            return data, timestamp

    def get_header(self, key: str) -> bytes:
        with self.pool.connection(key) as conn:
            value = _bulk(conn, conn.command("GETRANGE", key, 0, HEADER.size - 1), "GETRANGE")
        return bytes(value or b"")

    def probe(self, key: str) -> tuple[bytes, int]:
        with self.pool.connection(key) as conn:
            header, length = conn.pipeline(
                [("GETRANGE", key, 0, HEADER.size - 1), ("LLEN", key + CHUNKS_SUFFIX)]
            )
            header = _bulk(conn, header, "GETRANGE")
            length = _integer(conn, length, "LLEN")
        return bytes(header or b""), length

    def scan(self, cursor: int, pattern: str, count: int) -> tuple[int, list[bytes]]:
        """One ``SCAN cursor MATCH pattern COUNT count``: the next cursor and key names."""
        with self.pool.connection() as conn:
            reply = conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            if (
                not isinstance(reply, list)
                or len(reply) != 2
                or not isinstance(reply[0], _BULK)
                or not bytes(reply[0]).isdigit()
                or not isinstance(reply[1], list)
                or not all(isinstance(name, _BULK) for name in reply[1])
            ):
                raise conn.malformed(
                    "SCAN answered with something else than a cursor and a list of keys"
                )
            return int(bytes(reply[0])), [bytes(name) for name in reply[1]]

    def write(self, key: str, commands: Sequence[Sequence[Argument]]) -> None:
        with self.pool.connection(key) as conn:
            conn.transaction(commands)

    def block_rotate(self, key: str, list_key: str, seconds: float) -> bool:
        """``BLMOVE list_key list_key RIGHT LEFT seconds``: whether the list had an element.

        The list is rotated onto itself, so it keeps its element and every waiter wakes. The
        caller keeps ``seconds`` below the socket timeout.
        """
        with self.pool.connection(key) as conn:
            reply = conn.command("BLMOVE", list_key, list_key, "RIGHT", "LEFT", _block(seconds))
            return _bulk(conn, reply, "BLMOVE") is not None

    def unlink(self, *keys: str) -> None:
        with self.pool.connection(keys[0]) as conn:
            conn.command("UNLINK", *keys)

    def close(self) -> None:
        self.pool.close()


def _joined(arg: Argument) -> Any:
    if isinstance(arg, str):
        return arg.encode("utf-8", "surrogateescape")  # as the wire client sends it
    return b"".join(arg) if isinstance(arg, (list, tuple)) else arg


def _b(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


# What redis-py lets escape on a malformed or hostile reply (deeply nested arrays:
# RecursionError; a reply of the wrong shape, in its parser, its response callbacks or its
# handshake: TypeError, LookupError, ValueError, AttributeError, OverflowError).
_PARSER_FAILURES = (
    RecursionError,
    TypeError,
    LookupError,
    ValueError,
    AttributeError,
    MemoryError,
    OverflowError,
)


class _RedisPyClient:
    """The backend's operations over redis-py (one client per process)."""

    def __init__(self, host: str, port: int, options: dict[str, Any], where: Where) -> None:
        self.host = host
        self.port = port
        self.options = options
        self.where = where
        path = options.get("unix_socket_path")
        self.address = f"unix:{path}" if path else f"{host}:{port}"
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

    @contextlib.contextmanager
    def _guard(self, command: str, key: str | None = None) -> Iterator[None]:
        """Translate redis-py's errors, and what its parser lets escape on a malformed reply.

        redis-py closes the connection of any failed read itself.
        """
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise translated(self.where, key, exc) from exc
        except _PARSER_FAILURES as exc:
            raise self.where.malformed(
                f"{command}: redis-py could not parse it ({type(exc).__name__})", key
            ) from exc

    def _expect(self, reply: Any, kinds: tuple[type, ...], command: str, key: str | None) -> Any:
        if reply is None or isinstance(reply, kinds):
            return reply
        raise self.where.malformed(f"{command} answered with a {type(reply).__name__}", key)

    def ping(self) -> None:
        client = self.client()
        with self._guard("PING"):
            client.ping()

    def client_id(self) -> int:
        client = self.client()
        with self._guard("CLIENT ID"):
            reply = client.client_id()
        if isinstance(reply, int) and not isinstance(reply, bool):
            return reply
        raise self.where.malformed(f"CLIENT ID answered with a {type(reply).__name__}")

    def get(self, key: str) -> Buffer | None:
        client = self.client()
        with self._guard("GET", key):
            reply = client.get(_b(key))
        return self._expect(reply, _BULK, "GET", key)  # type: ignore[no-any-return]

    def get_chunked(
        self, key: str, parse: Callable[[Buffer], Parsed]
    ) -> tuple[Buffer, float] | None:
        client = self.client()
        with self._guard("MULTI/GET/LRANGE/EXEC", key):
            pipe = client.pipeline(transaction=True)
            pipe.get(_b(key))
            pipe.lrange(_b(key + CHUNKS_SUFFIX), 0, -1)
            replies = pipe.execute()
        if not isinstance(replies, list) or len(replies) != 2:
            raise self.where.malformed("EXEC answered with something else than 2 replies", key)
        value, chunks = replies
        self._expect(value, _BULK, "GET", key)
        if not isinstance(chunks, list) or not all(isinstance(c, _BULK) for c in chunks):
            raise self.where.malformed("LRANGE answered with something else than strings", key)
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
        client = self.client()
        with self._guard("GETRANGE", key):
            reply = client.getrange(_b(key), 0, HEADER.size - 1)  # type: ignore[no-untyped-call]
        return bytes(self._expect(reply, _BULK, "GETRANGE", key) or b"")

    def probe(self, key: str) -> tuple[bytes, int]:
        client = self.client()
        with self._guard("GETRANGE/LLEN", key):
            pipe = client.pipeline(transaction=False)
            pipe.getrange(_b(key), 0, HEADER.size - 1)
            pipe.llen(_b(key + CHUNKS_SUFFIX))
            header, length = pipe.execute()
        header = self._expect(header, _BULK, "GETRANGE", key)
        if not isinstance(length, int):
            raise self.where.malformed(f"LLEN answered with a {type(length).__name__}", key)
        return bytes(header or b""), length

    def scan(self, cursor: int, pattern: str, count: int) -> tuple[int, list[bytes]]:
        """One ``SCAN cursor MATCH pattern COUNT count``: the next cursor and key names."""
        client = self.client()
        with self._guard("SCAN"):
            cursor, names = client.scan(cursor, match=_b(pattern), count=count)
        if not isinstance(cursor, int) or not all(isinstance(n, _BULK) for n in names):
            raise self.where.malformed("SCAN answered with something else than keys")
        return cursor, [bytes(name) for name in names]

    def write(self, key: str, commands: Sequence[Sequence[Argument]]) -> None:
        client = self.client()
        with self._guard("MULTI/EXEC", key):
            pipe = client.pipeline(transaction=True)
            for command in commands:
                pipe.execute_command(*(_joined(arg) for arg in command))  # type: ignore[no-untyped-call]
            pipe.execute()

    def block_rotate(self, key: str, list_key: str, seconds: float) -> bool:
        """See :meth:`_WireClient.block_rotate`."""
        client = self.client()
        with self._guard("BLMOVE", key):
            reply = client.execute_command(
                "BLMOVE", _b(list_key), _b(list_key), "RIGHT", "LEFT", _block(seconds)
            )
        return self._expect(reply, _BULK, "BLMOVE", key) is not None

    def unlink(self, *keys: str) -> None:
        client = self.client()
        with self._guard("UNLINK", keys[0]):
            client.unlink(*(_b(key) for key in keys))

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None
            self._pid = -1


def make_client(
    host: str, port: int, options: dict[str, Any], *, wire: bool, where: Where
) -> _Client:
    """Return the client for ``options``: the wire client if ``wire``, else redis-py's.

    Args:
        host: The server's host (``""`` with a unix socket).
        port: The server's port.
        options: The connection settings.
        wire: Use the store's own client.
        where: What the clients' errors name.
    """
    if wire:
        return _WireClient(host, port, options, where)
    return _RedisPyClient(host, port, options, where)
