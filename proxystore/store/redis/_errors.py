"""The translation of redis-py's errors into this project's (the redis-py client's only).

The store's own client raises this project's errors where it sees a failure; the redis-py
client (for settings the own client does not do) translates redis-py's exceptions here, once,
into the same errors, built by the same
:class:`~proxystore.store.redis._wire.errors.Where` (the store, the host that made the call,
the key, the server's address). Messages never contain a password: redis-py's error replies
and socket errors do not carry one.
"""

from __future__ import annotations

import redis

from proxystore.exceptions import StoreError
from proxystore.store.redis._wire.errors import Where

__all__ = ["translated"]


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def translated(where: Where, key: str | None, exc: redis.exceptions.RedisError) -> StoreError:
    """The error of this project that says what redis-py's ``exc`` means."""
    if isinstance(exc, redis.exceptions.AuthenticationError) or (
        isinstance(exc, redis.exceptions.ResponseError)
        and ("NOAUTH" in str(exc) or "WRONGPASS" in str(exc))
    ):
        return where.auth(_reason(exc), key)
    if isinstance(exc, redis.exceptions.TimeoutError):
        return where.timed_out(_reason(exc), key)
    if isinstance(exc, redis.exceptions.ConnectionError):
        return where.unreachable(_reason(exc), key)
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return where.malformed(_reason(exc), key)
    if isinstance(exc, redis.exceptions.ResponseError):
        # redis-py's pipelines prefix the command, arguments (values) included: drop them.
        return where.rejected(str(exc).rpartition("caused error: ")[2], key)
    return where.rejected(f"an unexpected reply ({_reason(exc)})", key)
