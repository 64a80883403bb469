"""Fresh buffers for large reads, and flat byte views.

Reading a large object into a ``bytearray`` costs a zero-fill pass and one page fault per
4 KiB page before the first byte arrives. :func:`alloc_buffer` hands out, for large sizes, an
anonymous private memory map instead: page aligned, advised to use transparent huge pages where
the kernel offers them, filled lazily. Deserialized arrays are rebuilt on it without a copy and
keep it alive; it is unmapped when the last of them goes away.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap

from proxystore.serialize import Buffer

__all__ = ["LARGE_BUFFER", "aligned_buffer", "alloc_buffer", "byte_view"]

LARGE_BUFFER = 4 * 2**20
"""Buffers of at least this many bytes are anonymous memory maps rather than ``bytearray``."""

_MAP_PRIVATE_ANON = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


def alloc_buffer(nbytes: int) -> memoryview:
    """Return a fresh, writable, zero-filled buffer of ``nbytes`` bytes.

    Buffers of :data:`LARGE_BUFFER` bytes or more are private anonymous memory maps, page
    aligned and advised to use transparent huge pages (Linux), so filling them costs a few
    page faults instead of one per 4 KiB. Smaller ones are ``bytearray`` objects. Either way
    the memory is freed when the last view of it (or array built on it) goes away.
    """
    if nbytes >= LARGE_BUFFER and _MAP_PRIVATE_ANON:
        try:
            region = mmap.mmap(-1, nbytes, flags=_MAP_PRIVATE_ANON)
        except OSError:
            return memoryview(bytearray(nbytes))
        if _MADV_HUGEPAGE is not None:
            with contextlib.suppress(OSError):
                region.madvise(_MADV_HUGEPAGE)
        return memoryview(region)
    return memoryview(bytearray(nbytes))


def aligned_buffer(nbytes: int, offset: int = 0, align: int = 64) -> memoryview:
    """Return a fresh writable buffer of ``nbytes`` whose byte ``offset`` is ``align``-aligned.

    For a value read behind an ``offset``-byte header: the arrays rebuilt on it are then as
    aligned as the serializer laid them out (a misaligned ``float64`` array is slower, and
    numpy's pairwise sums can differ from the aligned original in the last bits).
    """
    if nbytes + align >= LARGE_BUFFER:  # a memory map: page aligned
        pad = -offset % align
        return alloc_buffer(pad + nbytes)[pad:]
    raw = bytearray(nbytes + align)
    address = ctypes.addressof(ctypes.c_char.from_buffer(raw))
    pad = -(address + offset) % align
    return memoryview(raw)[pad : pad + nbytes]


def byte_view(data: Buffer) -> memoryview:
    """Return a flat, unsigned-byte view of ``data`` (no copy; ``data`` must be contiguous)."""
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view
