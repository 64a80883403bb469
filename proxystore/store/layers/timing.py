"""``TimingLayer``: records how long the backend takes to move each key's bytes.

This is what ``init_store(..., stats=True)`` puts between a store and its backend: every
``put`` and ``get`` of the wrapped backend is timed and recorded as the ``transfer`` operation
of its key (see :mod:`proxystore.store.stats`). A store without statistics has no such layer,
so it makes no clock call at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from proxystore.store.backends.base import Backend, Fetched, Parts
from proxystore.store.layers.base import Layer
from proxystore.store.stats import StatsRecorder

__all__ = ["TimingLayer"]


class TimingLayer(Layer):
    """Records the duration of each ``put``/``get`` of ``inner`` as ``transfer``.

    Args:
        inner: The wrapped backend.
        recorder: Where the timings go.
    """

    def __init__(self, inner: Backend, recorder: StatsRecorder) -> None:
        super().__init__(inner)
        self.recorder = recorder

    def put(self, key: str | None, parts: Parts) -> str:
        """Put through the wrapped backend, timing it."""
        start = time.perf_counter()
        key = self.inner.put(key, parts)
        self.recorder.record(key, "transfer", time.perf_counter() - start)
        return key

    def put_batch(self, items: Sequence[tuple[str | None, Parts]]) -> list[str]:
        """Put a batch through the wrapped backend; each key is charged the whole batch."""
        start = time.perf_counter()
        keys = self.inner.put_batch(items)
        elapsed = time.perf_counter() - start
        for key in keys:
            self.recorder.record(key, "transfer", elapsed)
        return keys

    def get(self, key: str) -> Fetched:
        """Get through the wrapped backend, timing it."""
        start = time.perf_counter()
        try:
            return self.inner.get(key)
        finally:
            self.recorder.record(key, "transfer", time.perf_counter() - start)
