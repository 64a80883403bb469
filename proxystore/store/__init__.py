"""Object stores and the registry of named stores.

Backends are imported on first use: ``import proxystore.store`` never imports redis or
globus-sdk. The names most code needs are here::

    from proxystore.store import STORES, init_store, get_store

How stores are built (a ``Store`` over a byte-level backend, with layers in between) is in
:mod:`proxystore.store.base`, :mod:`proxystore.store.backends` and
:mod:`proxystore.store.layers`.
"""

from __future__ import annotations

from proxystore.store.base import Store
from proxystore.store.description import StoreDescription
from proxystore.store.registry import (
    STORES,
    get_store,
    init_store,
    register_store,
    registered_stores,
    unregister_store,
)

__all__ = [
    "STORES",
    "Store",
    "StoreDescription",
    "get_store",
    "init_store",
    "register_store",
    "registered_stores",
    "unregister_store",
]
