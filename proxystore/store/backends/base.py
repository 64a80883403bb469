"""The byte-level backend protocol, and the base class that gives its optional parts.

A backend moves bytes and nothing else. It puts an object's serialized parts under a key, gets
them back (with the time they were written) in one buffer, tells whether a key exists, evicts a
key, and closes its connections. Everything above the bytes (serialization, the LRU cache,
``strict``, statistics, proxies, batch calls) is the :class:`~proxystore.store.base.Store`'s,
written once for every backend.

A *layer* is an object with this same protocol that wraps another backend (see
:mod:`proxystore.store.layers`): a feature acting on the bytes of every store (timing, a
checksum or signature, a host-local cache, expiry) is written once as a layer.

To write a backend, subclass :class:`BackendBase` and implement :meth:`~Backend.put`,
:meth:`~Backend.get`, :meth:`~Backend.timestamp`, :meth:`~Backend.exists` and
:meth:`~Backend.evict`; see the "Writing a backend" guide in the documentation.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol, Union, runtime_checkable

from proxystore.exceptions import StoreError
from proxystore.serialize import Buffer

__all__ = [
    "POLL_FIRST",
    "POLL_MAX",
    "Backend",
    "BackendBase",
    "Fetched",
    "KeyInfo",
    "Parts",
    "Waiting",
    "announce_key",
    "new_key",
    "poll_exists",
    "wait_for_key",
]

POLL_FIRST = 0.001
"""Seconds of the first pause of :func:`poll_exists` (doubled after each miss)."""

POLL_MAX = 0.05
"""Longest pause of :func:`poll_exists`: a written key is seen at most this late."""

Parts = Sequence[Buffer]
"""The serialized pieces of one object, in order; their concatenation is the object's bytes."""

Fetched = Union[tuple[Buffer, float], None]
"""What :meth:`Backend.get` returns: the bytes and their write time, or ``None`` (missing)."""


class KeyInfo(NamedTuple):
    """One stored object, as :meth:`Backend.scan` lists it."""

    key: str
    """The object's key."""
    size: int
    """Bytes stored (with any layer's additions, such as a signature)."""
    written: float
    """When it was written (seconds since the epoch; a counter for memory backends)."""


def new_key() -> str:
    """Return a new unguessable key (128 random bits, as 32 hex digits)."""
    return secrets.token_hex(16)


@runtime_checkable
class Backend(Protocol):
    """What a :class:`~proxystore.store.base.Store` needs from the place its bytes live.

    Every method may be called from several threads at once. Errors are ProxyStore errors
    (:class:`~proxystore.exceptions.StoreError` and its subclasses) that name the key, the
    store and the address or path; third-party errors are translated at this boundary.
    """

    @property
    def owns_storage(self) -> bool:
        """Whether the storage is the backend's own, so that :meth:`clear` may empty it.

        ``True`` for memory and a store directory; ``False`` for shared servers (Redis, Globus).
        """

    def put(self, key: str | None, parts: Parts) -> str:
        """Store the concatenation of ``parts`` under ``key`` and return the key.

        Args:
            key: The key; replaced atomically if present. ``None`` asks for a new unguessable
                key (most backends use :func:`new_key`; Globus adds transfer task ids).
            parts: The serialized pieces, written without being joined where possible.
        """

    def put_batch(self, items: Sequence[tuple[str | None, Parts]]) -> list[str]:
        """Store several objects (``(key or None, parts)`` pairs); return their keys, in order."""

    def get(self, key: str) -> Fetched:
        """Return the bytes under ``key`` in one buffer and their write time, or ``None``.

        The write time must not be newer than the bytes returned.
        """

    def timestamp(self, key: str) -> float | None:
        """Return when ``key`` was last written (what ``strict`` compares), or ``None``."""

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is present."""

    def exists_batch(self, keys: Sequence[str]) -> list[bool]:
        """Return whether each of ``keys`` is present, in order.

        One round trip where the backend can batch; ``store.proxy_batch(keys=...)`` checks
        its keys this way.
        """

    def evict(self, key: str) -> None:
        """Remove ``key`` (a missing key is not an error)."""

    def is_immutable(self, key: str) -> bool:
        """Return whether the object under ``key`` can never change (``strict`` is moot)."""

    def clear(self) -> None:
        """Remove every object (only when :attr:`owns_storage`; others raise StoreError)."""

    def close(self) -> None:
        """Release connections and threads; objects stay. The backend may be used again."""

    def scan(self) -> Iterator[KeyInfo]:
        """List the stored objects (key, size, write time), in no particular order.

        Optional (used by the ``proxystore`` command-line tool); backends that cannot list
        raise :class:`~proxystore.exceptions.StoreError`.
        """


@runtime_checkable
class Waiting(Protocol):
    """The optional waiting part of a backend (what proxy futures use).

    :class:`BackendBase` gives both methods (polling ``exists``); a backend that can be told
    when a key is written overrides them (Redis blocks on the server, memory on a condition).
    """

    def wait_for(self, key: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``key`` to be written; return whether it was."""

    def announce(self, key: str) -> None:
        """Wake the waiters of ``key``, which was just written (called after ``put``)."""


def poll_exists(backend: Backend, key: str, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``key``, checking ``exists`` with capped backoff.

    The pauses between checks start at :data:`POLL_FIRST` and double up to :data:`POLL_MAX`:
    a few dozen ``exists`` calls a second at most, cheap on a local or shared file system
    (a ``stat``). The generic wait of every backend that has no better one.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    pause = POLL_FIRST
    while True:
        if backend.exists(key):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, POLL_MAX)


def wait_for_key(backend: Backend, key: str, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``key``: the backend's own wait, else polling."""
    if isinstance(backend, Waiting):
        return backend.wait_for(key, timeout)
    return poll_exists(backend, key, timeout)


def announce_key(backend: Backend, key: str) -> None:
    """Tell ``backend``'s waiters that ``key`` was written (no-op if it cannot wait)."""
    if isinstance(backend, Waiting):
        backend.announce(key)


class BackendBase(ABC):
    """Base class of backends: implement five methods, get the optional ones.

    Args:
        store_name: Name of the store using the backend, for error messages.
        store_type: Class name of that store (``"FileStore"``, ...), for error messages.
    """

    owns_storage: bool = False

    def __init__(self, *, store_name: str = "", store_type: str = "") -> None:
        self.store_name = store_name
        self.store_type = store_type or type(self).__name__

    def error(self, message: str) -> StoreError:
        """Return a :class:`StoreError` about this backend's store."""
        return StoreError(message, store_name=self.store_name, store_type=self.store_type)

    @property
    def where(self) -> str:
        """``StoreType 'name'``, how messages name the store."""
        return f"{self.store_type} {self.store_name!r}"

    @abstractmethod
    def put(self, key: str | None, parts: Parts) -> str:
        """See :meth:`Backend.put`."""

    @abstractmethod
    def get(self, key: str) -> Fetched:
        """See :meth:`Backend.get`."""

    @abstractmethod
    def timestamp(self, key: str) -> float | None:
        """See :meth:`Backend.timestamp`."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """See :meth:`Backend.exists`."""

    @abstractmethod
    def evict(self, key: str) -> None:
        """See :meth:`Backend.evict`."""

    def put_batch(self, items: Sequence[tuple[str | None, Parts]]) -> list[str]:
        """One :meth:`put` per item (backends with a cheaper batch override this)."""
        return [self.put(key, parts) for key, parts in items]

    def exists_batch(self, keys: Sequence[str]) -> list[bool]:
        """One :meth:`exists` per key (backends with a cheaper batch override this)."""
        return [self.exists(key) for key in keys]

    def is_immutable(self, key: str) -> bool:
        """Objects may be overwritten under their key: ``False``."""
        return False

    def clear(self) -> None:
        """Refuse: a backend on shared storage cannot tell which objects are its own."""
        raise self.error(
            f"{self.where} cannot clear its objects: its storage is shared, so it cannot tell "
            "which objects are its own. Evict keys one by one (store.evict(key))."
        )

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Nothing to release by default."""

    def wait_for(self, key: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``key`` (see :func:`poll_exists`)."""
        return poll_exists(self, key, timeout)

    def announce(self, key: str) -> None:  # noqa: B027 - optional hook
        """Nothing to wake: waiters poll (backends with a notification override this)."""

    def scan(self) -> Iterator[KeyInfo]:
        """Refuse: this backend cannot list its objects.

        Raises:
            StoreError: Always (backends that can list override this).
        """
        raise self.error(
            f"{self.where} cannot list its objects: its backend ({type(self).__name__}) has no "
            "scan()"
        )
