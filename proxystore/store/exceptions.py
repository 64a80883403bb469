"""Exceptions raised by stores.

The classes are defined once, in :mod:`proxystore.exceptions` (which also draws the tree), so
that the low layers (serialization, proxies) can raise them without importing the store package.
This module re-exports them under the name the store API documents.
"""

from __future__ import annotations

from proxystore.exceptions import (
    IntegrityError,
    InvalidKeyError,
    MissingExtraError,
    ProcessLocalStoreError,
    ProxyResolveMissingKey,
    ProxyStoreError,
    SerializationError,
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
    UnknownStoreError,
)

__all__ = [
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
