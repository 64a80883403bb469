"""Proxy futures: a proxy that can be sent before its object exists.

:meth:`Store.future() <proxystore.store.base.Store.future>` returns a :class:`ProxyFuture`
with a key chosen up front. Its :meth:`~ProxyFuture.proxy` can be handed to a consumer at
once; resolving that proxy waits until a producer (in this process or any other that has the
future, which pickles) calls :meth:`~ProxyFuture.set_result`. :meth:`~ProxyFuture.done` and
:meth:`~ProxyFuture.result` behave as those of :class:`concurrent.futures.Future`.

Every wait is bounded: by the future's ``timeout``, or by :data:`DEFAULT_TIMEOUT` when it is
``None``. A wait that runs out raises :class:`~proxystore.exceptions.FutureTimeoutError` (a
:class:`~proxystore.exceptions.StoreTimeoutError` and a :class:`TimeoutError`) naming the
store, the key and how long it waited.

How a wait waits is the backend's (:class:`~proxystore.store.backends.base.Waiting`, passed
through every layer): a Redis store blocks on the server (``BLMOVE`` on the key's
announcement list), a ``LocalStore`` on a condition; the others (file, Globus) poll
``exists`` with a backoff from 1 ms up to 50 ms (a ``stat`` of a local file each time: a
Globus future's key is a custom key, whose object is in the local endpoint's directory once
the producer's ``set_result`` returns, so there is no transfer task to wait for).
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import socket
import threading
import time
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import proxystore.store._table as _table
from proxystore.exceptions import (
    FutureStateError,
    FutureTimeoutError,
    ProcessLocalStoreError,
    ProxyStoreError,
    StoreError,
)
from proxystore.factory import Factory, run_in_thread
from proxystore.proxy import Proxy
from proxystore.store.backends.base import Backend, announce_key, wait_for_key
from proxystore.store.description import StoreDescription
from proxystore.store.store_factory import StoreFactory

__all__ = ["DEFAULT_TIMEOUT", "Future", "FutureFactory", "ProxyFuture", "check_timeout"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 3600.0
"""Seconds a wait lasts when the future's ``timeout`` is ``None`` (one hour): waits are never
unbounded. Pass a larger ``timeout`` for a producer that may take longer."""


def check_timeout(timeout: object) -> float:
    """Return ``timeout`` as seconds (``None``: :data:`DEFAULT_TIMEOUT`), or raise.

    Raises:
        TypeError: If it is not ``None`` or a number.
        ValueError: If it is negative, or not finite (every wait is bounded).
    """
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"a proxy future's timeout must be seconds or None, got {timeout!r}")
    if not math.isfinite(timeout) or timeout < 0:
        raise ValueError(
            f"a proxy future's timeout must be a finite number of seconds >= 0, got {timeout!r} "
            f"(None waits at most DEFAULT_TIMEOUT = {DEFAULT_TIMEOUT:g} s)"
        )
    return float(timeout)


class FutureStore(Protocol):
    """What a future calls on its store (a :class:`~proxystore.store.base.Store` has it all)."""

    name: str
    backend: Backend
    factory_class: ClassVar[type[StoreFactory[Any]]]
    process_local: ClassVar[bool]

    @property
    def description(self) -> StoreDescription:
        """What re-creates the store in another process."""
        ...

    def set(self, obj: Any, *, key: str | None = ..., serialize: bool = ...) -> str:
        """Store ``obj`` under ``key``."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` is in the store."""
        ...


def wait_until_set(store: FutureStore, key: str, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``key`` to be written to ``store``.

    Raises:
        FutureTimeoutError: If it was not (a ``StoreTimeoutError`` naming the store, the key
            and the seconds waited).
    """
    start = time.monotonic()
    if wait_for_key(store.backend, key, timeout):
        return
    waited = time.monotonic() - start
    kind = type(store).__name__
    raise FutureTimeoutError(
        f"{kind} {store.name!r}: the proxy future of key {key!r} has no result after waiting "
        f"{waited:.3g} s (timeout {timeout:g} s, on host {socket.gethostname()}): no producer "
        "has called set_result() yet, or it failed. Pass a larger timeout to store.future() "
        "or result(timeout=...), or check the producer.",
        key=key,
        waited=waited,
        store_name=store.name,
        store_type=kind,
    )


class FutureFactory(Factory[T]):
    """The factory of a proxy future's proxy: waits for the result, then resolves it.

    It wraps the store's own factory (``store.factory_class``, with its per-store checks and
    messages) and adds the wait; it pickles as small as that factory (key, store description)
    plus the timeout.

    Args:
        inner: The store's factory of the future's key.
        timeout: Most seconds a resolve waits for the result.
    """

    def __init__(self, inner: StoreFactory[T], timeout: float) -> None:
        self.inner = inner
        self.timeout = timeout
        self._future: concurrent.futures.Future[None] | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        """Key of the future's object (``proxystore.proxy.get_key`` reads it)."""
        return self.inner.key

    @property
    def store_name(self) -> str:
        """Name of the store (``proxystore.store.get_store(proxy)`` reads it)."""
        return self.inner.store_name

    @property
    def description(self) -> StoreDescription:
        """The store's description."""
        return self.inner.description

    def _wait(self) -> None:
        store: Any = self.inner.get_store()
        wait_until_set(store, self.inner.key, self.timeout)

    def _wait_then_prefetch(self) -> None:
        self._wait()
        self.inner.resolve_async()

    def resolve(self) -> T:
        """Wait (at most ``timeout`` seconds) until the result is set, then return it.

        Raises:
            FutureTimeoutError: If no result was set in time (a ``StoreTimeoutError``).
            ProxyResolveMissingKey: If it was set and then evicted.
        """
        with self._lock:
            future, self._future = self._future, None
        if future is None:
            self._wait()
        else:
            future.result()
        return self.inner.resolve()

    def resolve_async(self) -> None:
        """Wait for the result and start fetching it, in a background thread."""
        with self._lock:
            if self._future is None:
                self._future = run_in_thread(
                    self._wait_then_prefetch, name=f"proxystore-future-{self.inner.key}"
                )

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["inner"], state["timeout"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"FutureFactory({self.inner!r}, timeout={self.timeout:g})"


class ProxyFuture(Generic[T]):
    """The future object of a key: set it once, wait for it, proxy it before it exists.

    Made by :meth:`Store.future() <proxystore.store.base.Store.future>`. It pickles (to the
    key, the store's description and its settings): a producer process that receives it
    re-creates the store there (once per process, through the registry) and calls
    :meth:`set_result`.

    Args:
        store: The store the result goes to.
        key: The key of the result (chosen up front).
        timeout: Most seconds a wait lasts (``None``: :data:`DEFAULT_TIMEOUT`).
        evict: The proxies of :meth:`proxy` evict the object once resolved.

    Raises:
        TypeError, ValueError: If ``timeout`` is not ``None`` or finite seconds ``>= 0``.
    """

    def __init__(
        self, store: FutureStore, key: str, *, timeout: float | None = None, evict: bool = False
    ) -> None:
        self.key = key
        self.timeout = check_timeout(timeout)
        self.evict = evict
        self.description = store.description
        self._store: FutureStore | None = store
        self._pid = os.getpid() if store.process_local else None
        self._lock = threading.Lock()
        self._set = False

    @property
    def store(self) -> FutureStore:
        """The future's store in this process (re-created from its description if needed).

        Raises:
            ProcessLocalStoreError: If the store is process-local (``LocalStore``) and this
                is another process.
            StoreError: If the store cannot be re-created here (the cause is chained).
        """
        if self._pid is not None and self._pid != os.getpid():
            raise ProcessLocalStoreError(
                f"the proxy future of key {self.key!r} belongs to {self._where()}, which is "
                f"process-local (process {self._pid}, not {os.getpid()}): use a FileStore or "
                "RedisStore for futures shared between processes",
                store_name=self.description.name,
                store_type=self.description.type_name,
            )
        store = self._store
        if store is None:
            try:
                store = self._store = cast(FutureStore, _table.get_or_create(self.description))
            except ProxyStoreError as exc:
                raise StoreError(
                    f"the proxy future of key {self.key!r} cannot re-create {self._where()} "
                    f"in this process (host {socket.gethostname()}): {exc}",
                    store_name=self.description.name,
                    store_type=self.description.type_name,
                ) from exc
        return store

    def _where(self) -> str:
        return f"{self.description.type_name} {self.description.name!r}"

    def done(self) -> bool:
        """Return whether the result has been set (its key is in the store)."""
        return self.store.exists(self.key)

    def set_result(self, obj: Any) -> None:
        """Store ``obj`` as the result and wake every waiter (in any process).

        Raises:
            FutureStateError: If the result was set already (by this future, or found in the
                store: across processes the check and the write are not one atomic step, so
                two producers racing may both succeed, the last write winning).
        """
        store = self.store
        with self._lock:
            if self._set or store.exists(self.key):
                raise FutureStateError(
                    f"the proxy future of key {self.key!r} in {self._where()} has a result "
                    "already: set_result() may be called once (make a new future with "
                    "store.future() for another result)",
                    key=self.key,
                    store_name=self.description.name,
                    store_type=self.description.type_name,
                )
            store.set(obj, key=self.key)
            self._set = True
        announce_key(store.backend, self.key)

    def result(self, timeout: float | None = None) -> T:
        """Wait for the result and return it.

        Args:
            timeout: Most seconds to wait (``None``: the future's ``timeout``).

        Raises:
            FutureTimeoutError: If no result was set in time (a ``StoreTimeoutError`` and a
                ``TimeoutError``).
            ProxyResolveMissingKey: If it was set and then evicted.
        """
        seconds = self.timeout if timeout is None else check_timeout(timeout)
        store = self.store
        inner: StoreFactory[T] = store.factory_class(self.key, self.description)
        return FutureFactory(inner, seconds).resolve()

    def proxy(self) -> Proxy:
        """Return a proxy of the result, usable (and picklable) before the result exists.

        Resolving it waits up to the future's ``timeout`` for :meth:`set_result`.
        """
        store = self.store
        inner: StoreFactory[T] = store.factory_class(self.key, self.description, evict=self.evict)
        return Proxy(FutureFactory(inner, self.timeout))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"], state["_store"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._store = None
        self._lock = threading.Lock()
        self._set = False

    def __repr__(self) -> str:
        return f"ProxyFuture(key={self.key!r}, store={self._where()}, timeout={self.timeout:g})"


Future = ProxyFuture
"""Alias of :class:`ProxyFuture`, the name of upstream ProxyStore's class."""
