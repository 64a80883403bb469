"""The errors of the store's Redis clients: this project's, made once, where a failure is seen.

:class:`Where` knows what every message names: the store, the host that made the call
(``socket.gethostname()``), the key when there is one, the server's address, and the
timeout. Its methods build the error of each kind of failure; the wire client raises them
where it sees the failure, and the redis-py client's translation (``proxystore.store.redis
._errors``) builds the same errors from redis-py's exceptions, so both clients raise one family
of errors and nothing translates a second time. Two situations get a sentence of their own:

* a *stall*: a socket timeout in the middle of a value says how many of its bytes arrived;
* a *loopback address used on another host*: a store created with ``localhost`` or
  ``127.0.0.1`` on host A and used on host B reaches B's own machine, not A's server.

Messages never contain a password: error replies and socket errors do not carry one, and the
settings are never formatted into a message.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from proxystore.exceptions import (
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
)
from proxystore.hosts import is_loopback

__all__ = ["MalformedReply", "Overflow", "Redirect", "Where", "WrongType", "loopback_hint"]


class MalformedReply(StoreError):
    """The server sent something that is not a valid reply (or not one the command can have).

    The connection is then out of step with the server and must be closed (the pool does).

    Attributes:
        address: The server's address.
    """

    def __init__(self, message: str, *, address: str, **names: Any) -> None:
        super().__init__(message, **names)
        self.address = address


class Overflow(MalformedReply):
    """A bulk string longer than the room its reader has for it (see ``read_bulk_into``)."""


class WrongType(StoreError):
    """The key holds another kind of Redis value (a list where a string belongs)."""


class Redirect(StoreError):
    """A Redis Cluster node sent the command elsewhere, or asked to try it again.

    ``-MOVED slot host:port`` (the slot lives there now), ``-ASK slot host:port`` (this once,
    during a migration), ``-TRYAGAIN`` and ``-CLUSTERDOWN``. Only a cluster client sees
    these; it follows them (a single server never sends them).

    Attributes:
        kind: ``"MOVED"``, ``"ASK"``, ``"TRYAGAIN"`` or ``"CLUSTERDOWN"``.
        slot: The slot (``-1`` when the reply names none).
        target: ``host:port`` of the node to ask (``""`` when the reply names none).
    """

    def __init__(self, message: str, *, kind: str, slot: int, target: str, **names: Any) -> None:
        super().__init__(message, **names)
        self.kind = kind
        self.slot = slot
        self.target = target


_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


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


def _reason(text: str) -> str:
    return text.rstrip(".")


@dataclass(frozen=True)
class Where:
    """Who calls which server: what the errors of one backend's connections name.

    Attributes:
        address: ``host:port`` or ``unix:/path`` of the server.
        host: The server's host (for the loopback sentence; ``""`` for a unix socket).
        store: How messages name the caller (``"RedisStore 'name'"``).
        store_name: Name of the store (recorded on the errors).
        store_type: Class name of the store (recorded on the errors).
        created_on: Host name of the process that created the store.
        timeout: The socket timeout in seconds (``None``: no limit).
        db: The database number.
    """

    address: str
    host: str = ""
    store: str = "a Redis client"
    store_name: str | None = None
    store_type: str | None = None
    created_on: str | None = None
    timeout: float | None = None
    db: int = 0

    def _who(self, key: str | None) -> str:
        who = f"{self.store} on host {socket.gethostname()}"
        return who + (f" (key {key!r})" if key is not None else "")

    def _names(self) -> dict[str, Any]:
        return {"store_name": self.store_name, "store_type": self.store_type}

    def hint(self) -> str:
        """The loopback sentence (with a leading space), or ``""``."""
        return loopback_hint(self.host, self.created_on)

    def auth(self, reason: str, key: str | None = None) -> StoreAuthError:
        """The server refused the credentials."""
        return StoreAuthError(
            f"Redis at {self.address} refused the credentials of {self._who(key)}: "
            f"{_reason(reason)}. Check the password/username passed to the store.",
            **self._names(),
        )

    def stalled(self, received: int, expected: int, key: str | None = None) -> StoreTimeoutError:
        """Nothing arrived for the socket timeout, in the middle of a value."""
        return StoreTimeoutError(
            f"{self._who(key)}: the transfer from Redis at {self.address} stalled after "
            f"{received} of {expected} bytes: nothing arrived for socket_timeout="
            f"{self.timeout} s. The server may be overloaded or stopped, or the network "
            "between them down.",
            **self._names(),
        )

    def timed_out(self, reason: str, key: str | None = None) -> StoreTimeoutError:
        """The server did not answer (or accept the connection) in time."""
        return StoreTimeoutError(
            f"{self._who(key)}: Redis at {self.address} did not answer within its timeout "
            f"(socket_timeout={self.timeout} s): {_reason(reason)}. The server may be "
            f"overloaded or stopped.{self.hint()}",
            **self._names(),
        )

    def unreachable(self, reason: str, key: str | None = None) -> StoreConnectionError:
        """The server cannot be reached (refused, closed, TLS failed, too many clients)."""
        question = (
            "?" if "TLS" in reason else ". Is redis-server running there, and is the address right?"
        )
        return StoreConnectionError(
            f"{self._who(key)} cannot reach the Redis server at {self.address}: "
            f"{_reason(reason)}{question}{self.hint()}",
            address=self.address,
            **self._names(),
        )

    def malformed(self, problem: str, key: str | None = None) -> MalformedReply:
        """The server sent something that is not a reply the command can have."""
        return MalformedReply(
            f"{self._who(key)} got a malformed reply from Redis at {self.address}: {problem}. "
            "Is that a Redis server (and the right port), or is something between them "
            "altering the traffic? The connection was closed.",
            address=self.address,
            **self._names(),
        )

    def overflow(self, problem: str, key: str | None = None) -> Overflow:
        """A bulk string longer than the room its reader has for it."""
        return Overflow(
            f"{self._who(key)} got a malformed reply from Redis at {self.address}: {problem}",
            address=self.address,
            **self._names(),
        )

    def reply_error(self, message: str, key: str | None = None) -> StoreError:
        """The error of an error reply (``-ERR ...``), by its code (as redis-py maps them)."""
        code = message.split(" ", 1)[0]
        if code in _REDIRECTS:
            return self.redirect(code, message, key)
        lowered = message.lower()
        if code in ("WRONGPASS", "NOAUTH") or (
            code == "ERR"
            and (
                "invalid password" in lowered or "called without any password configured" in lowered
            )
        ):
            return self.auth(message, key)
        if code == "ERR" and "max number of clients reached" in lowered:
            return self.unreachable(message, key)
        return self.rejected(message, key)

    def redirect(self, code: str, message: str, key: str | None = None) -> Redirect:
        """The redirection (or retry request) of a Redis Cluster node."""
        fields = message.split()
        slot, target = -1, ""
        if code in ("MOVED", "ASK") and len(fields) == 3 and fields[1].isdigit():
            slot, target = int(fields[1]), fields[2]
        return Redirect(
            f"Redis Cluster node {self.address} answered {message!r} to {self._who(key)}",
            kind=code,
            slot=slot,
            target=target,
            **self._names(),
        )

    def rejected(self, message: str, key: str | None = None) -> StoreError:
        """The server refused a command (not for the credentials)."""
        who = self._who(key)
        names = self._names()
        if "DB index is out of range" in message:
            return StoreError(
                f"Redis at {self.address} has no database db={self.db} "
                f"({message.rstrip('.')}), asked for by {who}: a server has the databases "
                "0..N-1 of its 'databases' setting (16 by default). Choose a database in range.",
                **names,
            )
        if message.startswith("WRONGTYPE"):
            return WrongType(
                f"{who}: the key (or its chunk list) at {self.address} holds another kind of "
                "Redis value (a list, hash or set where a string belongs), so it is not a "
                f"ProxyStore value: written by another program? Use another key. ({message})",
                **names,
            )
        if message.startswith("OOM") or "command not allowed when used memory" in message:
            return StoreError(
                f"Redis at {self.address} is out of memory and refused a write of {who}: "
                f"{message.rstrip('.')}. Raise its maxmemory, choose an eviction policy "
                "(maxmemory-policy), or evict objects you no longer need.",
                **names,
            )
        return StoreError(
            f"Redis at {self.address} rejected a command of {who}: {message}", **names
        )
