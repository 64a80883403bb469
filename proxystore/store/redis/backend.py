"""``RedisBackend``: a store's bytes in a Redis server.

Layout of a value under key ``k``: a fixed header (magic, write time, total size, chunk count)
followed by the payload. Payloads larger than ``chunk_size`` (Redis' bulk-string limit is
512 MB) are split: ``k`` then holds only the header and the chunks live in the Redis list
``k:ps-chunks`` (a user key ending in ``:ps-chunks`` is refused: see :func:`check_key`).
A key announced by a proxy future's ``set_result`` also has the one-element list
``k:ps-ready`` (:data:`READY_SUFFIX`, reserved too), on which waiters block
(:meth:`RedisBackend.wait_for`). Value and chunks are written in one ``MULTI``/``EXEC``
transaction and read in one, so a reader never mixes two versions; any stale chunk list is
deleted by the same transaction. With ``ttl``, every key a value uses gets the same expiry, in
that transaction. A chunked value whose chunk list is gone (evicted by Redis' ``maxmemory``
policy) is missing: ``exists`` is false and ``get`` finds nothing.

Two clients speak to the server, with the same layout
(:mod:`~proxystore.store.redis._clients`):

* by default, the store's own minimal RESP client (``_wire``) on a raw socket (TCP,
  unix socket or TLS): the serialized pieces of an object are sent straight from its memory
  and a value is received straight into one preallocated buffer (``recv_into``) that the
  deserializer shares with the arrays it rebuilds. A large value costs one copy on each side
  of the socket.
* redis-py, when the connection settings ask for something the raw client does not do: RESP3,
  a custom connection pool, credential providers and every other option not listed in
  :data:`WIRE_OPTIONS`. Its retries are off unless ``retry=`` is given.

One set of connections per backend and per process: a backend used after ``fork`` opens new
ones. Both clients raise this project's errors (:mod:`proxystore.exceptions`), once, naming
the store, the host that made the call, the key and the server's address: the own client
where it sees the failure, the redis-py client by translating redis-py's exceptions.
Passwords are kept as
:class:`~proxystore.secret.Secret`: no password appears in a ``repr``, an error message or a
traceback's locals.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

from proxystore.buffers import byte_view
from proxystore.exceptions import ForeignValueError, InvalidKeyError
from proxystore.serialize import Buffer
from proxystore.store.backends.base import BackendBase, Fetched, Parts, new_key, poll_exists
from proxystore.store.redis._clients import (
    CHUNKS_SUFFIX,
    HEADER,
    MAGIC,
    READY_SUFFIX,
    Inconsistent,
    Parsed,
    make_client,
)
from proxystore.store.redis._wire.errors import Where, loopback_hint
from proxystore.store.redis._wire.resp import SMALL_ARGUMENT, Argument

__all__ = [
    "CHUNKS_SUFFIX",
    "DEFAULT_CHUNK_SIZE",
    "MAX_BLOCK",
    "READY_SUFFIX",
    "REDIS_BULK_LIMIT",
    "SSL_OPTIONS",
    "WIRE_OPTIONS",
    "RedisBackend",
    "check_key",
    "uses_wire",
]

REDIS_BULK_LIMIT = 512 * 2**20
DEFAULT_CHUNK_SIZE = 256 * 2**20

SSL_OPTIONS = frozenset(
    {
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
    }
)
"""The ``ssl_*`` keywords (redis-py's names and meanings) that the store understands."""

WIRE_OPTIONS = frozenset(
    {
        "password",
        "username",
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "client_name",
        "ssl",
        "unix_socket_path",
        *SSL_OPTIONS,
    }
)
"""The ``redis_kwargs`` the built-in RESP client honours. Any other option makes the store use
redis-py instead."""


def uses_wire(redis_kwargs: dict[str, Any]) -> bool:
    """Return whether the built-in RESP client can honour every one of ``redis_kwargs``."""
    return all(name in WIRE_OPTIONS for name in redis_kwargs)


# Bounded waits unless the user chooses otherwise: no call can hang on a dead server.
_DEFAULT_TIMEOUTS = {"socket_connect_timeout": 5.0, "socket_timeout": 60.0}

MAX_BLOCK = 5.0
"""Longest one blocking wait of :meth:`RedisBackend.wait_for` on the server (seconds); a
longer wait is several, each followed by an ``exists`` check (which also sees a key written
without an announcement)."""

_RESERVED = (CHUNKS_SUFFIX, READY_SUFFIX)
_SHORTEST_BLOCK = 0.01  # seconds: the clients never send a blocking timeout below this


def check_key(key: object, where: str, *, store_name: str = "", store_type: str = "") -> str:
    r"""Return ``key`` if a Redis store can use it as a key, else raise.

    A key is a ``str`` (sent as UTF-8; lone surrogates ``\udc80``-``\udcff`` stand for the
    bytes ``0x80``-``0xff`` that are not UTF-8, as in file names) that does not end in
    :data:`CHUNKS_SUFFIX` or :data:`READY_SUFFIX`: ``k:ps-chunks`` holds the chunks of key
    ``k`` and ``k:ps-ready`` its announcement, so a user key of that name would overwrite (or
    read) another object's.

    Raises:
        InvalidKeyError: If ``key`` is not a ``str``, ends in the reserved suffix, or cannot
            be encoded (the message names the key, its type and the store).
    """
    names = {"store_name": store_name, "store_type": store_type}
    if not isinstance(key, str):
        raise InvalidKeyError(
            f"{where} cannot use key {key!r}: Redis store keys must be str, got "
            f"{type(key).__name__}",
            key=repr(key),
            **names,
        )
    if key.endswith(_RESERVED):
        suffix = next(suffix for suffix in _RESERVED if key.endswith(suffix))
        what = "the chunks" if suffix == CHUNKS_SUFFIX else "the announcement"
        raise InvalidKeyError(
            f"{where} cannot use key {key!r}: keys ending in {suffix!r} are reserved "
            f"(the store keeps {what} of key {key[: -len(suffix)]!r} there); choose "
            "another key",
            key=key,
            **names,
        )
    if not key.isascii():
        try:
            key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(
                f"{where} cannot use key {key!r}: it cannot be encoded as UTF-8 ({exc.reason} "
                f"at position {exc.start})",
                key=key,
                **names,
            ) from None
    return key


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
    """Values in a Redis server at ``host:port`` (or on a unix socket).

    Args:
        host: Redis server host (``""`` with ``unix_socket_path``).
        port: Redis server port.
        chunk_size: Largest payload written as one Redis value; larger ones are split.
        options: Connection settings (see :data:`WIRE_OPTIONS`; others select redis-py).
            Passwords may be :class:`~proxystore.secret.Secret`.
        ttl: Seconds after which every key of a value expires (``None``: never).
        created_on: Host name of the process that created the store, for messages.
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.

    The arguments are taken as they are: a store's are checked by its
    :class:`~proxystore.store.redis.settings.RedisSettings`, those of a URL by
    :func:`~proxystore.store.redis.settings.parse_url`. Nothing connects before the first
    operation (:meth:`ping` checks the server).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        options: dict[str, Any] | None = None,
        ttl: float | None = None,
        created_on: str | None = None,
        store_name: str = "",
        store_type: str = "RedisStore",
    ) -> None:
        super().__init__(store_name=store_name, store_type=store_type)
        settings = options or {}
        self.host = host
        self.port = port
        self.chunk_size = chunk_size
        self.ttl = ttl
        self._expiry = max(1, round(ttl * 1000)) if ttl is not None else 0  # milliseconds
        self.created_on = created_on
        self.db = int(settings.get("db") or 0)
        merged = {**_DEFAULT_TIMEOUTS, **settings}
        self.timeout = merged["socket_timeout"]
        path = settings.get("unix_socket_path")
        self.address = f"unix:{path}" if path else f"{host}:{port}"
        """Where the server is: ``host:port`` or ``unix:/path``."""
        self.client = make_client(
            host,
            port,
            merged,
            wire=uses_wire(settings),
            where=Where(
                self.address,
                host=host,
                store=self.where,
                store_name=self.store_name,
                store_type=self.store_type,
                created_on=created_on,
                timeout=self.timeout,
                db=self.db,
            ),
        )

    def check_key(self, key: object) -> str:
        """Return ``key`` if this store can use it (see :func:`check_key`), else raise.

        Raises:
            InvalidKeyError: If it is not a ``str`` or ends in the reserved suffix.
        """
        if type(key) is str and not key.endswith(_RESERVED) and key.isascii():
            return key  # the common case, kept short
        return check_key(key, self.where, store_name=self.store_name, store_type=self.store_type)

    def ping(self) -> None:
        """Check that the server answers and accepts the credentials.

        Raises:
            StoreConnectionError: If the server does not answer.
            StoreTimeoutError: If it does not answer in time.
            StoreAuthError: If it refuses the credentials.
        """
        self.client.ping()

    def loopback_hint(self) -> str:
        """The sentence for a loopback address used away from the creating host, or ``""``."""
        return loopback_hint(self.host, self.created_on).strip()

    def put(self, key: str | None, parts: Parts) -> str:
        """Write the serialized pieces under ``key`` in one transaction (chunked if large).

        The pieces are sent as they are (no joined copy); chunks are views into them.
        """
        key = new_key() if key is None else self.check_key(key)
        views = [byte_view(part) for part in parts]
        size = sum(view.nbytes for view in views)
        chunks_key = key + CHUNKS_SUFFIX
        expiry: tuple[Argument, ...] = ("PX", self._expiry) if self._expiry else ()
        commands: list[tuple[Argument, ...]]
        if size <= self.chunk_size:
            header = HEADER.pack(MAGIC, time.time(), size, 0)
            pieces: list[Buffer] = [header, *views]
            # Small: one short copy is cheaper than a list of pieces.
            value: Argument = b"".join(pieces) if size < SMALL_ARGUMENT else pieces
            commands = [("SET", key, value, *expiry), ("UNLINK", chunks_key)]
        else:
            count = (size + self.chunk_size - 1) // self.chunk_size
            header = HEADER.pack(MAGIC, time.time(), size, count)
            commands = [("UNLINK", chunks_key)]
            commands.extend(
                ("RPUSH", chunks_key, chunk) for chunk in _split(views, self.chunk_size)
            )
            if self._expiry:
                commands.append(("PEXPIRE", chunks_key, self._expiry))
            commands.append(("SET", key, header, *expiry))
        self.client.write(key, commands)
        return key

    def _parse(self, key: str, value: Buffer) -> Parsed:
        """The header of ``key``'s value.

        Raises:
            ForeignValueError: If the value is not framed as this store writes values (a value
                of another program, or damaged); a signing layer above turns it into an
                ``IntegrityError``.
        """
        view = memoryview(value)
        if view.nbytes < HEADER.size or view[:4] != MAGIC:
            raise self._foreign(
                key,
                f"{self.where}: Redis key {key!r} at {self.address} does not hold a ProxyStore "
                f"value: its {view.nbytes} bytes do not start with the store's header (written "
                "by another program, or not by a RedisStore). Use another key, or delete that "
                "one if it is stale.",
            )
        _, timestamp, size, count = HEADER.unpack_from(view)
        if not math.isfinite(timestamp):
            raise self._foreign(
                key,
                f"{self.where}: the header of key {key!r} at {self.address} has no valid write "
                f"time ({timestamp!r}): the value was damaged or written by another program",
            )
        return timestamp, size, count

    def _foreign(self, key: str, message: str) -> ForeignValueError:
        return ForeignValueError(
            message, key=key, store_name=self.store_name, store_type=self.store_type
        )

    def _inconsistent(self, key: str) -> ForeignValueError:
        return self._foreign(
            key,
            f"{self.where}: the chunks of key {key!r} at {self.address} are inconsistent with "
            "its header (the value was damaged or written by another program)",
        )

    def get(self, key: str) -> Fetched:
        """Fetch ``key``'s payload and write time (chunked values in one transaction).

        A small value is one ``GET``. A large one arrives in one fresh buffer, which the
        deserializer shares with the arrays it rebuilds.
        """
        key = self.check_key(key)
        value = self.client.get(key)
        if value is None:
            return None
        timestamp, size, count = self._parse(key, value)
        if count == 0:
            payload = memoryview(value)[HEADER.size :]
            if payload.nbytes != size:
                raise self._inconsistent(key)
            return payload, timestamp
        del value
        try:
            return self.client.get_chunked(key, lambda v: self._parse(key, v))
        except Inconsistent:
            raise self._inconsistent(key) from None
        except (MemoryError, OverflowError):
            raise self.error(
                f"{self.where}: the value of key {key!r} at {self.address} is "
                f"{size} bytes by its header, more than this process can allocate"
            ) from None

    def timestamp(self, key: str) -> float | None:
        """Return the write time of ``key`` (reads only the header), or ``None``."""
        key = self.check_key(key)
        value = self.client.get_header(key)
        if not value:
            return None
        return self._parse(key, value)[0]

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is in Redis, with all of its chunks if it is chunked."""
        key = self.check_key(key)
        header, length = self.client.probe(key)
        if not header:
            return False
        if len(header) < HEADER.size or header[:4] != MAGIC:
            return True  # another program's value: present (reading it is the error)
        return HEADER.unpack_from(header)[3] in (0, length)

    def evict(self, key: str) -> None:
        """Delete ``key``, its chunks and its announcement (a missing key is not an error)."""
        key = self.check_key(key)
        self.client.unlink(key, key + CHUNKS_SUFFIX, key + READY_SUFFIX)

    def expire(self, key: str, seconds: float) -> None:
        """Give ``key``, its chunk list and announcement an expiry ``seconds`` from now.

        One transaction. Used by :class:`~proxystore.store.lifetimes.LeaseLifetime` so that the
        objects of a client that dies before its lease ends still leave Redis. A missing key
        is ignored.
        """
        key = self.check_key(key)
        ms = max(1, round(seconds * 1000))
        self.client.write(key, [("PEXPIRE", key + suffix, ms) for suffix in ("", *_RESERVED)])

    def announce(self, key: str) -> None:
        """Tell the waiters of ``key`` (in any process) that it was written.

        Makes ``k:ps-ready`` a one-element list (with the backend's ``ttl``, if any), in one
        transaction: waiters blocked on it in :meth:`wait_for` wake at once, and later ones
        find it.
        """
        key = self.check_key(key)
        ready = key + READY_SUFFIX
        commands: list[tuple[Argument, ...]] = [("DEL", ready), ("RPUSH", ready, 1)]
        if self._expiry:
            commands.append(("PEXPIRE", ready, self._expiry))
        self.client.write(key, commands)

    def wait_for(self, key: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``key``, blocked on the server (no polling).

        Checks ``exists``, then blocks in ``BLMOVE k:ps-ready k:ps-ready RIGHT LEFT`` (the
        list rotated onto itself keeps its element, so every waiter wakes on one
        announcement). Each block lasts at most :data:`MAX_BLOCK` seconds and less than half
        the socket timeout, so a pooled connection never times out while it blocks; after
        each, ``exists`` is checked again. A wait of ``t`` seconds thus sends about
        ``2 * (1 + t / MAX_BLOCK)`` commands. (With a ``socket_timeout`` under 20 ms the
        wait polls ``exists`` instead, see
        :func:`~proxystore.store.backends.base.poll_exists`.) Needs Redis 6.2 or later.

        Returns:
            ``True`` once ``key`` exists or was announced (read it to find out whether it is
            still there), ``False`` when ``timeout`` ran out first.
        """
        key = self.check_key(key)
        ready = key + READY_SUFFIX
        deadline = time.monotonic() + max(timeout, 0.0)
        longest = MAX_BLOCK if not self.timeout else min(MAX_BLOCK, self.timeout / 2)
        if longest < _SHORTEST_BLOCK:  # a socket timeout too short to block on: poll instead
            return poll_exists(self, key, timeout)
        while True:
            if self.exists(key):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.client.block_rotate(key, ready, min(left, longest)):
                return True

    def close(self) -> None:
        """Close this process's connections (objects in Redis are left alone)."""
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisBackend({self.address})"
