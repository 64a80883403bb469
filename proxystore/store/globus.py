"""``GlobusStore``: objects moved between sites by Globus transfers.

A user with data on two or more Globus-connected sites proxies an object at site A and resolves
it at site B. The store is a :class:`~proxystore.store.base.Store` over a
:class:`~proxystore.store.backends.globus.GlobusBackend`, built from its parts:

* :mod:`proxystore.store.globus_endpoints`: the endpoints, and which one is local;
* :mod:`proxystore.store.globus_keys`: keys that carry their transfer task ids;
* :mod:`proxystore.store.globus_tasks`: submitting and waiting for tasks, and Globus errors;
* :mod:`proxystore.store.backends.file`: the local file I/O.

Objects under store-made keys are immutable: setting a store-made key again is refused, and
``strict=True`` has nothing to revalidate for them (it warns and is ignored). A *custom* key
(``set(obj, key="results-7")``) is a file name; it cannot carry task ids, so ``set`` with a
custom key waits until every transfer has finished before returning. Custom keys can be
overwritten and ``strict`` works for them: it compares the local file's modification time.

The ``hostname`` argument does not travel with proxies (a proxy resolved elsewhere must find
*that* site's endpoint); the environment variable ``PROXYSTORE_GLOBUS_HOSTNAME`` is the way to
name the site of a process explicitly.
"""

from __future__ import annotations

import os
import pickle
import socket
from typing import Any

from proxystore.exceptions import StoreAuthError, StoreConnectionError
from proxystore.store.backends.globus import GlobusBackend
from proxystore.store.base import Store
from proxystore.store.codec import Codec
from proxystore.store.globus_endpoints import (
    HOSTNAME_ENV,
    EndpointsLike,
    GlobusEndpoint,
    GlobusEndpoints,
    as_endpoints,
)
from proxystore.store.globus_tasks import (
    SYNC_LEVELS,
    SyncLevel,
    TransferClientLike,
    TransferTasks,
)
from proxystore.store.layers.compose import compose_layers

__all__ = [
    "HOSTNAME_ENV",
    "GlobusEndpoint",
    "GlobusEndpoints",
    "GlobusStore",
    "TransferClientLike",
]


def _pickles(obj: object) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:  # any failure means "does not travel"; the worker logs in itself
        return False
    return True


def _login(name: str) -> TransferClientLike:
    from proxystore.store.globus_auth import get_transfer_client

    try:
        return get_transfer_client()
    except StoreAuthError as exc:
        raise StoreAuthError(
            f"GlobusStore {name!r} cannot log in to Globus: {exc}",
            store_name=name,
            store_type="GlobusStore",
        ) from exc
    except StoreConnectionError as exc:
        raise StoreConnectionError(
            f"GlobusStore {name!r} cannot log in to Globus: {exc}",
            address=exc.address,
            store_name=name,
            store_type="GlobusStore",
        ) from exc


class GlobusStore(Store):
    """A store whose objects are files moved between Globus endpoints by transfer tasks.

    Args:
        name: Name of the store.
        endpoints: The endpoints: :class:`GlobusEndpoints`, a list of :class:`GlobusEndpoint`,
            or a dict ``{uuid: {endpoint_path, local_path, host_regex}}``.
        polling_interval: Seconds between two ``get_task`` calls while waiting for a transfer.
        sync_level: Globus ``sync_level`` of the transfers: ``"exists"``, ``"size"``,
            ``"mtime"`` or ``"checksum"``. Overwriting a custom key needs ``"mtime"`` or
            ``"checksum"`` (with ``"exists"`` an existing copy is never replaced).
        timeout: Most seconds to wait for one transfer before raising
            :class:`~proxystore.exceptions.StoreTimeoutError`.
        cache_size: Size of the per-process LRU cache of deserialized objects (``0``: off).
        transfer_client: A ``globus_sdk.TransferClient`` or any object with its
            ``submit_transfer``, ``submit_delete`` and ``get_task`` methods. ``None`` builds a
            client from the refresh tokens saved by ``proxystore-globus-auth login``. An
            injected client travels with proxies only if it pickles (with whatever credentials
            it holds); otherwise the process resolving a proxy logs in from its own tokens.
        hostname: Host name used to find the local endpoint; defaults to the environment
            variable ``PROXYSTORE_GLOBUS_HOSTNAME``, then :func:`socket.gethostname`. Not
            passed on to proxies.
        signing_key: Secret bytes: sign every object (HMAC-SHA256) and verify it before it is
            deserialized (:class:`~proxystore.store.layers.signing.SigningLayer`). Travels with
            proxies like a password.
        host_cache: A directory on a memory file system shared by the processes of this host
            (see :mod:`proxystore.store.layers.compose`): each object is read from the local
            endpoint once per host and mapped from there.
        host_cache_bytes: Bound of the host cache (default: half of its file system).
        host_cache_wait: Seconds a resolver waits for another process of the host that is
            fetching the same key, before fetching it itself (default: ``timeout``).
        readonly: With ``host_cache``, read-only arrays shared by the host.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range or no endpoint matches the host name.
        StoreAuthError: If ``transfer_client`` is ``None`` and there are no saved tokens.
        StoreError: If the local endpoint's directory cannot be created.
    """

    def __init__(
        self,
        name: str,
        *,
        endpoints: EndpointsLike,
        polling_interval: float = 1,
        sync_level: SyncLevel = "mtime",
        timeout: float = 60,
        cache_size: int = 16,
        transfer_client: TransferClientLike | None = None,
        hostname: str | None = None,
        signing_key: bytes | None = None,
        host_cache: str | os.PathLike[str] | None = None,
        host_cache_bytes: int | None = None,
        host_cache_wait: float | None = None,
        readonly: bool = False,
    ) -> None:
        self.endpoints = as_endpoints(endpoints)
        for arg, value in (("polling_interval", polling_interval), ("timeout", timeout)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"GlobusStore {arg} must be a number, got {type(value).__name__}")
            if not value > 0:
                raise ValueError(f"GlobusStore {arg} must be positive, got {value!r}")
        if sync_level not in SYNC_LEVELS:
            raise ValueError(
                f"GlobusStore sync_level must be one of {', '.join(SYNC_LEVELS)}, "
                f"got {sync_level!r}"
            )
        if hostname is not None and not isinstance(hostname, str):
            raise TypeError(f"GlobusStore hostname must be a str, got {type(hostname).__name__}")
        self.hostname = hostname or os.environ.get(HOSTNAME_ENV) or socket.gethostname()
        self.local_endpoint = self.endpoints.get_by_host(self.hostname)
        self.local_dir = os.path.abspath(os.path.expanduser(self.local_endpoint.local_path))
        client = _login(name) if transfer_client is None else transfer_client
        self.transfer_client = client
        self.tasks = TransferTasks(
            client,
            self.endpoints,
            self.local_endpoint,
            polling_interval=polling_interval,
            timeout=timeout,
            sync_level=sync_level,
            store_name=name,
        )
        backend = GlobusBackend(self.tasks, self.local_dir, store_name=name)
        kwargs: dict[str, Any] = {
            "endpoints": self.endpoints.to_dict(),
            "polling_interval": polling_interval,
            "sync_level": sync_level,
            "timeout": timeout,
            "cache_size": cache_size,
        }
        # A client built from this site's tokens never travels; an injected one if it pickles.
        if transfer_client is not None and _pickles(transfer_client):
            kwargs["transfer_client"] = transfer_client
        layered, codec, tier_kwargs = compose_layers(
            backend,
            host_cache=host_cache,
            host_cache_bytes=host_cache_bytes,
            host_cache_wait=host_cache_wait,
            store_timeout=timeout,
            readonly=readonly,
            signing_key=signing_key,
            store_name=name,
            store_type="GlobusStore",
            location=self.local_dir,
        )
        kwargs.update(tier_kwargs)
        super().__init__(
            name, layered, cache_size=cache_size, codec=codec or Codec(), kwargs=kwargs
        )

    @property
    def polling_interval(self) -> float:
        """Seconds between two ``get_task`` calls while waiting for a transfer."""
        return self.tasks.polling_interval

    @property
    def sync_level(self) -> SyncLevel:
        """Globus ``sync_level`` of the transfers."""
        return self.tasks.sync_level

    @property
    def timeout(self) -> float:
        """Most seconds to wait for one transfer (settable)."""
        return self.tasks.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.tasks.timeout = value
        self._kwargs["timeout"] = value
        self._description = None  # proxies made from now on carry the new timeout

    def __repr__(self) -> str:
        return (
            f"GlobusStore(name={self.name!r}, local_endpoint={self.local_endpoint.uuid!r}, "
            f"endpoints={len(self.endpoints)})"
        )
