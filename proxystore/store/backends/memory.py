"""``MemoryBackend``: bytes (or objects, for ``LocalStore``) in this process's memory.

Each entry is a single dict item, read and written with single dict operations, which are
atomic: the backend is safe across threads without a lock of its own. Its "write time" is a
write counter, increasing with every ``put`` in the process: a version stamp, which is all that
``strict`` compares.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Iterator
from typing import Any

from proxystore.store.backends.base import BackendBase, Fetched, KeyInfo, Parts, new_key

__all__ = ["MemoryBackend"]


class MemoryBackend(BackendBase):
    """A dict in this process's memory, safe across threads (single dict operations).

    Args:
        by_reference: Keep what ``put`` gets as it is, without copying or joining it (the
            single "part" of a by-reference codec is the object itself). Otherwise the parts
            are joined into one ``bytes``, a snapshot that later changes to the object's
            buffers do not affect.
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.
    """

    owns_storage = True

    def __init__(
        self, *, by_reference: bool = False, store_name: str = "", store_type: str = ""
    ) -> None:
        super().__init__(store_name=store_name, store_type=store_type)
        self.by_reference = by_reference
        self._data: dict[str, tuple[Any, float]] = {}
        self._versions = itertools.count(1)
        self._written = threading.Condition()

    def put(self, key: str | None, parts: Parts) -> str:
        """Keep the parts (by reference, or joined into a snapshot) under ``key``."""
        if key is None:
            key = new_key()
        value = parts[0] if self.by_reference else b"".join(parts)
        self._data[key] = (value, next(self._versions))
        return key

    def get(self, key: str) -> Fetched:
        """Return what was put under ``key`` and its write stamp, or ``None``."""
        return self._data.get(key)

    def timestamp(self, key: str) -> float | None:
        """Return the write stamp of ``key``, or ``None``."""
        entry = self._data.get(key)
        return None if entry is None else entry[1]

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is here."""
        return key in self._data

    def evict(self, key: str) -> None:
        """Drop ``key`` (a missing key is not an error)."""
        self._data.pop(key, None)

    def wait_for(self, key: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``key``, woken by :meth:`announce` (no polling)."""
        with self._written:
            return self._written.wait_for(lambda: key in self._data, max(timeout, 0.0))

    def announce(self, key: str) -> None:
        """Wake this process's waiters: ``key`` was just written."""
        with self._written:
            self._written.notify_all()

    def clear(self) -> None:
        """Drop everything."""
        self._data.clear()

    def scan(self) -> Iterator[KeyInfo]:
        """List the entries: size in bytes (``sys.getsizeof`` by reference), write stamp."""
        for key, (value, written) in list(self._data.items()):
            size = sys.getsizeof(value) if self.by_reference else len(value)
            yield KeyInfo(key, size, written)

    def __repr__(self) -> str:
        return f"MemoryBackend(by_reference={self.by_reference})"
