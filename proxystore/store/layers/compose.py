"""The layers a store asks for, stacked in one place: the host tier, then signing.

:func:`compose_layers` is what :meth:`LayerSettings.compose
<proxystore.store.settings.LayerSettings.compose>` calls with a store's backend and options
(the settings of every store embed a ``LayerSettings``). ``host_cache=`` (stores whose objects
live off the host: Redis, Globus, a ``FileStore`` on a shared file system) adds the
:class:`~proxystore.store.layers.host_cache.HostCacheLayer` and the codec that rebuilds objects
on its memory mappings; ``signing_key=`` adds the
:class:`~proxystore.store.layers.signing.SigningLayer` outermost, so every process verifies
what it unpickles, wherever the bytes came from (the host cache included).

With the host tier, objects come from mappings of files on a memory file system, exactly as
from a zero-copy ``FileStore``: copy-on-write arrays by default (private to each ``get``, never
cached), or read-only arrays shared by the whole host with ``readonly=True``.
"""

from __future__ import annotations

import math
import os
from typing import Any

from proxystore.store.backends.base import Backend
from proxystore.store.codec import Codec
from proxystore.store.layers.host_cache import (
    DEFAULT_WAIT,
    MAX_WAIT,
    HostCacheLayer,
    check_host_cache_options,
)
from proxystore.store.layers.signing import SigningLayer

__all__ = ["compose_layers"]


def compose_layers(
    backend: Backend,
    *,
    host_cache: str | os.PathLike[str] | None,
    host_cache_bytes: int | None,
    readonly: bool,
    signing_key: bytes | None,
    store_name: str,
    store_type: str,
    location: str,
    host_cache_wait: float | None = None,
    store_timeout: float | None = None,
) -> tuple[Backend, Codec | None, dict[str, Any]]:
    """Wrap ``backend`` in the host tier (``host_cache``) and signing (``signing_key``).

    Args:
        backend: The store's remote backend.
        host_cache: Directory of the host cache on a memory file system, or ``None``.
        host_cache_bytes: Bound of the host cache (``None``: half of its file system).
        readonly: Read-only, host-wide shared arrays instead of copy-on-write ones.
        signing_key: Secret bytes to sign and verify every object with, or ``None``.
        store_name: Name of the store.
        store_type: Class name of the store.
        location: Where the objects live (server address, directory): with the type and name,
            what keeps this store's cached objects apart from other stores'.
        host_cache_wait: Seconds a resolver waits for another process of the host fetching
            the same key before it fetches the object itself (``None``: ``store_timeout``).
        store_timeout: The store's own bound on one operation (Redis' socket timeout, a
            Globus transfer's timeout), the default of ``host_cache_wait``; ``None``:
            :data:`~proxystore.store.layers.host_cache.DEFAULT_WAIT`.

    Returns:
        The backend to use, the codec to use (``None``: the store's default), and the
        constructor arguments to record in the store's description.

    Raises:
        ValueError: If ``host_cache_bytes``, ``host_cache_wait`` or ``readonly`` is given
            without ``host_cache``, or is out of range.
        TypeError: If one of them has the wrong type.
        StoreError: If the host cache directory is unusable (see ``HostCacheLayer``).
    """
    where = f"{store_type} {store_name!r}"
    check_host_cache_options(
        max_bytes=host_cache_bytes, wait=host_cache_wait, readonly=readonly, where=where
    )
    if host_cache is None:
        for option, value in (
            ("host_cache_bytes", host_cache_bytes),
            ("host_cache_wait", host_cache_wait),
        ):
            if value is not None:
                raise ValueError(f"{where}: {option} needs host_cache=")
        if readonly:
            raise ValueError(
                f"{store_type} {store_name!r}: readonly=True applies to objects mapped from the "
                "host cache; give host_cache= (a directory under /dev/shm) too"
            )
        return _signed(backend, signing_key, store_name, store_type, None, {})
    directory = os.path.abspath(os.fspath(host_cache))
    if host_cache_wait is not None:
        wait = float(host_cache_wait)
    elif (
        isinstance(store_timeout, (int, float))
        and math.isfinite(store_timeout)
        and store_timeout > 0
    ):
        wait = min(float(store_timeout), MAX_WAIT)
    else:
        wait = DEFAULT_WAIT
    layer = HostCacheLayer(
        backend,
        directory,
        max_bytes=host_cache_bytes,
        readonly=readonly,
        namespace=f"{store_type}:{store_name}:{location}",
        store_name=store_name,
        store_type=store_type,
        wait=wait,
    )
    kwargs: dict[str, Any] = {"host_cache": directory}
    if host_cache_bytes is not None:
        kwargs["host_cache_bytes"] = host_cache_bytes
    if host_cache_wait is not None:
        kwargs["host_cache_wait"] = host_cache_wait
    if readonly:
        kwargs["readonly"] = True
    codec = Codec(copy_readonly=not readonly, cache_buffers=readonly)
    return _signed(layer, signing_key, store_name, store_type, codec, kwargs)


def _signed(
    backend: Backend,
    signing_key: bytes | None,
    store_name: str,
    store_type: str,
    codec: Codec | None,
    kwargs: dict[str, Any],
) -> tuple[Backend, Codec | None, dict[str, Any]]:
    if signing_key is None:
        return backend, codec, kwargs
    layer = SigningLayer(backend, signing_key, store_name=store_name, store_type=store_type)
    return layer, codec, {**kwargs, "signing_key": bytes(signing_key)}
