"""``RemoteStore``: an old name of :class:`~proxystore.store.base.Store`, kept for imports.

Stores whose objects live outside the process (on a server or in files) used to derive from a
``RemoteStore`` class that added the per-process cache and ``strict`` revalidation. Every
store has those now, from :class:`~proxystore.store.base.Store` itself, whatever its backend,
so ``RemoteStore`` is simply another name for ``Store``. A custom store is a ``Store`` over a
backend of its own (see the "Writing a backend" guide).
"""

from __future__ import annotations

from proxystore.store.base import Store

__all__ = ["RemoteStore"]

RemoteStore = Store
"""The same class as :class:`~proxystore.store.base.Store`."""
