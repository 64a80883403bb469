"""How a :class:`~proxystore.store.base.Store` turns objects into parts and bytes into objects.

One :class:`Codec` per store, chosen by the store class from its backend's nature:

* the default serializes with :func:`~proxystore.serialize.serialize_parts` and rebuilds with
  :func:`~proxystore.serialize.deserialize`;
* a zero-copy :class:`~proxystore.store.file.FileStore` rebuilds arrays on memory mappings
  (read-only ones without a copy, copy-on-write ones never cached); torch tensors, which
  cannot be read-only, get a private copy-on-write alias of a read-only mapping and are never
  cached either;
* :class:`~proxystore.store.local.LocalStore` keeps objects *by reference*: its memory backend
  holds the object itself, so ``get`` returns the very object ``set`` was given, with no
  serialization and no copy. Byte layers do not apply to such a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from proxystore.serialize import (
    Buffer,
    Pickled,
    has_buffers,
    rebuilds_writable,
    serialize_parts,
)
from proxystore.serialize import deserialize as deserialize_bytes
from proxystore.serialize import serialize as serialize_obj

__all__ = ["Codec", "RawBytes"]


class RawBytes(bytes):
    """Bytes a by-reference store was given with ``serialize=False`` (not an object)."""

    __slots__ = ()


@dataclass(frozen=True)
class Codec:
    """Serialization settings of a store.

    Attributes:
        by_reference: Keep objects as they are (process memory only): no bytes at all.
        copy_readonly: Copy arrays whose buffer is read-only when deserializing (``False``
            for read-only memory mappings, which give read-only arrays without a copy).
        cache_buffers: Whether objects rebuilt on the fetched buffer may be cached and shared
            (``False`` for copy-on-write mappings: each ``get`` gets private pages).
    """

    by_reference: bool = False
    copy_readonly: bool = True
    cache_buffers: bool = True

    def encode(self, obj: Any, *, serialize: bool, where: str) -> Sequence[Buffer]:
        """Return the parts ``set`` writes for ``obj``.

        A :class:`~proxystore.serialize.Pickled` (an object pickled once to measure it) is
        stored as the object it pickled, from its own pieces: not pickled again, and its
        buffers (arrays) written where they are, never joined into one copy first.

        Raises:
            TypeError: If ``serialize`` is off and ``obj`` is not bytes-like.
        """
        if serialize:
            if type(obj) is Pickled:  # pickled once already (to measure it): those bytes
                if self.by_reference:
                    return (RawBytes(b"".join(obj.parts())),)
                return obj.parts()
            if self.by_reference:
                return cast(Sequence[Buffer], (obj,))
            return serialize_parts(obj)
        if not isinstance(obj, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"{where}.set(serialize=False) needs bytes, got {type(obj).__name__}; pass "
                "serialize=True to serialize it"
            )
        if self.by_reference:
            return (RawBytes(obj),)
        return (obj,)

    def decode(self, data: Any, *, deserialize: bool) -> Any:
        """Rebuild the object from what the backend returned (or return raw bytes)."""
        if self.by_reference:
            if type(data) is RawBytes:
                return deserialize_bytes(data) if deserialize else bytes(data)
            return data if deserialize else serialize_obj(data)
        if not deserialize:
            return data if isinstance(data, bytes) else bytes(data)
        return deserialize_bytes(data, copy_readonly=self.copy_readonly)

    def cacheable(self, data: Buffer) -> bool:
        """Whether the object rebuilt from ``data`` may be cached and shared.

        Not when it is rebuilt on a copy-on-write mapping (each ``get`` has its own pages),
        and not when read-only sharing (``copy_readonly=False``) meets objects that cannot be
        read-only (torch tensors: each ``get`` has its own copy-on-write tensor, so one
        caller's write never shows in another's object).
        """
        if self.by_reference:
            return False
        if not self.cache_buffers:
            return not has_buffers(data)
        return self.copy_readonly or not rebuilds_writable(data)
