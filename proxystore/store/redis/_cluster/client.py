"""``ClusterClient``: the store's own RESP client over a Redis Cluster (private).

It learns the slot map from any node (``CLUSTER SLOTS``), keeps one
:class:`~proxystore.store.redis._wire.pool.ConnectionPool` per node (TLS and ACL users as on
one server: every pool has the same settings), and sends each command to the master of its
key's slot:

* ``-MOVED slot host:port``: the slot lives elsewhere now (resharding, a failover): the
  command goes there, and the slot map is read again;
* ``-ASK slot host:port``: during a slot migration, this one command goes there, after
  ``ASKING``;
* ``-TRYAGAIN`` / ``-CLUSTERDOWN``: asked again after a short pause, until the socket timeout;
* a node that cannot be reached: the slot map is read again from the other nodes; if another
  node (a promoted replica) serves the slot now, the command goes there, otherwise the error
  names the node, the slot and the key.

Every wait is bounded: redirections by :data:`MAX_REDIRECTS`, pauses by the socket timeout,
each connection by its timeouts.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

from proxystore.exceptions import StoreConnectionError, StoreError, StoreTimeoutError
from proxystore.store.redis._cluster.slots import key_slot
from proxystore.store.redis._cluster.topology import (
    SlotMap,
    address_of,
    parse_slots,
    split_address,
)
from proxystore.store.redis._wire.connection import Argument, Connection, Reply, ssl_context
from proxystore.store.redis._wire.errors import Redirect, Where
from proxystore.store.redis._wire.pool import ConnectionPool

__all__ = ["MAX_REDIRECTS", "ClusterClient", "NodeDown"]

MAX_REDIRECTS = 16
"""Most redirections (``MOVED``, ``ASK``, retries) one command follows."""

_PAUSE = 0.05  # first pause after TRYAGAIN / CLUSTERDOWN (doubles, at most 0.5 s)


class NodeDown(StoreConnectionError):
    """The master serving a key's slot cannot be reached, and no other node took it over."""


class ClusterClient:
    """Commands routed by key over the masters of a Redis Cluster.

    Args:
        seeds: ``(host, port)`` of nodes to learn the slot map from (any node will do).
        options: Connection settings (the wire client's: ``password``, ``username``,
            ``ssl`` and ``ssl_*``, timeouts, ``client_name``, ``socket_keepalive``).
        where: What errors name (its address is replaced by the node's).
    """

    def __init__(
        self, seeds: Sequence[tuple[str, int]], options: dict[str, Any], where: Where
    ) -> None:
        self.seeds = [address_of(host, port) for host, port in seeds]
        self.where = where
        self.timeout: float | None = options.get("socket_timeout")
        self._pool_options: dict[str, Any] = {
            "connect_timeout": options.get("socket_connect_timeout"),
            "timeout": options.get("socket_timeout"),
            "password": options.get("password"),
            "username": options.get("username"),
            "client_name": options.get("client_name"),
            "keepalive": bool(options.get("socket_keepalive", True)),
            "ssl_context": ssl_context(options),
        }
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._pools: dict[str, ConnectionPool] = {}
        self._map: SlotMap | None = None
        self.redirections: collections.Counter[str] = collections.Counter()
        """How many ``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN`` and failovers this
        client followed (for tests and debugging)."""

    # -- nodes and the slot map ---------------------------------------------------------------

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._lock = threading.Lock()  # a parent's thread may have held it at fork time
            self._pid = os.getpid()

    def node_where(self, address: str) -> Where:
        """What the errors of node ``address`` name."""
        host = split_address(address)[0]
        return dataclasses.replace(self.where, address=address, host=host)

    def pool(self, address: str) -> ConnectionPool:
        """The pool of node ``address`` (made on first use)."""
        self._check_fork()
        pool = self._pools.get(address)
        if pool is None:
            with self._lock:
                pool = self._pools.get(address)
                if pool is None:
                    host, port = split_address(address)
                    pool = ConnectionPool(
                        host, port, where=self.node_where(address), **self._pool_options
                    )
                    self._pools[address] = pool
        return pool

    @property
    def slot_map(self) -> SlotMap:
        """The slot map (read from the cluster on first use)."""
        current = self._map
        if current is None:
            current = self.refresh()
        return current

    def refresh(self, avoid: str = "") -> SlotMap:
        """Read the slot map again, from the first node that answers (``avoid`` last).

        Raises:
            StoreConnectionError: If no node answers (the error of the first node).
            StoreAuthError: If a node refuses the credentials.
            StoreError: If the nodes are not cluster nodes (the message says so).
        """
        known = self._map.nodes if self._map is not None else []
        candidates = [n for n in [*known, *self.seeds] if n != avoid]
        candidates = list(dict.fromkeys(candidates)) + ([avoid] if avoid else [])
        first: StoreError | None = None
        deadline = time.monotonic() + (self.timeout or 60.0)
        for address in candidates:
            try:
                reply = self.pool(address).command("CLUSTER", "SLOTS")
            except (StoreConnectionError, StoreTimeoutError) as exc:
                first = first or exc
                if time.monotonic() > deadline:
                    break
                continue
            except StoreError as exc:
                if "cluster support disabled" in str(exc):
                    raise self.where.rejected(
                        f"the Redis server at {address} is not a Redis Cluster node (its "
                        "cluster support is disabled): create the store without cluster=True, "
                        "or name a node of the cluster"
                    ) from exc
                raise
            try:
                slot_map = parse_slots(reply, address)
            except ValueError as exc:
                raise self.node_where(address).malformed(f"CLUSTER SLOTS: {exc}") from None
            if not slot_map.masters:
                raise self.where.rejected(
                    f"the Redis Cluster node {address} serves no slots yet (is the cluster "
                    "created? redis-cli --cluster create ...)"
                )
            self._map = slot_map
            return slot_map
        assert first is not None
        raise first

    def owner(self, slot: int) -> str:
        """``host:port`` of the master of ``slot``.

        Raises:
            StoreError: If no master serves it (the cluster is not fully covered).
        """
        owner = self.slot_map.owners[slot]
        if not owner:
            owner = self.refresh().owners[slot]
        if not owner:
            raise self.where.rejected(
                f"no master of the Redis Cluster serves slot {slot} (a master failed with no "
                "replica to take over, or the cluster is being set up): restart that node or "
                "reassign the slot (redis-cli --cluster fix)"
            )
        return owner

    def masters(self) -> list[str]:
        """The masters serving at least one slot, in address order."""
        return self.slot_map.masters

    # -- running commands ---------------------------------------------------------------------

    def _down(self, address: str, slot: int, key: str | None, exc: StoreError) -> StoreError:
        if isinstance(exc, StoreTimeoutError):
            return exc
        who = self.where
        return NodeDown(
            f"{who.store} on host {socket.gethostname()}"
            + (f" (key {key!r})" if key is not None else "")
            + f": the Redis Cluster master {address}, which serves slot {slot}, cannot be "
            f"reached and no other node has taken its slots over ({exc}). If it has replicas, "
            "one is promoted after the cluster's cluster-node-timeout and later operations "
            "use it; otherwise restart the node.",
            address=address,
            store_name=who.store_name,
            store_type=who.store_type,
        )

    def _pause(
        self, pause: float, deadline: float, exc: Redirect, address: str, key: str | None
    ) -> float:
        if time.monotonic() + pause > deadline:
            if exc.kind == "CLUSTERDOWN":
                raise self.node_where(address).unreachable(
                    f"the cluster is down (CLUSTERDOWN) for longer than socket_timeout="
                    f"{self.timeout} s: a master failed and no replica took its slots over, so "
                    "no node serves every slot. Restart the failed node (or add replicas), or "
                    "set cluster-require-full-coverage no on the nodes to serve the other slots",
                    key,
                ) from exc
            raise exc
        time.sleep(pause)
        return min(pause * 2, 0.5)

    def run(
        self,
        key: str,
        operation: Callable[[Connection], Any],
        *,
        slot: int | None = None,
        name: str | None = None,
    ) -> Any:
        """Run ``operation`` on the master of ``key``'s slot, following redirections.

        ``operation`` sends its commands and reads their replies; a :class:`Redirect` it
        raises sends it to the node named (``ASK``: after ``ASKING``, sent by this method
        before the operation runs). Errors name ``name`` as the key (default: ``key``; the
        user's key when ``key`` is one of its chunks).

        Raises:
            NodeDown: If the slot's master cannot be reached and no node took it over.
            StoreTimeoutError: If a node does not answer within the socket timeout.
            StoreError: Any other error of the operation.
        """
        slot = key_slot(key) if slot is None else slot
        shown = key if name is None else name
        deadline = time.monotonic() + (self.timeout or 60.0)
        asking = ""
        pause = _PAUSE
        retried: set[str] = set()
        last: StoreError | None = None
        for _ in range(MAX_REDIRECTS):
            address = asking or self.owner(slot)
            try:
                with self.pool(address).connection(shown) as conn:
                    if asking:
                        conn.command("ASKING")
                    return operation(conn)
            except Redirect as exc:
                last = exc
                self.redirections[exc.kind] += 1
                if exc.kind == "MOVED" and exc.target:
                    asking = ""
                    self._moved(exc.slot, exc.target)
                elif exc.kind == "ASK" and exc.target:
                    asking = exc.target
                else:  # TRYAGAIN, CLUSTERDOWN
                    asking = ""
                    pause = self._pause(pause, deadline, exc, address, shown)
                    if exc.kind == "CLUSTERDOWN":
                        self._try_refresh(address)
            except StoreTimeoutError:
                raise
            except StoreConnectionError as exc:
                if asking:
                    raise
                self.pool(address).close()  # its idle connections may be as dead
                try:
                    fresh = self.refresh(avoid=address)
                except StoreError:
                    raise self._down(address, slot, shown, exc) from exc
                if fresh.owners[slot] in ("", address):
                    if address in retried:
                        raise self._down(address, slot, shown, exc) from exc
                    retried.add(address)  # once more, on a new connection (a restart?)
                else:
                    self.redirections["failover"] += 1
                last = exc
        assert last is not None
        raise last

    def _moved(self, slot: int, target: str) -> None:
        current = self._map
        if current is not None and 0 <= slot < len(current.owners):
            current.owners[slot] = target  # this slot at once, the rest from the cluster
        self._try_refresh(target)

    def _try_refresh(self, prefer: str) -> None:
        with contextlib.suppress(StoreError):  # the redirection's target is used regardless
            self.refresh()

    def command(self, key: str, *args: Argument, prefix: int = 0, name: str | None = None) -> Reply:
        """Run one command on the master of ``key``'s slot (see :meth:`run`)."""
        return self.run(key, lambda conn: conn.command(*args, prefix=prefix), name=name)

    def transaction(self, key: str, commands: Sequence[Sequence[Argument]]) -> list[Reply]:
        """Run ``commands`` (all on ``key``'s slot) in one ``MULTI``/``EXEC`` (see :meth:`run`)."""
        result: list[Reply] = self.run(key, lambda conn: conn.transaction(commands))
        return result

    def close(self) -> None:
        """Close this process's idle connections to every node (the client stays usable)."""
        self._check_fork()
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()

    def __repr__(self) -> str:
        return f"ClusterClient({', '.join(self.seeds)})"
