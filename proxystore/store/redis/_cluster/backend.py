"""``RedisClusterBackend``: a store's bytes on a Redis Cluster, large values striped (private).

A small value is one key, framed as on one server (header and payload, ``SET`` in one
command). A value larger than the stripe threshold is striped over the masters
(:mod:`~proxystore.store.redis._cluster.striping`): its chunks are separate keys whose hash
tags put them on different masters, written and read in parallel, one connection per master
(pipelined), each chunk received straight into its place in the one result buffer.

The commit protocol, since no transaction spans slots:

1. **put**: the chunks under keys carrying a fresh version id, every one with the TTL, in
   parallel; then the header key last, in one ``MULTI`` that also reads the header it
   replaces; then the chunks of the replaced version are deleted. A reader sees the old value
   or the new one, never a mix: each version has its own chunk keys.
2. **get**: the header, then every chunk it names (in parallel). A chunk that is missing
   (expired, evicted by ``maxmemory``, deleted by an overwrite in between) makes the value
   missing, never partial: if the header changed meanwhile the read starts again (at most
   :data:`_ATTEMPTS` times), otherwise the value is missing.
3. **evict**: the header first (one ``MULTI`` that reads and unlinks it), then its chunks.

A writer that dies between its chunks and its header leaves chunks no header names; with a
``ttl`` they expire with it, otherwise :func:`orphans` lists them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, TypeVar

from proxystore.buffers import alloc_buffer, byte_view
from proxystore.exceptions import ForeignValueError
from proxystore.serialize import Buffer
from proxystore.store.backends.base import BackendBase, Fetched, KeyInfo, Parts, new_key
from proxystore.store.redis._clients import CHUNKS_SUFFIX, HEADER, MAGIC
from proxystore.store.redis._cluster.client import ClusterClient
from proxystore.store.redis._cluster.slots import key_slot, tag_for_slot
from proxystore.store.redis._cluster.striping import (
    MAX_HEADER,
    MAX_PIECE,
    STRIPE_THRESHOLD,
    Stripe,
    plan,
    split,
)
from proxystore.store.redis._wire.connection import Connection
from proxystore.store.redis._wire.errors import Overflow, Redirect, Where, loopback_hint
from proxystore.store.redis._wire.resp import SMALL_ARGUMENT, Argument
from proxystore.store.redis.backend import DEFAULT_CHUNK_SIZE, check_key

__all__ = ["RedisClusterBackend"]

T = TypeVar("T")

_ATTEMPTS = 3  # reads of a value that is overwritten while it is read
_DEFAULT_TIMEOUTS = {"socket_connect_timeout": 5.0, "socket_timeout": 60.0}


class _Inconsistent(Exception):
    """A chunk whose length is not the one its header gives."""


def _parallel(tasks: Sequence[Callable[[], T]], timeout: float | None) -> list[T]:
    """Run ``tasks`` at once (the first on this thread); return their results, in order.

    Every task is bounded by its sockets' timeouts; the wait for the others is bounded too.
    The first failure is raised once every task has ended.
    """
    if len(tasks) == 1:
        return [tasks[0]()]
    results: list[Any] = [None] * len(tasks)
    failures: list[BaseException | None] = [None] * len(tasks)

    def run(index: int) -> None:
        try:
            results[index] = tasks[index]()
        except BaseException as exc:
            failures[index] = exc

    threads = [
        threading.Thread(target=run, args=(i,), name=f"proxystore-stripe-{i}", daemon=True)
        for i in range(1, len(tasks))
    ]
    for thread in threads:
        thread.start()
    run(0)
    bound = None if timeout is None else 4 * timeout + 10
    for thread in threads:
        thread.join(bound)
    for failure in failures:
        if failure is not None:
            raise failure
    if any(thread.is_alive() for thread in threads):  # pragma: no cover - sockets bound them
        raise TimeoutError("a striped transfer did not end within its bound")
    return results


class RedisClusterBackend(BackendBase):
    """Values on a Redis Cluster reached through any of its nodes; large values striped.

    Args:
        host: A node of the cluster (any: the slot map is learnt from it).
        port: That node's port.
        chunk_size: Largest chunk of a striped value (at most 64 MiB is used) and, when below
            1 MiB, the size above which values are striped.
        options: Connection settings of the wire client (every node gets the same).
        ttl: Seconds after which every key of a value (header and chunks) expires.
        created_on: Host name of the process that created the store, for messages.
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.

    Nothing connects before the first operation (:meth:`ping` reads the slot map).
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
        settings = {**_DEFAULT_TIMEOUTS, **(options or {})}
        self.host = host
        self.port = port
        self.chunk_size = chunk_size
        self.threshold = min(chunk_size, STRIPE_THRESHOLD)
        self.max_piece = min(chunk_size, MAX_PIECE)
        self.ttl = ttl
        self._expiry = max(1, round(ttl * 1000)) if ttl is not None else 0
        self._px: tuple[Argument, ...] = ("PX", self._expiry) if self._expiry else ()
        self.created_on = created_on
        self.timeout: float | None = settings["socket_timeout"]
        self.address = f"{host}:{port}"
        """The node the store was given (the cluster is reached through it)."""
        self.client = ClusterClient(
            [(host, port)],
            settings,
            Where(
                self.address,
                host=host,
                store=self.where,
                store_name=store_name,
                store_type=store_type,
                created_on=created_on,
                timeout=self.timeout,
            ),
        )

    # -- the store's helpers ------------------------------------------------------------------

    def check_key(self, key: object) -> str:
        """Return ``key`` if this store can use it (as on one server), else raise.

        Raises:
            InvalidKeyError: If it is not a ``str`` or ends in the reserved suffix.
        """
        if type(key) is str and not key.endswith(CHUNKS_SUFFIX) and key.isascii():
            return key
        return check_key(key, self.where, store_name=self.store_name, store_type=self.store_type)

    def ping(self) -> None:
        """Read the slot map from the node given (checks that it answers and is a cluster).

        Raises:
            StoreConnectionError: If no node answers.
            StoreAuthError: If the credentials are refused.
            StoreError: If the server is not a Redis Cluster node.
        """
        self.client.refresh()

    def loopback_hint(self) -> str:
        """The sentence for a loopback address used away from the creating host, or ``""``."""
        return loopback_hint(self.host, self.created_on).strip()

    def _foreign(self, key: str, problem: str) -> ForeignValueError:
        return ForeignValueError(
            f"{self.where}: Redis key {key!r} on the cluster at {self.address} {problem}",
            key=key,
            store_name=self.store_name,
            store_type=self.store_type,
        )

    def _parse(self, key: str, value: Buffer) -> tuple[float, int, int]:
        view = memoryview(value)
        if view.nbytes < HEADER.size or view[:4] != MAGIC:
            raise self._foreign(
                key,
                f"does not hold a ProxyStore value: its {view.nbytes} bytes do not start with "
                "the store's header (written by another program?). Use another key, or delete "
                "that one if it is stale.",
            )
        _, timestamp, size, count = HEADER.unpack_from(view)
        if not math.isfinite(timestamp):
            raise self._foreign(key, "has a header with no valid write time (damaged?)")
        return timestamp, size, count

    def _stripe(self, key: str, header: Buffer, size: int, count: int) -> Stripe:
        try:
            return Stripe.parse(key, header, size, count)
        except ValueError as exc:
            raise self._foreign(key, f"has a damaged stripe header ({exc})") from None

    def _header(self, key: str) -> bytes:
        reply = self.client.command(key, "GETRANGE", key, 0, MAX_HEADER - 1)
        return bytes(reply or b"")

    def _old_stripe(self, key: str, header: Any) -> Stripe | None:
        """The stripe of a replaced (or evicted) header, if it had one."""
        raw = bytes(header or b"")
        if len(raw) < HEADER.size or raw[:4] != MAGIC:
            return None
        _, _, size, count = HEADER.unpack_from(raw)
        if count == 0:
            return None
        try:
            return Stripe.parse(key, raw, size, count)
        except ValueError:
            return None

    # -- chunks by node -----------------------------------------------------------------------

    def _groups(self, stripe: Stripe) -> list[tuple[str, list[int]]]:
        """The chunks of ``stripe`` by tag (each tag's chunks share one slot)."""
        return list(stripe.by_tag().items())

    def _write_group(
        self, stripe: Stripe, indexes: list[int], chunks: dict[int, list[memoryview]]
    ) -> None:
        keys = [stripe.chunk_key(i) for i in indexes]
        commands = [("SET", k, chunks[i], *self._px) for k, i in zip(keys, indexes)]

        def send(conn: Connection) -> list[int]:
            conn.send(commands)
            redo = []
            for position in range(len(commands)):
                try:
                    conn.read_reply()
                except Redirect:
                    redo.append(position)
            return redo

        redo = self.client.run(keys[0], send, name=stripe.key)
        for position in redo:  # moved while written: one by one, each redirected alone
            self.client.command(keys[position], *commands[position], name=stripe.key)

    def _read_group(self, stripe: Stripe, indexes: list[int], data: memoryview) -> bool:
        """Read the chunks ``indexes`` into ``data``; return whether every one was there."""
        keys = [stripe.chunk_key(i) for i in indexes]

        def read_one(conn: Connection, index: int) -> int:
            offset, length = stripe.span(index)
            try:
                view = data[offset : offset + length]
                got = conn.read_bulk_into(view, before=offset, total=stripe.size)
            except Overflow as exc:
                raise _Inconsistent() from exc
            if got >= 0 and got != length:
                raise _Inconsistent()
            return got

        def receive(conn: Connection) -> tuple[bool, list[int]]:
            conn.send([("GET", k) for k in keys])
            present, redo = True, []
            for position, index in enumerate(indexes):
                try:
                    present = read_one(conn, index) >= 0 and present
                except Redirect:
                    redo.append(position)
            return present, redo

        present: bool
        redo: list[int]
        present, redo = self.client.run(keys[0], receive, name=stripe.key)
        for position in redo:  # moved (or migrating) while read: one by one
            key, index = keys[position], indexes[position]

            def again(conn: Connection, key: str = key, index: int = index) -> int:
                conn.send([("GET", key)])
                return read_one(conn, index)

            present = int(self.client.run(key, again, name=stripe.key)) >= 0 and present
        return present

    def _unlink(self, stripe: Stripe) -> None:
        for _, indexes in self._groups(stripe):
            keys = [stripe.chunk_key(i) for i in indexes]
            self.client.command(keys[0], "UNLINK", *keys, name=stripe.key)

    def _unlink_quietly(self, stripe: Stripe) -> None:
        with contextlib.suppress(Exception):  # else an orphan: it expires with its TTL
            self._unlink(stripe)

    # -- the backend protocol -----------------------------------------------------------------

    def put(self, key: str | None, parts: Parts) -> str:
        """Write the pieces under ``key``: one key if small, else striped (see the module)."""
        key = new_key() if key is None else self.check_key(key)
        views = [byte_view(part) for part in parts]
        size = sum(view.nbytes for view in views)
        now = time.time()
        if size <= self.threshold:
            header = HEADER.pack(MAGIC, now, size, 0)
            pieces: list[Buffer] = [header, *views]
            value: Argument = b"".join(pieces) if size < SMALL_ARGUMENT else pieces
            replaced = self.client.transaction(
                key, [("GETRANGE", key, 0, MAX_HEADER - 1), ("SET", key, value, *self._px)]
            )
        else:
            stripe = self._plan(key, size)
            chunks = dict(enumerate(split(views, stripe)))
            groups = self._groups(stripe)
            try:
                _parallel(
                    [
                        functools.partial(self._write_group, stripe, indexes, chunks)
                        for _, indexes in groups
                    ],
                    self.timeout,
                )
            except BaseException:
                self._unlink_quietly(stripe)
                raise
            replaced = self.client.transaction(
                key,
                [
                    ("GETRANGE", key, 0, MAX_HEADER - 1),
                    ("SET", key, stripe.header(now), *self._px),
                ],
            )
        old = self._old_stripe(key, replaced[0])
        if old is not None:
            self._unlink_quietly(old)
        return key

    def _plan(self, key: str, size: int) -> Stripe:
        slot_map = self.client.slot_map
        tags = [tag_for_slot(slot_map.first_slot(master)) for master in slot_map.masters]
        return plan(key, size, tags, self.max_piece)

    def get(self, key: str) -> Fetched:
        """Fetch ``key``'s payload and write time (a striped value's chunks in parallel)."""
        key = self.check_key(key)
        for _ in range(_ATTEMPTS):
            value = self.client.command(key, "GET", key, prefix=HEADER.size)
            if value is None:
                return None
            timestamp, size, count = self._parse(key, value)
            if count == 0:
                payload = memoryview(value)[HEADER.size :]
                if payload.nbytes != size:
                    raise self._foreign(key, "is inconsistent with its header (damaged?)")
                return payload, timestamp
            stripe = self._stripe(key, value, size, count)
            del value
            data = self._read_striped(stripe)
            if data is not None:
                return data, timestamp
            now = self._header(key)
            if now[: HEADER.size + 8] == stripe.header(timestamp)[: HEADER.size + 8]:
                return None  # the same version with a chunk gone: missing, never partial
        return None

    def _read_striped(self, stripe: Stripe) -> memoryview | None:
        """Every chunk of ``stripe`` in one fresh buffer (``None`` if one is missing)."""
        key = stripe.key
        try:
            data = alloc_buffer(stripe.size)
        except (MemoryError, OverflowError):
            raise self.error(
                f"{self.where}: the value of key {key!r} is {stripe.size} bytes by its header, "
                "more than this process can allocate"
            ) from None
        try:
            present = _parallel(
                [
                    functools.partial(self._read_group, stripe, indexes, data)
                    for _, indexes in self._groups(stripe)
                ],
                self.timeout,
            )
        except _Inconsistent:
            raise self._foreign(
                key, "has chunks inconsistent with its header (damaged, or another program)"
            ) from None
        return data if all(present) else None

    def timestamp(self, key: str) -> float | None:
        """Return the write time of ``key`` (reads only the header), or ``None``."""
        key = self.check_key(key)
        header = self._header(key)
        if not header:
            return None
        return self._parse(key, header)[0]

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is present, with every chunk if it is striped."""
        key = self.check_key(key)
        header = self._header(key)
        if not header:
            return False
        if len(header) < HEADER.size or header[:4] != MAGIC:
            return True  # another program's value: present (reading it is the error)
        _, _, size, count = HEADER.unpack_from(header)
        if count == 0:
            return True
        stripe = self._stripe(key, header, size, count)
        found = 0
        for _, indexes in self._groups(stripe):
            keys = [stripe.chunk_key(i) for i in indexes]
            found += int(self.client.command(keys[0], "EXISTS", *keys, name=key))
        return bool(found == count)

    def evict(self, key: str) -> None:
        """Delete ``key``: the header first, then every chunk (a missing key is no error)."""
        key = self.check_key(key)
        header, _ = self.client.transaction(
            key, [("GETRANGE", key, 0, MAX_HEADER - 1), ("UNLINK", key)]
        )
        old = self._old_stripe(key, header)
        if old is not None:
            self._unlink(old)

    def expire(self, key: str, seconds: float) -> None:
        """Give ``key`` and every chunk an expiry ``seconds`` from now (a lease's end).

        The chunks first, then the header. A missing key is ignored.
        """
        key = self.check_key(key)
        ms = max(1, round(seconds * 1000))
        stripe = self._old_stripe(key, self._header(key))
        if stripe is not None:
            for _, indexes in self._groups(stripe):
                for index in indexes:
                    chunk = stripe.chunk_key(index)
                    self.client.command(chunk, "PEXPIRE", chunk, ms, name=key)
        self.client.command(key, "PEXPIRE", key, ms)

    def scan(self) -> Iterator[KeyInfo]:
        """List the values on every master (``SCAN`` each; chunks are not listed)."""
        for master in self.client.masters():
            cursor = 0
            while True:
                reply = self.client.pool(master).command("SCAN", cursor, "COUNT", 500)
                cursor = int(bytes(reply[0]))
                for raw in reply[1]:
                    name = bytes(raw).decode("utf-8", "surrogateescape")
                    if name.endswith(CHUNKS_SUFFIX):
                        continue
                    try:
                        header = self._header(name)
                    except Exception:
                        continue
                    if len(header) >= HEADER.size and header[:4] == MAGIC:
                        _, written, size, _ = HEADER.unpack_from(header)
                        yield KeyInfo(name, size, written)
                if cursor == 0:
                    break

    def node_of(self, key: str) -> str:
        """``host:port`` of the master that serves ``key``'s slot now."""
        return self.client.owner(key_slot(key))

    def nodes_of(self, key: str) -> list[str]:
        """The masters holding ``key``'s header and chunks now (for tests and tools)."""
        header = self._header(key)
        nodes = {self.node_of(key)}
        stripe = self._old_stripe(key, header)
        if stripe is not None:
            nodes.update(self.node_of(stripe.chunk_key(i)) for i in range(stripe.count))
        return sorted(nodes)

    def chunk_keys(self, key: str) -> list[str]:
        """The chunk keys ``key``'s header names (``[]`` for a small or missing value)."""
        stripe = self._old_stripe(key, self._header(key))
        return [] if stripe is None else [stripe.chunk_key(i) for i in range(stripe.count)]

    def close(self) -> None:
        """Close this process's connections to every node (objects stay)."""
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisClusterBackend({self.address})"
