"""Listing the objects of a :class:`~proxystore.store.redis.backend.RedisBackend`.

Used by the ``proxystore`` command-line tool (``proxystore ls redis://...``). Kept out of
:mod:`proxystore.store.redis.backend` so that module stays about moving bytes; it reads the
value layout (header, chunk lists) defined there.
"""

from __future__ import annotations

from collections.abc import Iterator

from proxystore.store.backends.base import KeyInfo
from proxystore.store.redis._clients import CHUNKS_SUFFIX, HEADER, MAGIC
from proxystore.store.redis._wire.errors import WrongType
from proxystore.store.redis.backend import RedisBackend

__all__ = ["scan_keys"]


def scan_keys(backend: RedisBackend, pattern: str = "*", *, count: int = 500) -> Iterator[KeyInfo]:
    r"""List the ProxyStore values in ``backend``'s database: key, payload size, write time.

    Walks the keyspace with ``SCAN ... MATCH pattern`` (never ``KEYS``, which blocks the
    server) and reads the header of each value (``GETRANGE``). Chunk lists and values that are
    not ProxyStore values (another program's keys) are skipped. A key name that is not UTF-8
    comes back with its other bytes as lone surrogates (``"\udcff"`` for ``0xff``), which the
    backend sends back as those bytes.

    Args:
        backend: The backend (its connection settings).
        pattern: Redis glob of the keys to list (``"*"``: all).
        count: ``COUNT`` hint of each ``SCAN`` call.

    Raises:
        StoreConnectionError: If the server cannot be reached.
        StoreAuthError: If it refuses the credentials.
    """
    client = backend.client
    cursor = 0
    while True:
        cursor, names = client.scan(cursor, pattern, count)
        for raw in names:
            # Not UTF-8: the bytes come back as lone surrogates, which the clients send back
            # as the same bytes (so ``rm`` removes exactly the key it listed).
            name = raw.decode("utf-8", "surrogateescape")
            if name.endswith(CHUNKS_SUFFIX):
                continue
            try:
                header = client.get_header(name)
            except WrongType:  # not a string value
                continue
            if len(header) == HEADER.size and header[:4] == MAGIC:
                _, written, size, _ = HEADER.unpack(header)
                yield KeyInfo(name, size, written)
        if cursor == 0:
            return
