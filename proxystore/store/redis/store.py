"""``RedisStore``: objects kept in a Redis server.

A :class:`~proxystore.store.base.Store` over a
:class:`~proxystore.store.redis.backend.RedisBackend` (see there for the value layout and the
two clients), built from :class:`~proxystore.store.redis.settings.RedisSettings` (which
validate the arguments once and are the store's description).

The server is named by ``hostname``/``port``, by ``unix_socket_path``, or by ``url=``
(``redis://``, ``rediss://``, ``unix://``, as redis-py's ``from_url``); TLS takes redis-py's
``ssl_*`` keywords and runs on the fast client. Connection settings travel with proxies so
workers can connect; passwords travel as :class:`~proxystore.secret.Secret`, so they never
appear in a ``repr``, a log line, an error message or a traceback's captured locals.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any, TypeVar

from proxystore.exceptions import ProxyResolveMissingKey
from proxystore.proxy import Proxy
from proxystore.secret import Secret
from proxystore.store.base import Store, StoreFactory
from proxystore.store.layers.base import innermost
from proxystore.store.redis._cluster.backend import RedisClusterBackend
from proxystore.store.redis.backend import DEFAULT_CHUNK_SIZE, RedisBackend
from proxystore.store.redis.settings import RedisSettings
from proxystore.store.settings import LayerSettings
from proxystore.store.store_factory import MISSING, ResolvingStore

__all__ = ["RedisFactory", "RedisStore"]

T = TypeVar("T")


class RedisFactory(StoreFactory[T]):
    """Factory of :class:`RedisStore` proxies.

    Carries the key and the store's description (host, port, connection settings); in a
    process without the store it re-creates one. :meth:`resolve_async` fetches the object in
    a background thread and the first use of the proxy waits on that future. A missing key's
    error says which host looked where (and whether a loopback address was the cause).
    """

    def _finish(self, store: ResolvingStore, obj: Any) -> T:
        if obj is MISSING and isinstance(store, RedisStore):
            hint = store._redis.loopback_hint()
            if hint:
                raise ProxyResolveMissingKey(
                    self.key,
                    type(store).__name__,
                    store.name,
                    socket.gethostname(),
                    store.address,
                    hint,
                )
        return super()._finish(store, obj)


class RedisStore(Store):
    """A store backed by a Redis server.

    Args:
        name: Name of the store.
        hostname: Redis server host (or give ``url`` or ``unix_socket_path``).
        port: Redis server port.
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
            ``unix:///path/to/socket[?db=N]``. Keywords given explicitly win over the URL.
        ttl: Seconds after which every key an object uses expires (``None``: never).
        cache_size: Size of the per-process LRU cache of deserialized objects (``0``: off).
        chunk_size: Largest payload written as one Redis value; larger ones are split.
        signing_key: Secret bytes: sign every object (HMAC-SHA256) and verify it before it is
            deserialized (:class:`~proxystore.store.layers.signing.SigningLayer`). Travels with
            proxies like the password.
        created_on: Host name of the creating process (recorded automatically; error
            messages use it to explain a loopback address used on another host).
        host_cache: A directory on a memory file system (``/dev/shm/proxystore``) shared by
            the processes of this host: each object is fetched once per host into it and
            mapped from there by every process (see :mod:`proxystore.store.layers.compose`).
        host_cache_bytes: Bound of the host cache (default: half of its file system).
        host_cache_wait: Seconds a resolver waits for another process of the host that is
            fetching the same key, before fetching it itself (default: ``socket_timeout``).
        readonly: With ``host_cache``, read-only arrays shared by the whole host instead of
            copy-on-write ones.
        cluster: ``hostname``/``port`` (or ``url``) name a node of a Redis Cluster: the store
            learns the slot map from it, sends each key to its master (following ``MOVED``
            and ``ASK``), and stripes values larger than 1 MiB (or ``chunk_size``) over every
            master, so one object's transfer uses every shard's link (see
            :doc:`/cluster`). Runs on the store's own client only (no redis-py options,
            database 0, no unix socket).
        redis_kwargs: Connection settings, as for :class:`redis.Redis`: ``password``,
            ``username`` (ACL user), ``db``, ``ssl`` and ``ssl_*``, ``unix_socket_path``,
            ``socket_timeout``, ``socket_connect_timeout``, ... Connect and socket timeouts
            default to 5 s and 60 s so that no call waits forever. Settings outside
            :data:`~proxystore.store.redis.backend.WIRE_OPTIONS` make the store use
            redis-py.

    Keys are ``str`` and must not end in ``:ps-chunks`` (the store keeps a large object's
    chunks under ``<key>:ps-chunks``): any other key is an
    :class:`~proxystore.exceptions.InvalidKeyError` at the call that passes it (``set``,
    ``get``, ``exists``, ``evict``, ``proxy(key=...)``, ...), before the host tier or signing
    see it.

    Raises:
        ValueError: If no server is named, the URL is malformed, ``ttl`` is not a finite
            number of seconds in ``(0, 10**12]``, a numeric setting (``chunk_size``, ``port``,
            ``db``, ``socket_timeout``, ``socket_connect_timeout``, ``max_connections``) is not
            finite or out of range, or an ``ssl_*`` keyword is unknown. Each message names the
            setting and the store.
        TypeError: If a numeric setting is not a number (``ttl`` excepted: ``ValueError``).
        StoreConnectionError: If the server does not answer.
        StoreTimeoutError: If it does not answer in time.
        StoreAuthError: If the server refuses the credentials.
    """

    factory_class = RedisFactory

    def __init__(
        self,
        name: str,
        *,
        hostname: str | None = None,
        port: int | None = None,
        url: str | None = None,
        ttl: float | None = None,
        cache_size: int = 16,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        signing_key: bytes | None = None,
        created_on: str | None = None,
        host_cache: str | os.PathLike[str] | None = None,
        host_cache_bytes: int | None = None,
        host_cache_wait: float | None = None,
        readonly: bool = False,
        cluster: bool = False,
        **redis_kwargs: Any,
    ) -> None:
        # A traceback's locals would show the URL, which may hold the password.
        given_url = Secret(url) if isinstance(url, str) else url
        del url
        settings = RedisSettings(
            name,
            hostname=hostname,
            port=port,
            url=given_url,
            ttl=ttl,
            cache_size=cache_size,
            chunk_size=chunk_size,
            created_on=created_on,
            layers=LayerSettings(
                host_cache=host_cache,
                host_cache_bytes=host_cache_bytes,
                host_cache_wait=host_cache_wait,
                readonly=readonly,
                signing_key=signing_key,
            ),
            redis_kwargs=redis_kwargs,
            cluster=cluster,
        )
        layered, codec = settings.build()
        backend = innermost(layered)
        assert isinstance(backend, (RedisBackend, RedisClusterBackend))
        super().__init__(name, layered, cache_size=cache_size, codec=codec, settings=settings)
        self.hostname = settings.hostname or ""
        self.port = settings.port or 0
        self.chunk_size = settings.chunk_size
        self.ttl = settings.ttl
        self._redis = backend
        backend.ping()

    # -- every call that takes a key checks it first (before the host tier or signing) ----------

    def _check(self, key: object) -> str:
        return self._redis.check_key(key)

    def set(self, obj: Any, *, key: str | None = None, serialize: bool = True) -> str:
        """See :meth:`Store.set <proxystore.store.base.Store.set>` (``key`` is checked first)."""
        return super().set(obj, key=None if key is None else self._check(key), serialize=serialize)

    def set_batch(
        self,
        objs: Sequence[Any],
        *,
        keys: Sequence[str | None] | None = None,
        serialize: bool = True,
    ) -> list[str]:
        """See :meth:`Store.set_batch <proxystore.store.base.Store.set_batch>` (keys checked)."""
        for key in keys or ():
            if key is not None:
                self._check(key)
        return super().set_batch(objs, keys=keys, serialize=serialize)

    def get(
        self,
        key: str,
        *,
        deserialize: bool = True,
        strict: bool = False,
        default: Any = None,
    ) -> Any:
        """See :meth:`Store.get <proxystore.store.base.Store.get>` (``key`` is checked first)."""
        return super().get(
            self._check(key), deserialize=deserialize, strict=strict, default=default
        )

    def prefetch(self, key: str, *, strict: bool = False) -> Any:
        """See :meth:`Store.prefetch` (``key`` is checked first)."""
        return super().prefetch(self._check(key), strict=strict)

    def get_timestamp(self, key: str) -> float:
        """See :meth:`Store.get_timestamp` (``key`` is checked first)."""
        return super().get_timestamp(self._check(key))

    def exists(self, key: str) -> bool:
        """See :meth:`Store.exists` (``key`` is checked first)."""
        return super().exists(self._check(key))

    def is_cached(self, key: str, *, strict: bool = False) -> bool:
        """See :meth:`Store.is_cached` (``key`` is checked first)."""
        return super().is_cached(self._check(key), strict=strict)

    def evict(self, key: str) -> None:
        """See :meth:`Store.evict` (``key`` is checked first)."""
        super().evict(self._check(key))

    def proxy(self, obj: Any = None, *, key: str | None = None, **kwargs: Any) -> Proxy:
        """See :meth:`Store.proxy <proxystore.store.base.Store.proxy>` (``key`` checked first).

        Raises:
            InvalidKeyError: If ``key`` is not a key this store can hold.
        """
        return super().proxy(obj, key=None if key is None else self._check(key), **kwargs)

    def proxy_batch(
        self, objs: Sequence[Any] | None = None, *, keys: Sequence[str] | None = None, **kwargs: Any
    ) -> list[Proxy]:
        """See :meth:`Store.proxy_batch <proxystore.store.base.Store.proxy_batch>` (keys checked).

        Raises:
            InvalidKeyError: If a key is not a key this store can hold.
        """
        for key in keys or ():
            self._check(key)
        return super().proxy_batch(objs, keys=keys, **kwargs)

    @property
    def address(self) -> str:
        """``host:port`` (or ``unix:/path``) of the server."""
        return self._redis.address

    @property
    def cluster(self) -> bool:
        """Whether the store is on a Redis Cluster."""
        return isinstance(self._redis, RedisClusterBackend)

    def _client(self) -> Any:
        """The client this store uses in this process (for tests and debugging)."""
        return self._redis.client

    def __repr__(self) -> str:
        if self._redis.address.startswith("unix:"):
            return f"RedisStore(name={self.name!r}, address={self.address!r})"
        return f"RedisStore(name={self.name!r}, hostname={self.hostname!r}, port={self.port})"


# The public names are the package's (``proxystore.store.redis.RedisStore``, the registry's
# ``STORES`` path): descriptions and pickles carry that path, not this module's.
RedisStore.__module__ = RedisFactory.__module__ = "proxystore.store.redis"
