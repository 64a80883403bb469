"""Store settings: a store's constructor arguments, validated once, as plain data.

Each store type has one settings class (``FileSettings``, ``RedisSettings``,
``GlobusSettings``, ``LocalSettings``), a frozen dataclass whose fields are the store's
constructor arguments besides the name. A store's constructor builds its settings (which
validates every argument once, with errors that name the option and the store), asks them to
:meth:`~StoreSettings.build` the backend and its layers, and records
:meth:`~StoreSettings.kwargs` as its :class:`~proxystore.store.description.StoreDescription`:
the plain data that re-creates the store in another process. No store hand-builds that dict
or writes into the ``Store``'s private attributes.

The layers every remote store offers (the host tier and signing) have one settings class,
:class:`LayerSettings`, which each store's settings embed and which stacks the layers in one
place (:meth:`LayerSettings.compose`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from proxystore.store.backends.base import Backend
from proxystore.store.codec import Codec
from proxystore.store.description import is_secret
from proxystore.store.layers.compose import compose_layers

__all__ = ["LayerSettings", "StoreSettings"]


@dataclass(frozen=True, repr=False)
class LayerSettings:
    """The host tier and signing of a store (see :mod:`proxystore.store.layers.compose`).

    Attributes:
        host_cache: Directory of the host cache on a memory file system, or ``None``.
        host_cache_bytes: Bound of the host cache (``None``: half of its file system).
        host_cache_wait: Seconds a resolver waits for another process of the host fetching
            the same key (``None``: the store's own timeout).
        readonly: Read-only, host-wide shared arrays instead of copy-on-write ones.
        signing_key: Secret bytes to sign and verify every object with, or ``None``.
    """

    host_cache: str | os.PathLike[str] | None = None
    host_cache_bytes: int | None = None
    host_cache_wait: float | None = None
    readonly: bool = False
    signing_key: bytes | None = None

    def __post_init__(self) -> None:
        # As the description records them: an absolute directory, the key as bytes (the
        # options themselves are checked by the layers, see compose()).
        if isinstance(self.host_cache, (str, os.PathLike)):
            object.__setattr__(self, "host_cache", os.path.abspath(os.fspath(self.host_cache)))
        if isinstance(self.signing_key, bytearray):
            object.__setattr__(self, "signing_key", bytes(self.signing_key))

    def compose(
        self,
        backend: Backend,
        *,
        store_name: str,
        store_type: str,
        location: str,
        store_timeout: float | None = None,
    ) -> tuple[Backend, Codec | None, dict[str, Any]]:
        """Wrap ``backend`` in the layers these settings ask for.

        Returns:
            The backend to use, the codec to use (``None``: the store's default) and the
            constructor arguments that re-create these layers (normalized: an absolute
            ``host_cache``, the key as ``bytes``).
        """
        return compose_layers(
            backend,
            host_cache=self.host_cache,
            host_cache_bytes=self.host_cache_bytes,
            host_cache_wait=self.host_cache_wait,
            readonly=self.readonly,
            signing_key=self.signing_key,
            store_name=store_name,
            store_type=store_type,
            location=location,
            store_timeout=store_timeout,
        )

    def __repr__(self) -> str:
        return _repr(self)


@dataclass(frozen=True, repr=False)
class StoreSettings:
    """Base of the settings classes: frozen dataclasses of a store's constructor arguments.

    Subclasses validate their fields in ``__post_init__`` (errors name the option and the
    store, :attr:`where`), and implement :meth:`build`.

    Attributes:
        name: Name of the store the settings are for (the first field of every subclass; not
            one of :meth:`kwargs`).
    """

    store_type: ClassVar[str] = "Store"
    name: str

    def build(self) -> tuple[Backend, Codec]:
        """Build the store's backend, wrapped in its layers, and the codec to use."""
        raise NotImplementedError(f"{type(self).__name__} does not build a backend")

    @property
    def where(self) -> str:
        """``"RedisStore 'name'"``: how errors name the store."""
        return f"{self.store_type} {self.name!r}"

    def kwargs(self) -> dict[str, Any]:
        """The constructor arguments (besides the name) that re-create the store.

        Fields left at their defaults are left out, so a description stays small.
        """
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if item.name == "name" or not item.init:
                continue
            value = getattr(self, item.name)
            if isinstance(value, LayerSettings):
                out.update(_non_default(value))
            elif not _is_default(item, value):
                out[item.name] = value
        return out

    def __repr__(self) -> str:
        return _repr(self)


def _is_default(item: dataclasses.Field[Any], value: Any) -> bool:
    if item.default is not dataclasses.MISSING:
        return bool(value == item.default) and type(value) is type(item.default)
    if item.default_factory is not dataclasses.MISSING:
        return bool(value == item.default_factory())
    return False


def _non_default(settings: Any) -> dict[str, Any]:
    return {
        item.name: getattr(settings, item.name)
        for item in dataclasses.fields(settings)
        if item.init and not _is_default(item, getattr(settings, item.name))
    }


def _repr(settings: Any) -> str:
    shown = ", ".join(
        f"{item.name}={'***' if is_secret(item.name) else repr(getattr(settings, item.name))}"
        for item in dataclasses.fields(settings)
        if item.repr and not _is_default(item, getattr(settings, item.name))
    )
    return f"{type(settings).__name__}({shown})"
