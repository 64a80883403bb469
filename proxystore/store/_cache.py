"""A small thread-safe LRU cache: the per-process cache of deserialized objects of a store."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["LRUCache"]

K = TypeVar("K")
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """Least-recently-used cache of at most ``maxsize`` entries, safe across threads.

    Args:
        maxsize: Most entries kept. ``0`` disables the cache (every ``set`` is dropped).

    Raises:
        ValueError: If ``maxsize`` is negative.
    """

    def __init__(self, maxsize: int = 16) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"cache size must be an int, got {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"cache size must be >= 0 (0 disables the cache), got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        """Return the entry for ``key`` (marking it recently used), or ``None``."""
        with self._lock:
            try:
                value = self._data[key]
            except KeyError:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def set(self, key: K, value: V) -> None:
        """Insert or replace ``key``, dropping the least recently used entry when full."""
        if self.maxsize == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def evict(self, key: K) -> None:
        """Remove ``key`` if present."""
        with self._lock:
            self._data.pop(key, None)

    def exists(self, key: K) -> bool:
        """Return whether ``key`` is cached (without marking it used)."""
        with self._lock:
            return key in self._data

    def cached_keys(self) -> list[K]:
        """Return the cached keys, least recently used first (a snapshot)."""
        with self._lock:
            return list(self._data)

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
