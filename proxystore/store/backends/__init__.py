"""Byte-level backends: where a store's serialized objects live.

This package holds the protocol every backend speaks (:mod:`proxystore.store.backends.base`:
:class:`Backend`, :class:`BackendBase`, ``Fetched``, ``new_key``) and the one backend with no
store package of its own, :mod:`~proxystore.store.backends.memory` (this process's memory, for
``LocalStore``). Every other backend is the ``backend.py`` of its store's package
(``proxystore.store.file.backend``, ``proxystore.store.redis.backend``,
``proxystore.store.globus.backend``), next to the store, its settings and its helpers.

Only the protocol is imported here, so ``import proxystore.store.backends`` stays light.
"""

from __future__ import annotations

from proxystore.store.backends.base import Backend, BackendBase, Fetched, KeyInfo, Parts

__all__ = ["Backend", "BackendBase", "Fetched", "KeyInfo", "Parts"]
