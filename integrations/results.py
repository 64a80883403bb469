"""Results that cannot leak: task results an adapter stores, evicted once nothing can use them.

With ``ProxyPolicy(proxy_results=True)`` the worker-side wrapper stores a large result and
returns a proxy of it. Such a proxy carries an :class:`OwnedFactory`: the store factory plus
the token of the :class:`ResultTracker` of the adapter that ran the task. In the adapter's own
process every live ``OwnedFactory`` of a key counts as one *hold* on that key (made where the
proxy is created or unpickled, dropped when the factory is garbage-collected: the caller
dropped the future holding the result and every proxy of it). The adapters add the other
holds: a task that received the result (as a future or as its proxy) holds it until that
task ends (succeeded, failed or was cancelled); Dask, which keeps results on its workers,
holds each result while the caller holds its ``distributed.Future`` or the task still runs.
When the last hold of a key goes, the object is evicted.

A proxy that leaves the adapters' sight, pickled by the user in the adapter's process (to a
file, a queue, another framework), *escapes*: its key is no longer evicted when the holds end,
so the copy sent elsewhere keeps working. It stays until the policy's lifetime ends, when
the policy has one (``ProxyPolicy(lifetime=...)``), or until it is evicted explicitly. The
adapters never pickle an owned proxy themselves: they send a plain reference to the same key
(:meth:`OwnedFactory.plain`) and hold the key for the task.

Processes other than the adapter's (workers) see an ``OwnedFactory`` as the plain factory it
wraps: no tracker of theirs has its token (a forked worker's copy of the parent's tracker is
recognised by its process id and ignored).
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import threading
import uuid
import weakref
from typing import Any, Generic, TypeVar

from proxystore.factory import Factory
from proxystore.proxy import Proxy, get_factory
from proxystore.store import Store

__all__ = [
    "OwnedFactory",
    "ResultHold",
    "ResultTracker",
    "owned_result",
    "tracker_for",
    "trackers_exist",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)

_TRACKERS: dict[str, ResultTracker] = {}
_TRACKERS_LOCK = threading.Lock()
_DRAIN_IDLE = 1.0  # seconds the release thread waits for more work before it ends


def tracker_for(token: str) -> ResultTracker | None:
    """The tracker of ``token`` if it lives in this process (``None`` in workers)."""
    tracker = _TRACKERS.get(token)
    if tracker is None or tracker.pid != os.getpid():
        return None
    return tracker


class OwnedFactory(Factory[T], Generic[T]):
    """The factory of a result proxy an adapter's tracker owns (see the module docstring).

    Resolving it resolves the wrapped store factory; its other attributes (``key``,
    ``description``, ...) are the wrapped factory's.

    Args:
        inner: The store's factory of the result's key.
        owner: The token of the :class:`ResultTracker` that owns the key.
    """

    def __init__(self, inner: Factory[T], owner: str) -> None:
        self.inner = inner
        self.owner = owner
        tracker = tracker_for(owner)
        if tracker is not None:
            tracker.claim(self)

    @property
    def key(self) -> str:
        """The store key of the result."""
        key: str = getattr(self.inner, "key", "")
        return key

    def resolve(self) -> T:
        """Resolve the result (the wrapped factory's resolve)."""
        return self.inner.resolve()

    def resolve_async(self) -> None:
        """Start fetching the result in the background."""
        self.inner.resolve_async()

    def plain(self) -> Factory[T]:
        """The wrapped factory: a reference to the key that holds nothing and never escapes."""
        return self.inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("inner", "owner"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __reduce__(self) -> tuple[Any, ...]:
        tracker = tracker_for(self.owner)
        if tracker is not None:  # pickled in the adapter's process, by the user: it escapes
            tracker.escape(self.key)
        return (OwnedFactory, (self.inner, self.owner))

    def __repr__(self) -> str:
        return f"OwnedFactory({self.inner!r})"


def owned_result(obj: Any) -> ResultHold | None:
    """The tracker and key of ``obj`` if it is a result proxy a tracker of this process owns.

    Any adapter's: a result of one adapter passed to a task of another is held by its own.
    """
    if not issubclass(type(obj), Proxy):  # type(): isinstance() would resolve the proxy
        return None
    factory = get_factory(obj)
    if type(factory) is not OwnedFactory:
        return None
    tracker = tracker_for(factory.owner)
    return None if tracker is None else ResultHold(tracker, factory.key)


def trackers_exist() -> bool:
    """Whether any adapter of this process tracks results (so results may be owned)."""
    return bool(_TRACKERS)


class ResultHold:
    """One hold on a stored result, taken when made; :meth:`release` drops it (once).

    Args:
        tracker: The tracker that owns the result.
        key: The result's key.
    """

    __slots__ = ("key", "released", "tracker")

    def __init__(self, tracker: ResultTracker, key: str) -> None:
        self.tracker = tracker
        self.key = key
        self.released = False
        tracker.hold(key)

    def release(self) -> None:
        """Drop the hold (idempotent); the last hold on the key evicts it."""
        if not self.released:
            self.released = True
            self.tracker.drop(self.key)

    def __repr__(self) -> str:
        return f"ResultHold({self.key})"


class ResultTracker:
    """Counts the holds on an adapter's stored results and evicts each when its last goes.

    Args:
        store: The store the results are in.
        owner: Name of the adapter, for log messages.
        evict: Evict a result when its last hold goes (``ProxyPolicy.evict``); ``False``
            keeps every result.
        lifetime: A lifetime that also gets every result key (``ProxyPolicy.lifetime``):
            results that escaped are evicted when it ends.
    """

    def __init__(
        self, store: Store, *, owner: str, evict: bool = True, lifetime: Any = None
    ) -> None:
        self.store = store
        self.owner = owner
        self.evict_results = evict
        self.lifetime = lifetime
        self.token = uuid.uuid4().hex
        self.pid = os.getpid()
        self._holds: dict[str, int] = {}
        self._escaped: set[str] = set()
        # Reentrant: a garbage collection may run a finalizer (and so drop()) on a thread
        # that holds it.
        self._lock = threading.RLock()
        self._later: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._drainer: threading.Thread | None = None
        self._drain_lock = threading.RLock()
        with _TRACKERS_LOCK:
            _TRACKERS[self.token] = self
        weakref.finalize(self, _forget, self.token)

    # -- holds ---------------------------------------------------------------------------------

    def claim(self, factory: OwnedFactory[Any]) -> None:
        """Count ``factory`` as a hold on its key until it is garbage-collected."""
        self.hold_while(factory, factory.key)

    def hold(self, key: str) -> None:
        """Add one hold on ``key`` (a task that uses the result, a future that may have it)."""
        with self._lock:
            self._holds[key] = self._holds.get(key, 0) + 1

    def drop(self, key: str) -> None:
        """Remove one hold on ``key``; the last one evicts the result (unless it escaped)."""
        with self._lock:
            left = self._holds.get(key, 0) - 1
            if left > 0:
                self._holds[key] = left
                return
            self._holds.pop(key, None)
            if key in self._escaped or not self.evict_results:
                return
        self._evict(key)

    def is_held(self, key: str) -> bool:
        """Whether ``key`` is a result of this tracker that something still holds."""
        return key in self._holds

    def hold_while(self, holder: Any, key: str) -> None:
        """Hold ``key`` until ``holder`` (a future or a factory) is garbage-collected."""
        self.hold(key)
        weakref.finalize(holder, self._finalized, key)
        if self.lifetime is not None:
            self._add_to_lifetime(key)

    def escape(self, key: str) -> None:
        """Keep ``key`` after its holds end: a proxy of it left the adapters' sight."""
        with self._lock:
            self._escaped.add(key)

    def holds(self) -> dict[str, int]:
        """The result keys held now, and how many holds each has."""
        with self._lock:
            return dict(self._holds)

    def escaped(self) -> set[str]:
        """The result keys kept because a proxy of them escaped."""
        with self._lock:
            return set(self._escaped)

    # -- eviction ------------------------------------------------------------------------------

    def _finalized(self, key: str) -> None:
        # A finalizer runs where the last reference went: on the caller's thread (a `del`),
        # or inside a garbage collection that may have interrupted any code, a store's own
        # locked sections included. Evicting there could deadlock on such a lock: during a
        # collection the key goes to a background thread instead.
        if _COLLECTING.active:
            self._release_later(key)
            return
        try:
            self.drop(key)
        except Exception:  # a finalizer must not raise
            logger.exception("%s: releasing the stored result %s failed", self.owner, key)

    def _release_later(self, key: str) -> None:
        """Hand ``key`` to the release thread (started when none runs)."""
        self._later.put(key)  # SimpleQueue.put is safe in a finalizer (reentrant)
        with self._drain_lock:
            if self._drainer is None:
                self._drainer = threading.Thread(
                    target=self._drain, name="proxystore-result-release", daemon=True
                )
                self._drainer.start()

    def _drain(self) -> None:
        # Ends once idle for a second (started again when needed).
        while True:
            try:
                key = self._later.get(timeout=_DRAIN_IDLE)
            except queue.Empty:
                with self._drain_lock:
                    if self._later.empty():
                        self._drainer = None
                        return
                continue
            try:
                self.drop(key)
            except Exception:
                logger.exception("%s: releasing the stored result %s failed", self.owner, key)

    def _evict(self, key: str) -> None:
        try:
            self.store.evict(key)
        except Exception as exc:
            logger.warning(
                "%s: evicting the result %s from %s %r failed (%s); it stays in the store",
                self.owner, key, type(self.store).__name__, self.store.name, exc,
            )  # fmt: skip

    def _add_to_lifetime(self, key: str) -> None:
        try:
            self.lifetime.add_key(key, store=self.store)
        except ValueError:  # the lifetime has ended: it evicted what it held; so must this
            self.escape(key)
            self._evict(key)

    def close(self) -> None:
        """Stop tracking: results still held stay in the store (nothing is evicted)."""
        _forget(self.token)

    def __repr__(self) -> str:
        return f"ResultTracker({self.owner}, {len(self._holds)} results held)"


def _forget(token: str) -> None:
    with _TRACKERS_LOCK:
        _TRACKERS.pop(token, None)


class _Collecting(threading.local):
    active = False


_COLLECTING = _Collecting()


def _gc_phase(phase: str, info: dict[str, Any]) -> None:
    _COLLECTING.active = phase == "start"


gc.callbacks.append(_gc_phase)
