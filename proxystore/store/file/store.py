"""``FileStore``: one file per key in a directory shared by every process that uses it.

A :class:`~proxystore.store.base.Store` over a
:class:`~proxystore.store.file.backend.FileBackend` (see there for the file layout, atomic
writes and write times).

Zero-copy on one machine: when ``store_dir`` is on a memory file system (tmpfs or ramfs, such
as ``/dev/shm``) the store memory-maps each file instead of reading it. Arrays are rebuilt on
the mapping: resolving a 100 MB array costs a ``mmap`` call, not a copy, and every process on
the machine shares the same physical pages. By default the mapping is private (copy-on-write):
a task that writes into its array gets its own copy of the pages it writes, and nobody else
sees the change. With ``readonly=True`` the arrays are read-only instead (writing raises) and,
being immutable, are cached and shared by every ``get`` in the process. Evicting a key while an
array still uses it is safe: the mapping outlives the file name, and the memory returns to the
system when the last array on it is garbage collected. Objects without large buffers (dicts,
strings) are read and cached as usual.

Safety (see the "Security model" page): the directory is private (``0700``, objects ``0600``)
and a directory someone else made, a symbolic link or a directory others may write is refused
(``shared=True`` accepts a group-writable directory shared on purpose). With ``signing_key``
every object is signed and verified before it is deserialized
(:class:`~proxystore.store.layers.signing.SigningLayer`). A store re-created from its
description in another process never creates the directory: a missing directory there is an
error naming the host.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, TypeVar

from proxystore.exceptions import StoreError
from proxystore.store.backends.base import Fetched
from proxystore.store.base import Store, StoreFactory
from proxystore.store.codec import Codec
from proxystore.store.file._maps import populate
from proxystore.store.file._pool import DEFAULT_IDLE, default_limit
from proxystore.store.file.backend import FileBackend
from proxystore.store.file.directory import file_system_type
from proxystore.store.layering import compose_layers
from proxystore.store.layers.signing import check_signing_key

__all__ = ["FileFactory", "FileStore"]

T = TypeVar("T")

_MAX_IDLE = 365 * 86400.0  # a year: beyond it, say "never" with page_pool_bytes=0 instead


def _whole(name: str, option: str, value: object, *, least: int, optional: bool) -> None:
    """Refuse an option that must be a whole number of at least ``least``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"FileStore {name!r}: {option} must be an int (a number of "
            f"{'bytes' if 'bytes' in option else 'objects'}), got {value!r}"
            + (" (None for the default)" if optional else "")
        )
    if value < least:
        raise ValueError(f"FileStore {name!r}: {option} must be >= {least}, got {value!r}")


def _check_options(
    name: str,
    *,
    cache_size: object,
    host_cache_bytes: object,
    page_pool_bytes: object,
    page_pool_idle: object,
) -> None:
    """Refuse a numeric option of the wrong type or out of range, naming it."""
    _whole(name, "cache_size", cache_size, least=0, optional=False)
    _whole(name, "host_cache_bytes", host_cache_bytes, least=1, optional=True)
    _whole(name, "page_pool_bytes", page_pool_bytes, least=0, optional=True)
    if isinstance(page_pool_idle, bool) or not isinstance(page_pool_idle, numbers.Real):
        raise TypeError(
            f"FileStore {name!r}: page_pool_idle must be a number of seconds, "
            f"got {page_pool_idle!r}"
        )
    idle = float(page_pool_idle)
    if not math.isfinite(idle) or not 0 < idle <= _MAX_IDLE:
        raise ValueError(
            f"FileStore {name!r}: page_pool_idle must be a finite number of seconds > 0 and "
            f"<= {_MAX_IDLE:g} (a year), got {page_pool_idle!r}; to keep no pages at all, "
            "pass page_pool_bytes=0"
        )


class FileFactory(StoreFactory[T]):
    """Factory of :class:`FileStore` proxies.

    Carries the key and the store's description; in a process without the store it re-creates
    one on the same directory (never creating it: a directory missing there is an error that
    names the host), then reads or maps the key's file.
    """


class FileStore(Store):
    """A store of files in ``store_dir``, one per key.

    Args:
        name: Name of the store.
        store_dir: Directory for the files; created if missing. Every process that resolves
            this store's proxies must see the same directory (a shared or local file system).
        cache_size: Size of the per-process LRU cache of deserialized objects (``0``: off).
        zero_copy: Memory-map files instead of reading them, so arrays are rebuilt on shared
            pages without a copy. ``None`` (default): on when ``store_dir`` is on a memory file
            system (tmpfs, ramfs). ``True`` insists, and fails if it is not.
        readonly: With zero-copy, give read-only arrays (writing raises) instead of
            copy-on-write ones; read-only objects are cached and shared within a process.
        shared: Share the store between users on purpose: accept a ``store_dir`` owned by
            another user and writable by its group (never one every user may write); objects
            are written ``0640``. Use it with ``signing_key``.
        signing_key: Secret bytes (``secrets.token_bytes(32)``): every object is stored with
            an HMAC-SHA256 and verified before it is deserialized; a mismatch raises
            :class:`~proxystore.exceptions.IntegrityError`. Travels with proxies like a
            password (never shown in a ``repr``).
        create_dir: Create ``store_dir`` if it is missing. Proxies carry ``False``: a store
            re-created in a worker never creates the directory.
        host_cache: For a ``store_dir`` on a network file system: a directory on a memory
            file system shared by the processes of this host, where each object is copied
            once per host and mapped from (see :mod:`proxystore.store.layering`).
        host_cache_bytes: Bound of the host cache (default: half of its file system).
        host_cache_wait: Seconds a resolver waits for another process of the host that is
            fetching the same key, before fetching it itself (default: 60 s).
        page_pool_bytes: On a memory file system, the pages of evicted objects of at least
            1 MiB are kept, up to this many bytes, and new objects are written into them: a
            put then costs a copy, not a page fault per 4 KiB (as Ray's object store keeps
            its memory). ``None`` (default): 1 GiB, at most a quarter of the file system;
            ``0``: off. Kept only by the process that evicted, and never rewritten while any
            process (or forked child) still reads them; see "Page reuse" in the FileStore
            docs.
        page_pool_idle: Seconds without a put or an eviction after which the kept pages are
            given back to the system.

    Raises:
        StoreError: If ``store_dir`` cannot be created, is not safe to use (a symbolic link,
            owned by another user, writable by others), or ``zero_copy=True`` and it is not on
            a memory file system.
        ValueError: If ``readonly=True`` without zero-copy, ``signing_key`` is too short, or
            a numeric option is out of range (``cache_size`` and ``page_pool_bytes`` ``>= 0``,
            ``host_cache_bytes`` ``>= 1``, ``page_pool_idle`` finite, ``> 0`` and at most a
            year); the message names the option.
        TypeError: If ``signing_key`` is not bytes, or a numeric option is not a number of
            the right kind (``cache_size``, ``host_cache_bytes`` and ``page_pool_bytes`` are
            ints: ``0.5`` is refused, not taken for ``0``).
    """

    factory_class = FileFactory

    def __init__(
        self,
        name: str,
        *,
        store_dir: str | os.PathLike[str],
        cache_size: int = 16,
        zero_copy: bool | None = None,
        readonly: bool = False,
        shared: bool = False,
        signing_key: bytes | None = None,
        create_dir: bool = True,
        host_cache: str | os.PathLike[str] | None = None,
        host_cache_bytes: int | None = None,
        host_cache_wait: float | None = None,
        page_pool_bytes: int | None = None,
        page_pool_idle: float = DEFAULT_IDLE,
    ) -> None:
        _check_options(
            name,
            cache_size=cache_size,
            host_cache_bytes=host_cache_bytes,
            page_pool_bytes=page_pool_bytes,
            page_pool_idle=page_pool_idle,
        )
        directory = os.path.abspath(os.fspath(store_dir))
        if signing_key is not None:  # checked before anything touches the file system
            check_signing_key(signing_key, f"FileStore {name!r}")
        backend = FileBackend(
            directory, shared=shared, create=create_dir, store_name=name, store_type="FileStore"
        )
        on_memory = backend.on_memory
        if zero_copy and not on_memory:
            kind = file_system_type(directory) or "an unknown file system"
            raise StoreError(
                f"FileStore {name!r}: zero_copy=True needs store_dir on a memory file system "
                f"(tmpfs or ramfs, such as /dev/shm), but {directory!r} is on {kind}. "
                "Use a directory under /dev/shm, or leave zero_copy unset.",
                store_name=name,
                store_type="FileStore",
            )
        mapped = on_memory if zero_copy is None else zero_copy
        if host_cache is not None and mapped:
            raise ValueError(
                f"FileStore {name!r}: host_cache= is for a store_dir on a file system shared "
                f"over the network; {directory!r} is on a memory file system, which this host "
                "already maps without a copy"
            )
        if readonly and not mapped and host_cache is None:
            raise ValueError(
                f"FileStore {name!r}: readonly=True applies to zero-copy (memory-mapped) reads, "
                f"which are off for {directory!r}"
            )
        backend.zero_copy, backend.readonly = mapped, readonly
        if on_memory:
            limit = default_limit(directory) if page_pool_bytes is None else int(page_pool_bytes)
            backend.reuse_pages(limit=limit, idle=float(page_pool_idle))
        kwargs: dict[str, Any] = {"store_dir": directory, "cache_size": cache_size}
        if zero_copy is not None:
            kwargs["zero_copy"] = zero_copy
        if readonly:
            kwargs["readonly"] = True
        if shared:
            kwargs["shared"] = True
        if page_pool_bytes is not None:
            kwargs["page_pool_bytes"] = int(page_pool_bytes)
        if page_pool_idle != DEFAULT_IDLE:
            kwargs["page_pool_idle"] = float(page_pool_idle)
        kwargs["create_dir"] = False  # a worker never creates the directory
        # Copy-on-write arrays are private to each get (never cached); read-only mappings give
        # read-only arrays without a copy.
        codec = Codec(copy_readonly=not readonly, cache_buffers=not (mapped and not readonly))
        layered, tier_codec, tier_kwargs = compose_layers(
            backend,
            host_cache=host_cache,
            host_cache_bytes=host_cache_bytes,
            host_cache_wait=host_cache_wait,
            readonly=readonly and not mapped,
            signing_key=signing_key,
            store_name=name,
            store_type="FileStore",
            location=directory,
        )
        kwargs.update(tier_kwargs)
        super().__init__(
            name, layered, cache_size=cache_size, codec=tier_codec or codec, kwargs=kwargs
        )
        self.files = backend
        self.store_dir = directory
        self.shared = shared
        self.zero_copy = mapped
        self.readonly = readonly

    def get_bytes_with_timestamp(self, key: str) -> Fetched:
        """Read (or map) the file of ``key``.

        With read-only mappings, first drop cached objects whose file is gone (their mapping
        would keep the file's pages alive).
        """
        if self.readonly:
            for cached in self.cache.cached_keys():
                if not os.path.exists(os.path.join(self.store_dir, cached)):
                    self.cache.evict(cached)
        return super().get_bytes_with_timestamp(key)

    def prefetch(self, key: str, *, strict: bool = False) -> Any:
        """Map the file in the background and populate its page table (no copy).

        With copy-on-write zero-copy, the background half of a resolve also asks the kernel to
        fill the new mapping's page table, so the task's first pass over the array does not
        stop at a page fault every few pages; the task runs meanwhile.
        """
        token = super().prefetch(key, strict=strict)
        if self.zero_copy and not self.readonly and token is not None and token[0] is not None:
            populate(token[0][0])
        return token

    def __repr__(self) -> str:
        return f"FileStore(name={self.name!r}, store_dir={self.store_dir!r})"
