"""ProxyStore: pass-by-reference for distributed Python.

A :class:`~proxystore.proxy.Proxy` is a lazy, transparent stand-in for an object; it travels as
a small :class:`~proxystore.factory.Factory` that fetches the object from a store (process
memory, a shared file system, Redis, Globus) the first time it is used.

Importing this package imports no optional dependency (redis, globus-sdk, dask, parsl).
"""

from __future__ import annotations

from proxystore import exceptions, factory, proxy, serialize, store
from proxystore.exceptions import ProxyStoreError

__all__ = ["ProxyStoreError", "__version__", "exceptions", "factory", "proxy", "serialize", "store"]

__version__ = "0.1.0"
