"""``GlobusSettings``: the arguments of a ``GlobusStore``, validated once, and what they build.

:class:`GlobusSettings` is a frozen dataclass of the store's constructor arguments. Making one
checks every argument (errors name the option and the store); :meth:`GlobusSettings.build`
finds this site's endpoint, logs in to Globus when no transfer client is given, and returns
the :class:`~proxystore.store.globus.backend.GlobusBackend` wrapped in the layers the
settings ask for (:meth:`~proxystore.store.settings.LayerSettings.compose`).

:meth:`~proxystore.store.settings.StoreSettings.kwargs` is the store's description, plain
data: the endpoints as a ``{uuid: {...}}`` dict, never ``hostname`` (a proxy resolved at
another site must find *that* site's endpoint), and the transfer client only when one was
given and it pickles (a client built from this site's saved tokens never travels).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from proxystore.exceptions import StoreAuthError, StoreConnectionError
from proxystore.store.backends.base import Backend
from proxystore.store.codec import Codec
from proxystore.store.globus._tasks import (
    SYNC_LEVELS,
    SyncLevel,
    TransferClientLike,
    TransferTasks,
)
from proxystore.store.globus.backend import GlobusBackend
from proxystore.store.globus.endpoints import (
    HOSTNAME_ENV,
    EndpointsLike,
    GlobusEndpoint,
    GlobusEndpoints,
    as_endpoints,
)
from proxystore.store.globus.tokens import get_transfer_client
from proxystore.store.settings import LayerSettings, StoreSettings

__all__ = ["GlobusSettings"]

_CLIENT_METHODS = ("submit_transfer", "submit_delete", "get_task")


def _pickles(obj: object) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:  # any failure means "does not travel"; the worker logs in itself
        return False
    return True


def _normalized_layers(layers: LayerSettings) -> LayerSettings:
    """The layer settings as the description records them: an absolute directory, bytes."""
    host_cache = layers.host_cache
    if isinstance(host_cache, (str, os.PathLike)):
        host_cache = os.path.abspath(os.fspath(host_cache))
    key = layers.signing_key
    if isinstance(key, bytearray):
        key = bytes(key)
    if host_cache is layers.host_cache and key is layers.signing_key:
        return layers
    return dataclasses.replace(layers, host_cache=host_cache, signing_key=key)


@dataclass(frozen=True, repr=False, kw_only=True)
class GlobusSettings(StoreSettings):
    """The arguments of a :class:`~proxystore.store.globus.store.GlobusStore` (see there).

    ``endpoints`` is kept as :class:`~proxystore.store.globus.endpoints.GlobusEndpoints`
    whatever form it was given in. ``hostname`` and ``transfer_client`` belong to this process
    (its site, its credentials): they do not take part in comparisons, and the description
    leaves ``hostname`` out. The transfer client is never shown in a ``repr``.

    Attributes:
        endpoints: The store's endpoints.
        polling_interval: Seconds between two ``get_task`` calls while waiting for a transfer.
        sync_level: Globus ``sync_level`` of the transfers.
        timeout: Most seconds to wait for one transfer.
        cache_size: Size of the per-process LRU cache of deserialized objects.
        transfer_client: The transfer client, or ``None``: log in from the saved tokens.
        hostname: Host name used to find the local endpoint (``None``: the environment
            variable ``PROXYSTORE_GLOBUS_HOSTNAME``, then :func:`socket.gethostname`).
        layers: The host tier and signing.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range.
    """

    store_type: ClassVar[str] = "GlobusStore"
    endpoints: EndpointsLike
    polling_interval: float = 1
    sync_level: SyncLevel = "mtime"
    timeout: float = 60
    cache_size: int = 16
    transfer_client: TransferClientLike | None = field(default=None, compare=False)
    hostname: str | None = field(default=None, compare=False)
    layers: LayerSettings = field(default_factory=LayerSettings)
    _client_travels: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoints", as_endpoints(self.endpoints))
        for option in ("polling_interval", "timeout"):
            value = getattr(self, option)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(
                    f"{self.where}: {option} must be a number, got {type(value).__name__}"
                )
            if not value > 0:
                raise ValueError(f"{self.where}: {option} must be positive, got {value!r}")
        if self.sync_level not in SYNC_LEVELS:
            raise ValueError(
                f"{self.where}: sync_level must be one of {', '.join(SYNC_LEVELS)}, "
                f"got {self.sync_level!r}"
            )
        if self.hostname is not None and not isinstance(self.hostname, str):
            raise TypeError(
                f"{self.where}: hostname must be a str, got {type(self.hostname).__name__}"
            )
        client = self.transfer_client
        if client is not None:
            missing = [m for m in _CLIENT_METHODS if not callable(getattr(client, m, None))]
            if missing:
                raise TypeError(
                    f"{self.where}: transfer_client must be a globus_sdk.TransferClient or "
                    f"have its methods {', '.join(_CLIENT_METHODS)}; a "
                    f"{type(client).__name__} lacks {', '.join(missing)}"
                )
            object.__setattr__(self, "_client_travels", _pickles(client))
        if not isinstance(self.layers, LayerSettings):
            raise TypeError(
                f"{self.where}: layers must be LayerSettings, got {type(self.layers).__name__}"
            )
        object.__setattr__(self, "layers", _normalized_layers(self.layers))

    @property
    def endpoint_map(self) -> GlobusEndpoints:
        """The endpoints (``endpoints``, typed as what it always is after validation)."""
        return cast(GlobusEndpoints, self.endpoints)

    def local_hostname(self) -> str:
        """This process's host name for endpoint matching (see ``hostname``)."""
        return self.hostname or os.environ.get(HOSTNAME_ENV) or socket.gethostname()

    def local_endpoint(self) -> GlobusEndpoint:
        """The endpoint whose ``host_regex`` matches :meth:`local_hostname`.

        Raises:
            ValueError: If no endpoint matches.
        """
        return self.endpoint_map.get_by_host(self.local_hostname())

    def kwargs(self) -> dict[str, Any]:
        """The description: plain data, without ``hostname`` nor a client that stays here."""
        out = super().kwargs()
        out["endpoints"] = self.endpoint_map.to_dict()
        out.pop("hostname", None)
        if not self._client_travels:
            out.pop("transfer_client", None)
        return out

    def build(self) -> tuple[Backend, Codec]:
        """Find the local endpoint, log in if needed, build the backend and its layers.

        Raises:
            ValueError: If no endpoint matches the host name, or a layer option is invalid.
            StoreAuthError: If there is no transfer client and no saved tokens.
            StoreConnectionError: If Globus Auth cannot be reached to log in.
            StoreError: If the local endpoint's directory or the host cache is unusable.
        """
        local = self.local_endpoint()
        local_dir = os.path.abspath(os.path.expanduser(local.local_path))
        client = self.transfer_client if self.transfer_client is not None else self._login()
        tasks = TransferTasks(
            client,
            self.endpoint_map,
            local,
            polling_interval=self.polling_interval,
            timeout=self.timeout,
            sync_level=self.sync_level,
            store_name=self.name,
            store_type=self.store_type,
        )
        backend = GlobusBackend(tasks, local_dir, store_name=self.name, store_type=self.store_type)
        layered, codec, _ = self.layers.compose(
            backend,
            store_name=self.name,
            store_type=self.store_type,
            location=local_dir,
            store_timeout=self.timeout,
        )
        return layered, codec or Codec()

    def _login(self) -> TransferClientLike:
        try:
            return get_transfer_client()
        except StoreAuthError as exc:
            raise StoreAuthError(
                f"{self.where} cannot log in to Globus: {exc}",
                store_name=self.name,
                store_type=self.store_type,
            ) from exc
        except StoreConnectionError as exc:
            raise StoreConnectionError(
                f"{self.where} cannot log in to Globus: {exc}",
                address=exc.address,
                store_name=self.name,
                store_type=self.store_type,
            ) from exc
