"""Redis Cluster's key slots: which of the 16384 slots a key hashes to, and keys for a slot.

Redis Cluster puts key ``k`` in slot ``CRC16(k) mod 16384`` (CRC-16/XMODEM, which is
:func:`binascii.crc_hqx` with a zero start), where ``k`` is the key's *hash tag* when it has
one: the bytes between the first ``{`` and the first ``}`` after it, if that is not empty.
Keys with the same hash tag share a slot, hence a node.

:func:`tag_for_slot` inverts the hash: a short tag that lands in a given slot, so that a
writer can put a chunk on the master it chooses by naming the chunk ``{tag}...``.
"""

from __future__ import annotations

import binascii
import threading

__all__ = ["SLOTS", "key_slot", "tag_for_slot"]

SLOTS = 16384
"""Number of hash slots of a Redis Cluster."""

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_tags: list[str] | None = None
_lock = threading.Lock()


def _hash_part(key: bytes) -> bytes:
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str | bytes) -> int:
    r"""Return the cluster slot of ``key`` (a ``str`` is sent as UTF-8, surrogates escaped)."""
    data = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    return binascii.crc_hqx(_hash_part(data), 0) % SLOTS


def _table() -> list[str]:
    """One tag per slot: the first short alphanumeric string that hashes there."""
    global _tags
    if _tags is None:
        with _lock:
            if _tags is None:
                table: list[str | None] = [None] * SLOTS
                left = SLOTS
                length = 1
                while left:
                    for tag in _strings(length):
                        slot = binascii.crc_hqx(tag.encode(), 0) % SLOTS
                        if table[slot] is None:
                            table[slot] = tag
                            left -= 1
                            if not left:
                                break
                    length += 1
                _tags = [tag for tag in table if tag is not None]
                assert len(_tags) == SLOTS
    return _tags


def _strings(length: int) -> list[str]:
    if length == 1:
        return list(_ALPHABET)
    shorter = _strings(length - 1)
    return [a + b for a in shorter for b in _ALPHABET]


def tag_for_slot(slot: int) -> str:
    """Return a short hash tag (no braces) whose keys ``{tag}...`` land in ``slot``.

    Raises:
        ValueError: If ``slot`` is not in ``0..16383``.
    """
    if not 0 <= slot < SLOTS:
        raise ValueError(f"a cluster slot is in 0..{SLOTS - 1}, got {slot}")
    return _table()[slot]
