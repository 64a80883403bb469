"""``RedisStore``: objects kept in a Redis server.

A :class:`~proxystore.store.base.Store` over a
:class:`~proxystore.store.backends.redis.RedisBackend` (see there for the value layout, the
two clients and the error translation).

Connection settings (``password``, ``username``, ``db``, ``ssl``, timeouts, ...) travel with
proxies so workers can connect, but never appear in a ``repr`` or a log line.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from proxystore.store.backends.redis import (
    DEFAULT_CHUNK_SIZE,
    WIRE_OPTIONS,
    RedisBackend,
    uses_wire,
)
from proxystore.store.base import Store, StoreFactory
from proxystore.store.codec import Codec
from proxystore.store.host_tier import host_tier
from proxystore.store.layers.signing import SigningLayer

__all__ = ["WIRE_OPTIONS", "RedisFactory", "RedisStore", "uses_wire"]

T = TypeVar("T")


class RedisFactory(StoreFactory[T]):
    """Factory of :class:`RedisStore` proxies.

    Carries the key and the store's description (host, port, connection settings); in a
    process without the store it re-creates one. :meth:`resolve_async` fetches the object in
    a background thread and the first use of the proxy waits on that future.
    """


class RedisStore(Store):
    """A store backed by a Redis server.

    Args:
        name: Name of the store.
        hostname: Redis server host.
        port: Redis server port.
        cache_size: Size of the per-process LRU cache of deserialized objects (``0``: off).
        chunk_size: Largest payload written as one Redis value; larger ones are split.
        signing_key: Secret bytes: sign every object (HMAC-SHA256) and verify it before it is
            deserialized (:class:`~proxystore.store.layers.signing.SigningLayer`). Travels with
            proxies like the password.
        host_cache: A directory on a memory file system (``/dev/shm/proxystore``) shared by
            the processes of this host: each object is fetched once per host into it and
            mapped from there by every process (see :mod:`proxystore.store.host_tier`).
        host_cache_bytes: Bound of the host cache (default: half of its file system).
        readonly: With ``host_cache``, read-only arrays shared by the whole host instead of
            copy-on-write ones.
        redis_kwargs: Connection settings (``password``, ``username``, ``db``, ``ssl``,
            ``socket_timeout``, ...), as for :class:`redis.Redis`. Connect and socket
            timeouts default to 5 s and 60 s so that no call waits forever. Settings outside
            :data:`WIRE_OPTIONS` (TLS, unix sockets, ...) make the store use redis-py.

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
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        signing_key: bytes | None = None,
        host_cache: str | os.PathLike[str] | None = None,
        host_cache_bytes: int | None = None,
        readonly: bool = False,
        **redis_kwargs: Any,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"RedisStore port must be an int, got {type(port).__name__}")
        backend = RedisBackend(
            hostname,
            port,
            chunk_size=chunk_size,
            options=redis_kwargs,
            store_name=name,
            store_type="RedisStore",
        )
        layered, codec, tier_kwargs = host_tier(
            backend,
            host_cache=host_cache,
            host_cache_bytes=host_cache_bytes,
            readonly=readonly,
            store_name=name,
            store_type="RedisStore",
            location=backend.address,
        )
        kwargs = {
            "hostname": hostname,
            "port": port,
            "chunk_size": chunk_size,
            **redis_kwargs,
            "cache_size": cache_size,
            **tier_kwargs,
        }
        if signing_key is not None:  # outermost: every process verifies what it unpickles
            layered = SigningLayer(layered, signing_key, store_name=name, store_type="RedisStore")
            kwargs["signing_key"] = bytes(signing_key)
        super().__init__(
            name, layered, cache_size=cache_size, codec=codec or Codec(), kwargs=kwargs
        )
        self.hostname = hostname
        self.port = port
        self.chunk_size = chunk_size
        self._redis = backend
        backend.ping()

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return self._redis.address

    def _client(self) -> Any:
        """The client this store uses in this process (for tests and debugging)."""
        return self._redis.client

    def __repr__(self) -> str:
        return f"RedisStore(name={self.name!r}, hostname={self.hostname!r}, port={self.port})"
