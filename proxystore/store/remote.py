"""``RemoteStore``: the name stores over a backend outside the process used to derive from.

Caching and ``strict`` now live in :class:`~proxystore.store.base.Store` itself, for every
backend (see :mod:`proxystore.store.base`), so ``RemoteStore`` is :class:`Store`: a custom
store is a ``Store`` composed with a backend (see the "Writing a backend" guide).
"""

from __future__ import annotations

from proxystore.store.base import Store

__all__ = ["RemoteStore"]

RemoteStore = Store
"""The :class:`~proxystore.store.base.Store` (cache, ``strict``) over a remote backend."""
