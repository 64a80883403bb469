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
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol, Union, runtime_checkable

from proxystore.exceptions import StoreError
from proxystore.serialize import Buffer

__all__ = ["Backend", "BackendBase", "Fetched", "KeyInfo", "Parts", "new_key"]

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

    def scan(self) -> Iterator[KeyInfo]:
        """Refuse: this backend cannot list its objects.

        Raises:
            StoreError: Always (backends that can list override this).
        """
        raise self.error(
            f"{self.where} cannot list its objects: its backend ({type(self).__name__}) has no "
            "scan()"
        )
