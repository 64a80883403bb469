"""The translation of redis-py errors (raised by either Redis client) into ProxyStore errors.

Every message names the store, the host that made the call (``socket.gethostname()``), the
key when there is one, and the address tried. Two situations get a sentence of their own:

* a *stall*: a socket timeout in the middle of a value says how many of its bytes arrived;
* a *loopback address used on another host*: a store created with ``localhost`` or
  ``127.0.0.1`` on host A and used on host B reaches B's own machine, not A's server.

Messages never contain a password: error replies and socket errors do not carry one, and the
settings are never formatted into a message.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import redis

from proxystore.exceptions import (
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
)
from proxystore.hosts import is_loopback
from proxystore.store.redis._wire.connection import Stalled

__all__ = ["is_loopback", "loopback_hint", "translate"]


def loopback_hint(host: str, created_on: str | None) -> str:
    """The sentence for a loopback ``host`` used away from ``created_on`` ('' if moot)."""
    here = socket.gethostname()
    if not created_on or created_on == here or not is_loopback(host):
        return ""
    return (
        f" The store was created on host {created_on} with the loopback address {host}, "
        f"which on this host ({here}) means {here} itself, not {created_on}: create the store "
        "with an address of the Redis server that other hosts can reach (a host name or a "
        "network address)."
    )


def _reason(exc: BaseException) -> str:
    return str(exc).rstrip(".") or type(exc).__name__


@contextlib.contextmanager
def translate(backend: Any, key: str | None = None) -> Iterator[None]:
    """Translate redis-py errors raised inside the block into ProxyStore errors.

    Args:
        backend: The :class:`~proxystore.store.redis.backend.RedisBackend` (its ``where``,
            ``address``, ``host``, ``created_on``, ``timeout``, store name and type).
        key: The key of the operation, if any.
    """
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise _translated(backend, key, exc) from exc


def _translated(backend: Any, key: str | None, exc: redis.exceptions.RedisError) -> StoreError:
    here = socket.gethostname()
    who = f"{backend.where} on host {here}" + (f" (key {key!r})" if key is not None else "")
    address = backend.address
    names = {"store_name": backend.store_name, "store_type": backend.store_type}
    hint = loopback_hint(backend.host, backend.created_on)
    if isinstance(exc, redis.exceptions.AuthenticationError) or (
        isinstance(exc, redis.exceptions.ResponseError)
        and ("NOAUTH" in str(exc) or "WRONGPASS" in str(exc))
    ):
        return StoreAuthError(
            f"Redis at {address} refused the credentials of {who}: {_reason(exc)}. Check the "
            "password/username passed to the store.",
            **names,
        )
    if isinstance(exc, Stalled):
        return StoreTimeoutError(
            f"{who}: the transfer from Redis at {address} stalled after {exc.received} of "
            f"{exc.expected} bytes: nothing arrived for socket_timeout={backend.timeout} s. "
            "The server may be overloaded or stopped, or the network between them down.",
            **names,
        )
    if isinstance(exc, redis.exceptions.TimeoutError):
        return StoreTimeoutError(
            f"{who}: Redis at {address} did not answer within its timeout "
            f"(socket_timeout={backend.timeout} s): {_reason(exc)}. The server may be "
            f"overloaded or stopped.{hint}",
            **names,
        )
    if isinstance(exc, redis.exceptions.ConnectionError):
        question = "?" if "TLS" in str(exc) else ". Is redis-server running there, and is "
        question += "" if "TLS" in str(exc) else "the address right?"
        return StoreConnectionError(
            f"{who} cannot reach the Redis server at {address}: {_reason(exc)}{question}{hint}",
            address=address,
            **names,
        )
    if isinstance(exc, redis.exceptions.InvalidResponse):
        reason = str(exc).replace(f"malformed reply from {address}: ", "")
        return StoreError(
            f"{who} got a malformed reply from Redis at {address}: {reason}. Is that a Redis "
            "server (and the right port), or is something between them altering the traffic? "
            "The connection was closed.",
            **names,
        )
    if isinstance(exc, redis.exceptions.ResponseError):
        # redis-py's pipelines prefix the command, arguments (values) included: drop them.
        message = str(exc).rpartition("caused error: ")[2]
        if "DB index is out of range" in message:
            return StoreError(
                f"Redis at {address} has no database db={getattr(backend, 'db', '?')} "
                f"({message.rstrip('.')}), asked for by {who}: a server has the databases "
                "0..N-1 of its 'databases' setting (16 by default). Choose a database in range.",
                **names,
            )
        if message.startswith("WRONGTYPE"):
            return StoreError(
                f"{who}: the key (or its chunk list) at {address} holds another kind of Redis "
                "value (a list, hash or set where a string belongs), so it is not a ProxyStore "
                "value: written by another program? Use another key.",
                **names,
            )
        if message.startswith("OOM") or "command not allowed when used memory" in message:
            return StoreError(
                f"Redis at {address} is out of memory and refused a write of {who}: "
                f"{message.rstrip('.')}. Raise its maxmemory, choose an eviction policy "
                "(maxmemory-policy), or evict objects you no longer need.",
                **names,
            )
        return StoreError(f"Redis at {address} rejected a command of {who}: {message}", **names)
    return StoreError(f"{who} got an unexpected reply from Redis at {address}: {exc}", **names)
