"""``GlobusStore``: objects moved between sites by Globus transfers.

A user with data on two or more Globus-connected sites proxies an object at site A and resolves
it at site B. The store is a :class:`~proxystore.store.base.Store` over a
:class:`~proxystore.store.globus.backend.GlobusBackend`, built by its
:class:`~proxystore.store.globus.settings.GlobusSettings` from the package's parts:

* :mod:`proxystore.store.globus.endpoints`: the endpoints, and which one is local;
* ``_keys``: keys that carry their transfer task ids;
* ``_tasks``: submitting and waiting for tasks, and Globus errors;
* :mod:`proxystore.store.file.backend`: the local file I/O.

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

import dataclasses
import os
from typing import TypeVar

from proxystore.store.base import Store, StoreFactory
from proxystore.store.globus._tasks import SyncLevel, TransferClientLike, TransferTasks
from proxystore.store.globus.backend import GlobusBackend
from proxystore.store.globus.endpoints import EndpointsLike, GlobusEndpoint, GlobusEndpoints
from proxystore.store.globus.settings import GlobusSettings
from proxystore.store.layers.base import innermost
from proxystore.store.settings import LayerSettings

__all__ = ["GlobusFactory", "GlobusStore"]

T = TypeVar("T")


class GlobusFactory(StoreFactory[T]):
    """Factory of :class:`GlobusStore` proxies.

    Carries the key (with the ids of the transfer tasks that copy its object) and the store's
    description; in a process without the store it re-creates one at that process's site,
    whose ``get`` waits for the transfer that brings the object there.
    """


class GlobusStore(Store):
    """A store whose objects are files moved between Globus endpoints by transfer tasks.

    Args:
        name: Name of the store.
        endpoints: The endpoints: :class:`~proxystore.store.globus.endpoints.GlobusEndpoints`, a
            list of :class:`~proxystore.store.globus.endpoints.GlobusEndpoint`,
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
            (see :mod:`proxystore.store.layers`): each object is read from the local
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

    factory_class = GlobusFactory

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
        settings = GlobusSettings(
            name,
            endpoints=endpoints,
            polling_interval=polling_interval,
            sync_level=sync_level,
            timeout=timeout,
            cache_size=cache_size,
            transfer_client=transfer_client,
            hostname=hostname,
            layers=LayerSettings(
                host_cache=host_cache,
                host_cache_bytes=host_cache_bytes,
                host_cache_wait=host_cache_wait,
                readonly=readonly,
                signing_key=signing_key,
            ),
        )
        backend, codec = settings.build()
        globus = innermost(backend)
        assert isinstance(globus, GlobusBackend)
        self.endpoints: GlobusEndpoints = settings.endpoint_map
        self.hostname: str = settings.local_hostname()
        self.local_endpoint: GlobusEndpoint = globus.tasks.local_endpoint
        self.local_dir: str = globus.local_dir
        self.tasks: TransferTasks = globus.tasks
        self.transfer_client: TransferClientLike = globus.tasks.client
        super().__init__(
            name, backend, cache_size=settings.cache_size, codec=codec, settings=settings
        )

    @property
    def settings(self) -> GlobusSettings:
        """The store's validated settings (they describe it to other processes)."""
        settings = super().settings
        assert isinstance(settings, GlobusSettings)
        return settings

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
        """Most seconds to wait for one transfer (settable; proxies made later carry it).

        Raises:
            TypeError: If a new value is not a number.
            ValueError: If a new value is not positive.
        """
        return self.tasks.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        # Validated like the constructor's argument; proxies made from now on carry it.
        self.replace_settings(dataclasses.replace(self.settings, timeout=value))
        self.tasks.timeout = value

    def __repr__(self) -> str:
        return (
            f"GlobusStore(name={self.name!r}, local_endpoint={self.local_endpoint.uuid!r}, "
            f"endpoints={len(self.endpoints)})"
        )
