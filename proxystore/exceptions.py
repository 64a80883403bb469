"""Every error ProxyStore raises, under one root.

The tree::

    ProxyStoreError
    ├── SerializationError (also ValueError)       serialize / deserialize failed
    ├── StoreError                                 a store misbehaved or was misused
    │   ├── UnknownStoreError (also ValueError)    init_store got a type it does not know
    │   ├── MissingExtraError (also ImportError)   the store's optional dependency is missing
    │   ├── InvalidKeyError (also ValueError)      a key that the backend cannot hold
    │   ├── ProcessLocalStoreError                 a LocalStore proxy used in another process
    │   ├── StoreConnectionError                   the backend server cannot be reached
    │   ├── StoreTimeoutError (also TimeoutError)  a bounded wait ran out
    │   │   └── FutureTimeoutError (also           a proxy future's result was not set in time
    │   │       concurrent.futures.TimeoutError)
    │   ├── StoreAuthError                         the backend refused our credentials
    │   ├── ForeignValueError                      a value not framed as the store writes them
    │   ├── IntegrityError                         a signed object failed its signature check
    │   └── FutureStateError (also                 a proxy future's result was set already
    │       concurrent.futures.InvalidStateError)
    └── ProxyResolveMissingKey (also KeyError)     a proxy's object is gone from its store

Third-party errors (redis-py, globus-sdk, OS errors) are translated at the backend boundary and
chained with ``raise ... from exc``, so the original is always on ``__cause__``.
"""

from __future__ import annotations

from concurrent.futures import InvalidStateError
from concurrent.futures import TimeoutError as _FuturesTimeoutError
from typing import Any

__all__ = [
    "ForeignValueError",
    "FutureStateError",
    "FutureTimeoutError",
    "IntegrityError",
    "InvalidKeyError",
    "MissingExtraError",
    "ProcessLocalStoreError",
    "ProxyResolveMissingKey",
    "ProxyStoreError",
    "SerializationError",
    "StoreAuthError",
    "StoreConnectionError",
    "StoreError",
    "StoreTimeoutError",
    "UnknownStoreError",
]


class ProxyStoreError(Exception):
    """Root of every error raised by ProxyStore."""


class SerializationError(ProxyStoreError, ValueError):
    """An object could not be serialized, or bytes could not be deserialized."""


class StoreError(ProxyStoreError):
    """A store was misused or its backend failed.

    Attributes:
        store_name: Name of the store involved, when known.
        store_type: Class name of the store involved, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        store_name: str | None = None,
        store_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.store_name = store_name
        self.store_type = store_type

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes do not survive the default exception pickling, and these
        # errors cross process boundaries (a worker's failure re-raised by the client).
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


class UnknownStoreError(StoreError, ValueError):
    """``init_store`` was given a store type it cannot map to a class."""


class MissingExtraError(StoreError, ImportError):
    """A store needs an optional dependency that is not installed.

    Attributes:
        extra: Name of the extra to install (``pip install "proxystore[<extra>]"``).
    """

    def __init__(self, message: str, *, extra: str, store_type: str | None = None) -> None:
        super().__init__(message, store_type=store_type)
        self.extra = extra


class _KeyedStoreError(StoreError):
    """A store error about one key (the ``key`` attribute); the base of the keyed errors."""

    def __init__(
        self,
        message: str,
        *,
        key: str,
        store_name: str | None = None,
        store_type: str | None = None,
    ) -> None:
        super().__init__(message, store_name=store_name, store_type=store_type)
        self.key = key


class InvalidKeyError(_KeyedStoreError, ValueError):
    """A key that the store's backend cannot hold (empty, a path separator, ...).

    Attributes:
        key: The offending key.
    """


class ProcessLocalStoreError(StoreError):
    """A proxy of a process-local store (``LocalStore``) was resolved in another process."""


class StoreConnectionError(StoreError):
    """The store's backend server could not be reached.

    Attributes:
        address: ``host:port`` (or another description) of the server that failed.
    """

    def __init__(
        self,
        message: str,
        *,
        address: str,
        store_name: str | None = None,
        store_type: str | None = None,
    ) -> None:
        super().__init__(message, store_name=store_name, store_type=store_type)
        self.address = address


class StoreTimeoutError(StoreError, TimeoutError):
    """A bounded wait on the store's backend ran out."""


class FutureTimeoutError(StoreTimeoutError, _FuturesTimeoutError):
    """A proxy future's result was not set within the wait's timeout.

    Also a :class:`concurrent.futures.TimeoutError` (the builtin :class:`TimeoutError` from
    Python 3.11 on), which ``concurrent.futures`` raises for the same wait on its futures.

    Attributes:
        key: Key of the future's object.
        waited: Seconds the wait lasted.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str,
        waited: float,
        store_name: str | None = None,
        store_type: str | None = None,
    ) -> None:
        super().__init__(message, store_name=store_name, store_type=store_type)
        self.key = key
        self.waited = waited


class StoreAuthError(StoreError):
    """The backend refused the store's credentials, or there are none to use."""


class ForeignValueError(_KeyedStoreError):
    """A key holds a value this store did not write: its framing is not the store's.

    Another program wrote it, or it was damaged. Nothing of it was deserialized. On a store
    with a ``signing_key`` the signing layer raises :class:`IntegrityError` instead (an object
    without a valid signature), chained from this error.

    Attributes:
        key: The key.
    """


class IntegrityError(_KeyedStoreError):
    """An object of a store with a ``signing_key`` failed its signature check.

    Its bytes were changed (a flipped bit, a replaced object) or written without the store's
    key. Nothing of the object was deserialized.

    Attributes:
        key: Key of the object.
    """


class FutureStateError(_KeyedStoreError, InvalidStateError):
    """A proxy future's result was set already (``set_result`` called a second time).

    Also a :class:`concurrent.futures.InvalidStateError`, which ``concurrent.futures`` raises
    for the same misuse of its futures.

    Attributes:
        key: Key of the future's object.
    """


class ProxyResolveMissingKey(ProxyStoreError, KeyError):
    """A proxy could not resolve because its key is not in its store.

    Attributes:
        key: Key the proxy refers to.
        store_type: Type (class name) of the store the proxy refers to.
        store_name: Name of the store the proxy refers to.
        host: The host that tried to resolve it, when known.
        location: Where it looked (server address, directory), when known.
        detail: A sentence the store adds (a loopback address used on another host), or ``""``.
    """

    def __init__(
        self,
        key: str,
        store_type: str,
        store_name: str,
        host: str | None = None,
        location: str | None = None,
        detail: str = "",
    ) -> None:
        self.key = key
        self.store_type = store_type
        self.store_name = store_name
        self.host = host
        self.location = location
        self.detail = detail
        super().__init__(key, store_type, store_name)

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        on = f" on host {self.host}" if self.host else ""
        detail = f" {self.detail}" if self.detail else ""
        return (
            f"Proxy cannot resolve{on}: key {self.key!r} is not in {self.store_type} "
            f"{self.store_name!r}{where}. The object was most likely evicted (by store.evict(), "
            f"or by a proxy created with evict=True that already resolved), or it was "
            f"written to a different store or backend than this proxy points at.{detail}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.key, self.store_type, self.store_name, self.host, self.location, self.detail),
        )


def _rebuild_error(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error
