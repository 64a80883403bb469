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

import os
from typing import Any, TypeVar

from proxystore.store.backends.base import Fetched
from proxystore.store.base import Store, StoreFactory
from proxystore.store.file._maps import populate
from proxystore.store.file._pool import DEFAULT_IDLE
from proxystore.store.file.backend import FileBackend
from proxystore.store.file.settings import FileSettings
from proxystore.store.layers.base import innermost
from proxystore.store.settings import LayerSettings

__all__ = ["FileFactory", "FileStore"]

T = TypeVar("T")


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
            once per host and mapped from (see :mod:`proxystore.store.layers.compose`).
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

    The arguments are validated once, before anything touches the file system, by the
    store's :class:`~proxystore.store.file.settings.FileSettings` (:attr:`settings`), which
    also decide zero-copy and page reuse and build the backend and its layers.

    Raises:
        StoreError: If ``store_dir`` cannot be created, is not safe to use (a symbolic link,
            owned by another user, writable by others), or ``zero_copy=True`` and it is not on
            a memory file system.
        ValueError: If ``readonly=True`` without zero-copy, ``signing_key`` is too short, or
            a numeric option is out of range (``cache_size`` and ``page_pool_bytes`` ``>= 0``,
            ``host_cache_bytes`` ``>= 1``, ``page_pool_idle`` finite, ``> 0`` and at most a
            year); the message names the option.
        TypeError: If ``signing_key`` is not bytes, a flag (``zero_copy``, ``readonly``,
            ``shared``, ``create_dir``) is not a bool, or a numeric option is not a number of
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
        settings = FileSettings(
            name,
            store_dir=store_dir,
            cache_size=cache_size,
            zero_copy=zero_copy,
            shared=shared,
            create_dir=create_dir,
            page_pool_bytes=page_pool_bytes,
            page_pool_idle=page_pool_idle,
            layers=LayerSettings(
                host_cache=host_cache,
                host_cache_bytes=host_cache_bytes,
                host_cache_wait=host_cache_wait,
                readonly=readonly,
                signing_key=signing_key,
            ),
        )
        backend, codec = settings.build()
        files = innermost(backend)
        assert isinstance(files, FileBackend)
        self.files: FileBackend = files
        self.store_dir: str = settings.directory
        self.shared: bool = settings.shared
        self.zero_copy: bool = settings.mapped
        self.readonly: bool = settings.readonly
        super().__init__(
            name, backend, cache_size=settings.cache_size, codec=codec, settings=settings
        )

    @property
    def settings(self) -> FileSettings:
        """The store's validated settings (they describe it to other processes)."""
        settings = super().settings
        assert isinstance(settings, FileSettings)
        return settings

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
        fetched = None if token is None else token.fetched
        if self.zero_copy and not self.readonly and fetched is not None:
            populate(fetched[0])
        return token

    def __repr__(self) -> str:
        return f"FileStore(name={self.name!r}, store_dir={self.store_dir!r})"
