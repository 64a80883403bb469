"""``FileSettings``: the arguments of a ``FileStore``, validated once, and what they build.

:class:`FileSettings` is a frozen dataclass of the store's constructor arguments. Making one
checks every argument, before anything touches the file system (errors name the option and
the store), and decides, from where ``store_dir`` is, how objects are read: memory-mapped
(zero-copy, on a memory file system), read-only or copy-on-write, and whether the pages of
evicted objects are kept for new ones (page reuse). :meth:`FileSettings.build` then makes the
:class:`~proxystore.store.file.backend.FileBackend` so configured, wrapped in the layers the
settings ask for (:meth:`~proxystore.store.settings.LayerSettings.compose`), and the codec
that fits its reads.

:meth:`FileSettings.kwargs` is the store's description, plain data: an absolute
``store_dir``, the options given, and always ``create_dir=False`` (a store re-created from it
in a worker never creates the directory). Zero-copy and page reuse are decided again by each
process from its own view of the directory.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from proxystore.exceptions import StoreError
from proxystore.store.backends.base import Backend
from proxystore.store.codec import Codec
from proxystore.store.file._pool import DEFAULT_IDLE
from proxystore.store.file.backend import FileBackend
from proxystore.store.file.directory import file_system_type, is_memory_file_system
from proxystore.store.layers.signing import check_signing_key
from proxystore.store.settings import LayerSettings, StoreSettings

__all__ = ["FileSettings"]

_MAX_IDLE = 365 * 86400.0  # a year: beyond it, say "never" with page_pool_bytes=0 instead


@dataclass(frozen=True, repr=False, kw_only=True)
class FileSettings(StoreSettings):
    """The arguments of a :class:`~proxystore.store.file.FileStore` (see there).

    ``store_dir`` is kept absolute. ``create_dir`` belongs to this process (the description
    always says ``False``) and takes no part in comparisons; so does what the settings
    decide from where the directory is (:attr:`on_memory`, :attr:`mapped`).

    Attributes:
        store_dir: The directory of the store's files (absolute).
        cache_size: Size of the per-process LRU cache of deserialized objects.
        zero_copy: Memory-map files (``None``: when ``store_dir`` is on a memory file
            system).
        shared: Accept a group-writable directory of another user; objects ``0640``.
        create_dir: Create ``store_dir`` if it is missing.
        page_pool_bytes: Bound of the pages kept for reuse (``None``: the default; ``0``:
            off).
        page_pool_idle: Seconds without activity after which the kept pages are given back.
        layers: The host tier, ``readonly`` and signing.
        on_memory: Whether ``store_dir`` is on a memory file system (decided, not given).
        mapped: Whether the store memory-maps its files (decided, not given).

    Raises:
        TypeError: If an argument has the wrong type (``cache_size``, ``host_cache_bytes``
            and ``page_pool_bytes`` are ints: ``0.5`` is refused, not taken for ``0``).
        ValueError: If an argument is out of range, ``readonly=True`` without zero-copy or
            host cache, or ``host_cache`` with a ``store_dir`` on a memory file system.
        StoreError: If ``zero_copy=True`` and ``store_dir`` is not on a memory file system.
    """

    store_type: ClassVar[str] = "FileStore"
    store_dir: str | os.PathLike[str]
    cache_size: int = 16
    zero_copy: bool | None = None
    shared: bool = False
    create_dir: bool = field(default=True, compare=False)
    page_pool_bytes: int | None = None
    page_pool_idle: float = DEFAULT_IDLE
    layers: LayerSettings = field(default_factory=LayerSettings)
    on_memory: bool = field(default=False, init=False, repr=False, compare=False)
    mapped: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        store_dir = self.store_dir
        if not isinstance(store_dir, (str, os.PathLike)) or not isinstance(
            os.fspath(store_dir), str
        ):
            raise TypeError(
                f"{self.where}: store_dir must be a str or os.PathLike of str, got {store_dir!r}"
            )
        directory = os.path.abspath(os.fspath(store_dir))
        object.__setattr__(self, "store_dir", directory)
        cache_size = self._whole("cache_size", self.cache_size, least=0, optional=False)
        object.__setattr__(self, "cache_size", cache_size)
        for option in ("shared", "create_dir"):
            self._flag(option, getattr(self, option))
        if self.zero_copy is not None:
            self._flag("zero_copy", self.zero_copy)
        pool_bytes = self._whole("page_pool_bytes", self.page_pool_bytes, least=0, optional=True)
        object.__setattr__(self, "page_pool_bytes", pool_bytes)
        idle = self.page_pool_idle
        if isinstance(idle, bool) or not isinstance(idle, numbers.Real):
            raise TypeError(
                f"{self.where}: page_pool_idle must be a number of seconds, got {idle!r}"
            )
        if not math.isfinite(float(idle)) or not 0 < float(idle) <= _MAX_IDLE:
            raise ValueError(
                f"{self.where}: page_pool_idle must be a finite number of seconds > 0 and "
                f"<= {_MAX_IDLE:g} (a year), got {idle!r}; to keep no pages at all, "
                "pass page_pool_bytes=0"
            )
        object.__setattr__(self, "page_pool_idle", float(idle))
        layers = self.layers
        if not isinstance(layers, LayerSettings):
            raise TypeError(
                f"{self.where}: layers must be LayerSettings, got {type(layers).__name__}"
            )
        self._whole("host_cache_bytes", layers.host_cache_bytes, least=1, optional=True)
        self._flag("readonly", layers.readonly)
        if layers.signing_key is not None:  # checked before anything touches the file system
            check_signing_key(layers.signing_key, self.where)
        on_memory = is_memory_file_system(directory)
        if self.zero_copy and not on_memory:
            kind = file_system_type(directory) or "an unknown file system"
            raise StoreError(
                f"{self.where}: zero_copy=True needs store_dir on a memory file system "
                f"(tmpfs or ramfs, such as /dev/shm), but {directory!r} is on {kind}. "
                "Use a directory under /dev/shm, or leave zero_copy unset.",
                store_name=self.name,
                store_type=self.store_type,
            )
        mapped = on_memory if self.zero_copy is None else self.zero_copy
        if layers.host_cache is not None and mapped:
            raise ValueError(
                f"{self.where}: host_cache= is for a store_dir on a file system shared "
                f"over the network; {directory!r} is on a memory file system, which this host "
                "already maps without a copy"
            )
        if layers.readonly and not mapped and layers.host_cache is None:
            raise ValueError(
                f"{self.where}: readonly=True applies to zero-copy (memory-mapped) reads, "
                f"which are off for {directory!r}"
            )
        object.__setattr__(self, "on_memory", on_memory)
        object.__setattr__(self, "mapped", mapped)

    def _whole(self, option: str, value: object, *, least: int, optional: bool) -> int | None:
        """Refuse an option that must be a whole number of at least ``least``; return an int."""
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                f"{self.where}: {option} must be an int (a number of "
                f"{'bytes' if 'bytes' in option else 'objects'}), got {value!r}"
                + (" (None for the default)" if optional else "")
            )
        if value < least:
            raise ValueError(f"{self.where}: {option} must be >= {least}, got {value!r}")
        return int(value)

    def _flag(self, option: str, value: object) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"{self.where}: {option} must be True or False, got {value!r}")

    @property
    def directory(self) -> str:
        """``store_dir``, typed as what it always is after validation (an absolute path)."""
        return os.fspath(self.store_dir)

    @property
    def readonly(self) -> bool:
        """Read-only arrays (of mappings of the store's files, or of the host cache)."""
        return self.layers.readonly

    def kwargs(self) -> dict[str, Any]:
        """The description: the options given, and ``create_dir=False`` (see the module)."""
        return {**super().kwargs(), "create_dir": False}

    def build(self) -> tuple[Backend, Codec]:
        """Make the backend (and its directory, unless ``create_dir=False``) and its layers.

        Raises:
            StoreError: If ``store_dir`` cannot be created or is not safe to use, or the host
                cache is unusable.
            ValueError: If a host cache option is invalid.
        """
        readonly = self.readonly
        backend = FileBackend(
            self.directory,
            zero_copy=self.mapped,
            readonly=readonly,
            shared=self.shared,
            create=self.create_dir,
            on_memory=self.on_memory,
            page_pool_bytes=self.page_pool_bytes,
            page_pool_idle=self.page_pool_idle,
            store_name=self.name,
            store_type=self.store_type,
        )
        # Without a host tier, readonly is the backend's (its mappings), not a layer's.
        layers = self.layers
        if layers.host_cache is None and layers.readonly:
            layers = dataclasses.replace(layers, readonly=False)
        layered, tier_codec, _ = layers.compose(
            backend,
            store_name=self.name,
            store_type=self.store_type,
            location=self.directory,
        )
        # Copy-on-write arrays are private to each get (never cached); read-only mappings give
        # read-only arrays without a copy.
        codec = Codec(copy_readonly=not readonly, cache_buffers=not (self.mapped and not readonly))
        return layered, tier_codec or codec
