"""Lifetimes: evict a group of objects together, when their lifetime ends.

A lifetime collects the keys of the objects created with it
(``store.proxy(obj, lifetime=lt)``, or :meth:`Lifetime.add_key` /
:meth:`Lifetime.add_proxy`) and evicts all of them when it ends:

* :class:`ContextLifetime`: at the end of a ``with`` block (also when it raises), or on
  :meth:`~Lifetime.close`.
* :class:`LeaseLifetime`: when its lease runs out (:meth:`LeaseLifetime.extend` postpones
  it). On a Redis store the keys also carry the lease as a Redis expiry, so the objects of a
  client killed before its lease ends still leave Redis.
* :class:`StaticLifetime`: one per process; its objects are evicted when the process exits.

:meth:`~Lifetime.close` is idempotent; a closed lifetime takes no more keys.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from proxystore.proxy import Proxy, get_key
from proxystore.store.base import Store

__all__ = ["ContextLifetime", "LeaseLifetime", "Lifetime", "StaticLifetime", "expirer_of"]

logger = logging.getLogger(__name__)


class Lifetime:
    """The keys of objects of one store that are evicted together when the lifetime ends.

    Args:
        store: The store whose objects this lifetime holds.
    """

    def __init__(self, store: Store) -> None:
        if not isinstance(store, Store):
            raise TypeError(
                f"{type(self).__name__} needs a Store, got {type(store).__name__}: pass the "
                "store whose objects it will evict"
            )
        self.store = store
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    # -- used by Store.proxy ------------------------------------------------------------------

    def check_store(self, store: Store) -> None:
        """Raise ``ValueError`` unless objects of ``store`` may be added now."""
        if store is not self.store:
            raise ValueError(
                f"{self!r} holds objects of store {self.store.name!r}, not of store "
                f"{store.name!r}: create a lifetime for that store"
            )
        if self._closed:
            raise ValueError(f"{self!r} is closed: create a new lifetime for new objects")

    # -- public -------------------------------------------------------------------------------

    def add_key(self, *keys: str, store: Store | None = None) -> None:
        """Evict ``keys`` (objects of this lifetime's store) when this lifetime ends.

        Raises:
            ValueError: If the lifetime is closed, or ``store`` is another store.
        """
        with self._lock:
            self.check_store(self.store if store is None else store)
            self._keys.update(keys)
        self._added(keys)

    def add_proxy(self, *proxies: Proxy) -> None:
        """Evict the objects of ``proxies`` when this lifetime ends (see :meth:`add_key`).

        Raises:
            ValueError: If a proxy is not a proxy of a store object, or as :meth:`add_key`.
        """
        self.add_key(*_proxy_keys(proxies))

    def done(self) -> bool:
        """Whether this lifetime has ended (its objects were evicted)."""
        return self._closed

    def close(self) -> None:
        """End this lifetime now: evict every object created with it (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            keys, self._keys = sorted(self._keys), set()
        self._stop()
        _evict(self.store, keys)

    def _added(self, keys: Iterable[str]) -> None:
        """Hook: keys were added."""

    def _stop(self) -> None:
        """Hook: the lifetime is closing (before its objects are evicted)."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._keys)} keys"
        return f"{type(self).__name__}(store={self.store.name!r}, {state})"


def _proxy_keys(proxies: Iterable[Proxy]) -> list[str]:
    keys = []
    for proxy in proxies:
        key = get_key(proxy)
        if key is None:
            raise ValueError(
                "a lifetime can only hold proxies of store objects (made by store.proxy()); "
                "this proxy's factory has no store key"
            )
        keys.append(key)
    return keys


def _evict(store: Store, keys: Iterable[str]) -> None:
    for key in keys:
        store.evict(key)


class ContextLifetime(Lifetime):
    """A lifetime that ends at the end of a ``with`` block (also when the block raises).

    Example::

        with ContextLifetime(store) as lifetime:
            p = store.proxy(obj, lifetime=lifetime)
            ...
        # the object of p is evicted here
    """

    def __enter__(self) -> ContextLifetime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_lease_ids = iter(range(1, 1 << 62))


def _check_seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"LeaseLifetime {name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"LeaseLifetime {name} must be a finite number of seconds > 0, got {value!r}"
        )
    return float(value)


class LeaseLifetime(Lifetime):
    """A lifetime that ends when its lease runs out, ``expiry`` seconds from now.

    A daemon thread (``proxystore-lease-N``) waits for the end of the lease; :meth:`close`
    ends the lease early and stops the thread. On a Redis store every key (with its chunk
    list) also gets the lease's remaining time as a Redis expiry, renewed by :meth:`extend`,
    so the objects leave Redis even if this process is killed.

    Args:
        store: The store whose objects this lifetime holds.
        expiry: Seconds until the lease ends (finite, > 0).

    Raises:
        ValueError: If ``expiry`` is not a finite number > 0.
    """

    def __init__(self, store: Store, expiry: float) -> None:
        seconds = _check_seconds(expiry, "expiry")
        super().__init__(store)
        self._deadline = time.monotonic() + seconds
        self._wake = threading.Condition(self._lock)
        self._expirer = expirer_of(store)
        self._thread = threading.Thread(
            target=self._run, name=f"proxystore-lease-{next(_lease_ids)}", daemon=True
        )
        self._thread.start()

    def remaining(self) -> float:
        """Seconds until the lease ends (0 once it has ended)."""
        if self._closed:
            return 0.0
        return max(0.0, self._deadline - time.monotonic())

    def extend(self, seconds: float) -> None:
        """Postpone the end of the lease by ``seconds`` (on Redis, the keys' expiry too).

        Raises:
            ValueError: If ``seconds`` is not a finite number > 0, or the lease has ended.
        """
        seconds = _check_seconds(seconds, "extend() seconds")
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} has ended: it cannot be extended")
            self._deadline += seconds
            keys = list(self._keys)
            self._wake.notify_all()
        self._expire(keys)

    def _expire(self, keys: Iterable[str]) -> None:
        if self._expirer is None:
            return
        left = self._deadline - time.monotonic()
        for key in keys:
            self._expirer(key, max(left, 0.001))

    def _added(self, keys: Iterable[str]) -> None:
        self._expire(keys)

    def _run(self) -> None:
        with self._lock:
            while not self._closed:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
            if self._closed:
                return
        try:
            self.close()
        except Exception:  # a background thread must not die with a traceback
            logger.exception("%r: evicting its objects at the end of the lease failed", self)

    def _stop(self) -> None:
        with self._lock:
            self._wake.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


def expirer_of(store: Store) -> Callable[[str, float], None] | None:
    """The ``expire(key, seconds)`` of the store's backend (through its layers), or ``None``.

    Backends that can put an expiry on a key (Redis, one server or a cluster) have one.
    """
    backend: Any = store.backend
    for _ in range(16):  # through the layers (timing, host cache, ...) to the backend
        expire = getattr(backend, "expire", None)
        if callable(expire):
            return expire  # type: ignore[no-any-return]
        backend = getattr(backend, "inner", None)
        if backend is None:
            return None
    return None


class StaticLifetime:
    """The lifetime of this process: its objects are evicted when the process exits.

    There is one per process (``StaticLifetime() is StaticLifetime()``); it takes objects of
    any store. It ends at interpreter exit (``atexit``), or on :meth:`close`.
    """

    _instance: StaticLifetime | None = None
    _instance_lock = threading.Lock()

    _keys: dict[int, tuple[Store, set[str]]]
    _lock: threading.Lock
    _closed: bool

    def __new__(cls) -> StaticLifetime:
        """Return this process's one ``StaticLifetime`` (made, and hooked to exit, once)."""
        with cls._instance_lock:
            if cls._instance is None:
                self = super().__new__(cls)
                self._keys = {}
                self._lock = threading.Lock()
                self._closed = False
                atexit.register(self.close)
                cls._instance = self
            return cls._instance

    def check_store(self, store: Store) -> None:
        """Raise ``ValueError`` if this lifetime is closed (any store is accepted)."""
        if self._closed:
            raise ValueError(f"{self!r} is closed: the process is exiting")

    def add_key(self, *keys: str, store: Store | None = None) -> None:
        """Evict ``keys`` of ``store`` when the process exits.

        Raises:
            ValueError: If ``store`` is not given or the lifetime is closed.
        """
        if store is None:
            raise ValueError("StaticLifetime.add_key() needs the store of the keys: store=...")
        with self._lock:
            self.check_store(store)
            self._keys.setdefault(id(store), (store, set()))[1].update(keys)

    def add_proxy(self, *proxies: Proxy, store: Store | None = None) -> None:
        """Evict the objects of ``proxies`` (of ``store``) when the process exits."""
        self.add_key(*_proxy_keys(proxies), store=store)

    def done(self) -> bool:
        """Whether this lifetime has ended."""
        return self._closed

    def close(self) -> None:
        """Evict every object of this lifetime now (idempotent; it takes no more keys)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            groups, self._keys = list(self._keys.values()), {}
        for store, keys in groups:
            try:
                _evict(store, sorted(keys))
            except Exception:  # at exit: evict what can be evicted from the other stores
                logger.exception("StaticLifetime: evicting objects of %r failed", store)

    def __repr__(self) -> str:
        return f"StaticLifetime({'closed' if self._closed else 'open'})"
