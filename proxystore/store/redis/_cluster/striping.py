"""How a large value is striped over the masters of a Redis Cluster (private).

A value larger than its backend's stripe threshold is cut into ``count`` chunks, a multiple of
the number of masters, of at most :data:`MAX_PIECE` bytes (and at most ``chunk_size``), dealt
round-robin to the masters: chunk ``i`` goes to master ``i mod n``. Each chunk is its own
key, named so that it lands on its master and is tied to one write::

    {tag}<key>:<version>:<i>:ps-chunks

``tag`` is a hash tag (:func:`~proxystore.store.redis._cluster.slots.tag_for_slot`) of a
slot that master serves, ``version`` 16 hex digits drawn afresh for each write. The key
itself holds the header (:data:`~proxystore.store.redis._clients.HEADER`, with the chunk
count) followed by the stripe (:data:`STRIPE`: version, piece size, the tags), and is written
last, so a header never names chunks that were not written.

:class:`Stripe` is the layout of one value: its header bytes, its chunk keys, the byte range
of each chunk, and which tag (hence which master, at write time) each chunk has.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from proxystore.serialize import Buffer
from proxystore.store.redis._clients import CHUNKS_SUFFIX, HEADER, MAGIC

__all__ = [
    "MAX_HEADER",
    "MAX_PIECE",
    "MAX_TAGS",
    "STRIPE",
    "STRIPE_THRESHOLD",
    "Stripe",
    "plan",
]

STRIPE = struct.Struct("<8sQH")  # version, piece size, number of tags (then the tags, ","-joined)

STRIPE_THRESHOLD = 1 * 2**20
"""Values larger than this (or than ``chunk_size``, if smaller) are striped; others stay one
key."""

MAX_PIECE = 64 * 2**20
"""Largest chunk of a striped value (a smaller ``chunk_size`` lowers it)."""

MAX_TAGS = 256
"""Most masters one value is striped over."""

MAX_HEADER = HEADER.size + STRIPE.size + MAX_TAGS * 8
"""Longest header a striped value can have (what ``GETRANGE`` reads of a key)."""


@dataclass(frozen=True)
class Stripe:
    """The layout of one striped value.

    Attributes:
        key: The value's key (its header's).
        size: Payload bytes.
        count: Number of chunks.
        version: The write's version (16 hex digits).
        piece: Bytes of every chunk but the last.
        tags: The hash tags, one per master; chunk ``i`` has ``tags[i % len(tags)]``.
    """

    key: str
    size: int
    count: int
    version: str
    piece: int
    tags: tuple[str, ...]

    def chunk_key(self, index: int) -> str:
        """The key of chunk ``index``."""
        tag = self.tags[index % len(self.tags)]
        return f"{{{tag}}}{self.key}:{self.version}:{index}{CHUNKS_SUFFIX}"

    def span(self, index: int) -> tuple[int, int]:
        """``(offset, length)`` of chunk ``index`` in the payload."""
        offset = index * self.piece
        return offset, min(self.piece, self.size - offset)

    def by_tag(self) -> dict[str, list[int]]:
        """The chunk indexes of each tag (each tag's chunks share a slot, hence a node)."""
        groups: dict[str, list[int]] = {}
        for index in range(self.count):
            groups.setdefault(self.tags[index % len(self.tags)], []).append(index)
        return groups

    def header(self, timestamp: float) -> bytes:
        """The bytes of the header key."""
        tags = ",".join(self.tags).encode("ascii")
        return (
            HEADER.pack(MAGIC, timestamp, self.size, self.count)
            + STRIPE.pack(bytes.fromhex(self.version), self.piece, len(self.tags))
            + tags
        )

    @classmethod
    def parse(cls, key: str, header: Buffer, size: int, count: int) -> Stripe:
        """Read the stripe of a header whose :data:`HEADER` says ``size`` and ``count``.

        Raises:
            ValueError: If the stripe is damaged (too short, tags that do not match its count,
                chunks that do not add up to ``size``).
        """
        view = memoryview(header)[HEADER.size :]
        if view.nbytes < STRIPE.size:
            raise ValueError("the header has no stripe")
        version, piece, ntags = STRIPE.unpack_from(view)
        raw = bytes(view[STRIPE.size :])
        tags = tuple(raw.decode("ascii", "replace").split(",")) if raw else ()
        if not (0 < ntags <= MAX_TAGS and len(tags) == ntags and all(tags)):
            raise ValueError("the stripe's tags do not match their count")
        if piece <= 0 or not (piece * (count - 1) < size <= piece * count):
            raise ValueError("the stripe's chunks do not add up to the value's size")
        return cls(key, size, count, version.hex(), piece, tags)


def plan(key: str, size: int, tags: Sequence[str], max_piece: int) -> Stripe:
    """The stripe of a new value of ``size`` bytes over the masters of ``tags``.

    ``count`` is the least multiple of ``len(tags)`` whose chunks are at most ``max_piece``
    bytes, so every master gets the same number of chunks (within one chunk's bytes).
    """
    tags = tuple(tags[:MAX_TAGS])
    rounds = -(-size // (len(tags) * max_piece))
    count = len(tags) * rounds
    piece = -(-size // count)
    count = -(-size // piece)  # a tiny value may need fewer chunks than masters
    return Stripe(key, size, count, secrets.token_hex(8), piece, tags)


def split(views: Sequence[memoryview], stripe: Stripe) -> Iterator[list[memoryview]]:
    """The pieces of each chunk of ``stripe``: views of ``views``, never copies."""
    chunk: list[memoryview] = []
    room = stripe.piece
    for view in views:
        while view.nbytes:
            take = view[:room]
            chunk.append(take)
            view = view[take.nbytes :]
            room -= take.nbytes
            if not room:
                yield chunk
                chunk, room = [], stripe.piece
    if chunk:
        yield chunk
