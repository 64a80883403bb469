"""Byte-level backends: where a store's serialized objects live.

One module per backend, all speaking the protocol of :mod:`proxystore.store.backends.base`:

* :mod:`~proxystore.store.backends.memory`: this process's memory;
* :mod:`~proxystore.store.file.backend`: one file per key in a directory;
* :mod:`~proxystore.store.backends.redis`: a Redis server (imports ``redis``);
* :mod:`~proxystore.store.backends.globus`: files moved between Globus endpoints (imports
  ``globus_sdk``).

Only the protocol is imported here, so ``import proxystore.store.backends`` stays light.
"""

from __future__ import annotations

from proxystore.store.backends.base import Backend, BackendBase, Fetched, KeyInfo, Parts

__all__ = ["Backend", "BackendBase", "Fetched", "KeyInfo", "Parts"]
