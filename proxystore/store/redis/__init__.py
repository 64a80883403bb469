"""The Redis store: objects kept in a Redis server.

The whole of the Redis backend, in one package:

* :mod:`~proxystore.store.redis.store`: :class:`RedisStore` and its factory,
  :class:`RedisFactory`;
* :mod:`~proxystore.store.redis.settings`: :class:`RedisSettings`, the store's arguments
  validated once (``url=`` parsing, TLS keywords, timeouts), which build its backend and
  layers and are its description;
* :mod:`~proxystore.store.redis.backend`: :class:`RedisBackend`, the value layout and chunking;
* :class:`RedisClusterBackend` (private package ``_cluster``): the store on a Redis Cluster
  (``cluster=True``): slot map, redirections, one pool per node, large values striped over
  the masters;
* private: the two clients (the store's own RESP client in ``_wire``, and redis-py for
  settings it does not do), the translation of redis-py's errors (that client only) and the
  listing of keys used by the command-line tool (:func:`scan_keys`).
"""

from __future__ import annotations

from proxystore.store.redis._cluster.backend import RedisClusterBackend
from proxystore.store.redis._scan import scan_keys
from proxystore.store.redis.backend import (
    DEFAULT_CHUNK_SIZE,
    WIRE_OPTIONS,
    RedisBackend,
    uses_wire,
)
from proxystore.store.redis.settings import MAX_TTL, RedisSettings, parse_url
from proxystore.store.redis.store import RedisFactory, RedisStore

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_TTL",
    "WIRE_OPTIONS",
    "RedisBackend",
    "RedisClusterBackend",
    "RedisFactory",
    "RedisSettings",
    "RedisStore",
    "parse_url",
    "scan_keys",
    "uses_wire",
]
