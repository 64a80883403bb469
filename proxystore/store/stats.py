"""Per-key, per-operation timing statistics of a store (``init_store(..., stats=True)``).

Off by default and free when off: a store without statistics has no wrapper and makes no timing
call. With statistics on, the store records for every key:

* ``set``: a whole :meth:`~proxystore.store.base.Store.set` (serialization included);
* ``get``: a whole :meth:`~proxystore.store.base.Store.get` (cache hits included);
* ``transfer``: the backend's byte movement alone (remote stores: reading or writing the bytes);
* ``resolve``: a proxy of the key resolving in this process (waiting for a background fetch
  included).

Statistics are per process: a worker that resolves a proxy records it in its own store object.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["StatsRecorder", "TimeStats"]


@dataclass(frozen=True)
class TimeStats:
    """Timing of one operation on one key.

    Attributes:
        calls: How many times the operation ran.
        total_time_ms: Sum of the durations, in milliseconds.
        min_time_ms: Shortest duration, in milliseconds.
        max_time_ms: Longest duration, in milliseconds.
    """

    calls: int
    total_time_ms: float
    min_time_ms: float
    max_time_ms: float

    @property
    def avg_time_ms(self) -> float:
        """Mean duration, in milliseconds."""
        return self.total_time_ms / self.calls if self.calls else 0.0


class StatsRecorder:
    """Thread-safe accumulator of :class:`TimeStats` by key and operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, TimeStats]] = {}

    def record(self, key: str, operation: str, seconds: float) -> None:
        """Add one call of ``operation`` on ``key`` that took ``seconds``."""
        ms = seconds * 1000.0
        with self._lock:
            per_key = self._data.setdefault(key, {})
            old = per_key.get(operation)
            if old is None:
                per_key[operation] = TimeStats(1, ms, ms, ms)
            else:
                per_key[operation] = TimeStats(
                    old.calls + 1,
                    old.total_time_ms + ms,
                    min(old.min_time_ms, ms),
                    max(old.max_time_ms, ms),
                )

    def get(self, key: str) -> dict[str, TimeStats]:
        """Return the statistics of ``key`` by operation (empty if nothing was recorded)."""
        with self._lock:
            return dict(self._data.get(key, {}))

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self._data.clear()
