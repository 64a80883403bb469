"""``RedisStore``: objects kept in a Redis server.

Layout of a value under key ``k``: a fixed header (magic, write time, total size, chunk count)
followed by the payload. Payloads larger than ``chunk_size`` (Redis' bulk-string limit is
512 MB) are split: ``k`` then holds only the header and the chunks live in the Redis list
``k:ps-chunks``. Both are written in one ``MULTI``/``EXEC`` transaction and read in one, so a
reader never mixes two versions; any stale chunk list is deleted by the same transaction.

One connection pool per store and per process: a store used after ``fork`` opens a new pool.
Connection settings (``password``, ``username``, ``db``, ``ssl``, timeouts, ...) go to
redis-py unchanged and travel with proxies so workers can connect, but never appear in a
``repr`` or a log line.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import redis

from proxystore.exceptions import StoreAuthError, StoreConnectionError, StoreError
from proxystore.serialize import Buffer
from proxystore.store.base import StoreFactory
from proxystore.store.remote import RemoteStore

__all__ = ["RedisFactory", "RedisStore"]

T = TypeVar("T")

_HEADER = struct.Struct("<4sdQI4x")  # magic, write time, payload size, chunk count (0: inline)
_MAGIC = b"PSR1"
_CHUNKS_SUFFIX = ":ps-chunks"
_REDIS_BULK_LIMIT = 512 * 2**20
_DEFAULT_CHUNK_SIZE = 256 * 2**20
_RETRIES = 3

# Bounded waits unless the user chooses otherwise: no call can hang on a dead server.
_DEFAULT_TIMEOUTS = {"socket_connect_timeout": 5.0, "socket_timeout": 60.0}


class RedisFactory(StoreFactory[T]):
    """Factory of :class:`RedisStore` proxies.

    Carries the key and the store's description (host, port, connection settings); in a
    process without the store it re-creates one. :meth:`resolve_async` fetches the object in
    a background thread and the first use of the proxy waits on that future.
    """


class RedisStore(RemoteStore):
    """A store backed by a Redis server.

    Args:
        name: Name of the store.
        hostname: Redis server host.
        port: Redis server port.
        cache_size: Size of the per-process LRU cache of deserialized objects (``0``: off).
        chunk_size: Largest payload written as one Redis value; larger ones are split.
        redis_kwargs: Passed to :class:`redis.Redis` (``password``, ``username``, ``db``,
            ``ssl``, ``socket_timeout``, ...). Connect and socket timeouts default to 5 s and
            60 s so that no call waits forever.

    Raises:
        StoreConnectionError: If the server at ``hostname:port`` does not answer.
        StoreAuthError: If the server refuses the credentials.
    """

    factory_class = RedisFactory

    def __init__(
        self,
        name: str,
        *,
        hostname: str,
        port: int,
        cache_size: int = 16,
        chunk_size: int = _DEFAULT_CHUNK_SIZE,
        **redis_kwargs: Any,
    ) -> None:
        super().__init__(name, cache_size=cache_size)
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"RedisStore port must be an int, got {type(port).__name__}")
        if not 0 < chunk_size <= _REDIS_BULK_LIMIT - _HEADER.size:
            raise ValueError(
                f"chunk_size must be in (0, {_REDIS_BULK_LIMIT - _HEADER.size}], got {chunk_size}"
            )
        self.hostname = hostname
        self.port = port
        self.chunk_size = chunk_size
        self._redis_kwargs = dict(redis_kwargs)
        self._client_lock = threading.Lock()
        self._client_pid = -1
        self._client_obj: redis.Redis[bytes] | None = None
        with self._translate():
            self._client().ping()

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return f"{self.hostname}:{self.port}"

    def factory_kwargs(self) -> dict[str, Any]:
        """Return the constructor arguments (connection settings included)."""
        return {
            "hostname": self.hostname,
            "port": self.port,
            "chunk_size": self.chunk_size,
            **self._redis_kwargs,
            **super().factory_kwargs(),
        }

    def _client(self) -> redis.Redis[bytes]:
        pid = os.getpid()
        if self._client_pid != pid:
            with self._client_lock:
                if self._client_pid != pid:
                    kwargs = {**_DEFAULT_TIMEOUTS, **self._redis_kwargs}
                    self._client_obj = redis.Redis(host=self.hostname, port=self.port, **kwargs)
                    self._client_pid = pid
        assert self._client_obj is not None
        return self._client_obj

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise StoreAuthError(
                f"Redis at {self.address} refused the credentials of RedisStore "
                f"{self.name!r}: {exc}. Check the password/username passed to the store.",
                store_name=self.name,
                store_type="RedisStore",
            ) from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreConnectionError(
                f"RedisStore {self.name!r} cannot reach the Redis server at {self.address}: "
                f"{exc}. Is redis-server running there, and is the host:port right?",
                address=self.address,
                store_name=self.name,
                store_type="RedisStore",
            ) from exc
        except redis.exceptions.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise StoreAuthError(
                    f"Redis at {self.address} needs credentials for RedisStore "
                    f"{self.name!r}: {exc}",
                    store_name=self.name,
                    store_type="RedisStore",
                ) from exc
            raise StoreError(
                f"Redis at {self.address} rejected a command of RedisStore {self.name!r}: {exc}",
                store_name=self.name,
                store_type="RedisStore",
            ) from exc

    # -- byte-level backend -------------------------------------------------------------------

    def set_parts(self, key: str, parts: Sequence[Buffer]) -> None:
        """Write the serialized pieces under ``key`` in one transaction (chunked if large)."""
        views = [memoryview(part).cast("B") for part in parts]
        size = sum(view.nbytes for view in views)
        now = time.time()
        chunks_key = key + _CHUNKS_SUFFIX
        with self._translate():
            pipe = self._client().pipeline(transaction=True)
            if size <= self.chunk_size:
                pipe.set(key, b"".join([_HEADER.pack(_MAGIC, now, size, 0), *views]))
                pipe.unlink(chunks_key)
            else:
                data = views[0] if len(views) == 1 else memoryview(b"".join(views))
                count = (size + self.chunk_size - 1) // self.chunk_size
                pipe.unlink(chunks_key)
                for start in range(0, size, self.chunk_size):
                    pipe.rpush(chunks_key, data[start : start + self.chunk_size])  # type: ignore[arg-type]
                pipe.set(key, _HEADER.pack(_MAGIC, now, size, count))
            pipe.execute()

    def set_bytes(self, key: str, data: Buffer) -> None:
        """Store ``data`` under ``key``."""
        self.set_parts(key, [data])

    def _parse(self, key: str, value: bytes) -> tuple[float, int, int]:
        if len(value) < _HEADER.size:
            raise StoreError(
                f"Redis key {key!r} at {self.address} does not hold a ProxyStore value "
                "(written by another program?)",
                store_name=self.name,
                store_type="RedisStore",
            )
        magic, timestamp, size, count = _HEADER.unpack_from(value)
        if magic != _MAGIC:
            raise StoreError(
                f"Redis key {key!r} at {self.address} does not hold a ProxyStore value "
                "(written by another program?)",
                store_name=self.name,
                store_type="RedisStore",
            )
        return timestamp, size, count

    def get_bytes_with_timestamp(self, key: str) -> tuple[Buffer, float] | None:
        """Fetch ``key``'s payload and write time (chunked values in one transaction)."""
        client = self._client()
        with self._translate():
            value = client.get(key)
            if value is None:
                return None
            timestamp, size, count = self._parse(key, value)
            if count == 0:
                return memoryview(value)[_HEADER.size :], timestamp
            chunks_key = key + _CHUNKS_SUFFIX
            for _ in range(_RETRIES):
                pipe = client.pipeline(transaction=True)
                pipe.get(key)
                pipe.lrange(chunks_key, 0, -1)
                value, chunks = pipe.execute()
                if value is None:
                    return None
                timestamp, size, count = self._parse(key, value)
                if count == 0:  # overwritten by a small value meanwhile
                    return memoryview(value)[_HEADER.size :], timestamp
                if len(chunks) == count and sum(map(len, chunks)) == size:
                    data = bytearray(size)
                    offset = 0
                    while chunks:
                        chunk = chunks.pop(0)
                        data[offset : offset + len(chunk)] = chunk
                        offset += len(chunk)
                    return data, timestamp
        raise StoreError(
            f"RedisStore {self.name!r}: the chunks of key {key!r} at {self.address} are "
            "inconsistent with its header (the value was damaged or written by another program)",
            store_name=self.name,
            store_type="RedisStore",
        )

    def get_bytes(self, key: str) -> Buffer | None:
        """Return the payload stored under ``key``, or ``None``."""
        fetched = self.get_bytes_with_timestamp(key)
        return None if fetched is None else fetched[0]

    def get_timestamp(self, key: str) -> float:
        """Return the write time of ``key`` (reads only the header).

        Raises:
            KeyError: If the key is missing.
        """
        with self._translate():
            value = self._client().getrange(key, 0, _HEADER.size - 1)  # type: ignore[no-untyped-call]
        if not value:
            raise KeyError(key)
        return self._parse(key, value)[0]

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is in Redis."""
        with self._translate():
            return bool(self._client().exists(key))

    def evict(self, key: str) -> None:
        """Delete ``key`` and its chunks (a missing key is not an error)."""
        with self._translate():
            self._client().unlink(key, key + _CHUNKS_SUFFIX)

    def cleanup(self) -> None:
        """Close this process's connections (objects in Redis are left alone)."""
        self.cache.clear()
        with self._client_lock:
            if self._client_obj is not None and self._client_pid == os.getpid():
                self._client_obj.close()
            self._client_obj = None
            self._client_pid = -1

    def __repr__(self) -> str:
        return f"RedisStore(name={self.name!r}, hostname={self.hostname!r}, port={self.port})"
