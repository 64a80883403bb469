"""A Redis Cluster's slot map: which master serves each slot, and its replicas.

:func:`parse_slots` reads the reply of ``CLUSTER SLOTS`` (every Redis 3.0+ node answers it)
into a :class:`SlotMap`. A node announced with an empty address (``""``, what a node says of
itself before it knows its own address) is the node that was asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from proxystore.store.redis._cluster.slots import SLOTS

__all__ = ["SlotMap", "address_of", "parse_slots", "split_address"]


def address_of(host: str, port: int) -> str:
    """``host:port`` (``[host]:port`` for an IPv6 address)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(address: str) -> tuple[str, int]:
    """The host and port of ``host:port`` or ``[v6]:port``.

    Raises:
        ValueError: If ``address`` has no port.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class SlotMap:
    """Who serves what in a cluster, as one node saw it.

    Attributes:
        owners: ``owners[slot]``: ``host:port`` of the master serving it (``""``: none).
        replicas: The replicas of each master, by the master's address.
        source: The node this map was read from.
    """

    owners: list[str]
    replicas: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    @property
    def masters(self) -> list[str]:
        """The masters that serve at least one slot, in address order."""
        return sorted({owner for owner in self.owners if owner})

    @property
    def nodes(self) -> list[str]:
        """Every node the map names (masters first)."""
        seen = self.masters
        for master in list(seen):
            seen.extend(r for r in self.replicas.get(master, []) if r not in seen)
        return seen

    def first_slot(self, master: str) -> int:
        """The lowest slot ``master`` serves (``-1``: none)."""
        for slot, owner in enumerate(self.owners):
            if owner == master:
                return slot
        return -1

    def uncovered(self) -> int:
        """How many slots no master serves."""
        return sum(1 for owner in self.owners if not owner)


def _node(entry: Any, asked: str) -> str:
    if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[1], int):
        raise ValueError("a node entry is not [host, port, ...]")
    raw = entry[0]
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ValueError("a node's host is not a string")
    host = bytes(raw).decode("utf-8", "replace")
    if not host or host == "?":
        host = split_address(asked)[0]
    return address_of(host, entry[1])


def parse_slots(reply: Any, asked: str) -> SlotMap:
    """Read a ``CLUSTER SLOTS`` reply (from node ``asked``) into a :class:`SlotMap`.

    Raises:
        ValueError: If the reply is not shaped as ``CLUSTER SLOTS`` replies are.
    """
    if not isinstance(reply, list):
        raise ValueError("CLUSTER SLOTS did not answer with an array")
    owners = [""] * SLOTS
    replicas: dict[str, list[str]] = {}
    for entry in reply:
        if not isinstance(entry, list) or len(entry) < 3:
            raise ValueError("a CLUSTER SLOTS entry is not [start, end, master, ...]")
        start, end = entry[0], entry[1]
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end < SLOTS):
            raise ValueError(f"a CLUSTER SLOTS range is not in 0..{SLOTS - 1}")
        master = _node(entry[2], asked)
        owners[start : end + 1] = [master] * (end - start + 1)
        known = replicas.setdefault(master, [])
        for replica in entry[3:]:
            name = _node(replica, asked)
            if name not in known:
                known.append(name)
    return SlotMap(owners, replicas, asked)


def group_by(items: Sequence[Any], owner: Sequence[str]) -> dict[str, list[Any]]:
    """``items`` grouped by ``owner[i]`` (in order within each group)."""
    groups: dict[str, list[Any]] = {}
    for item, node in zip(items, owner):
        groups.setdefault(node, []).append(item)
    return groups
