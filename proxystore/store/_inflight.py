"""One fetch per key at a time within a process: concurrent resolvers share it.

Two tasks of one worker process that start together with the same proxied argument would each
fetch it; :class:`InFlight` makes the second wait for the first one's fetch and share its
result. Across the processes of a host the host tier does the same with a lock file
(:mod:`proxystore.store.layers.host_cache`).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Generic, TypeVar

__all__ = ["InFlight"]

T = TypeVar("T")


class InFlight(Generic[T]):
    """Runs at most one ``fetch`` per key at a time; concurrent callers share its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Future[T]] = {}

    def run(self, key: str, fetch: Callable[[], T]) -> tuple[T, bool]:
        """Return ``fetch()``'s result (or raise its error) and whether this call ran it.

        A caller that finds a fetch of ``key`` running waits for it instead of starting its
        own; the wait is as bounded as the fetch (whose backend bounds every wait).
        """
        with self._lock:
            future = self._running.get(key)
            leader = future is None
            if future is None:
                future = self._running[key] = Future()
        if not leader:
            return future.result(), False
        try:
            result = fetch()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result, True
        finally:
            with self._lock:
                del self._running[key]
