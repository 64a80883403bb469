"""The File store: one file per key in a directory every process that uses it sees.

Every part of the store is in this package:

* :mod:`~proxystore.store.file.store`: :class:`FileStore` and its :class:`FileFactory`;
* :mod:`~proxystore.store.file.settings`: :class:`FileSettings`, its arguments validated
  once, which decide zero-copy, read-only mappings and page reuse and build the backend and
  its layers;
* :mod:`~proxystore.store.file.backend`: the byte-level
  :class:`~proxystore.store.file.backend.FileBackend` (atomic writes, write times, reads into
  one buffer or memory mappings);
* :mod:`~proxystore.store.file.directory`: the rules for the directory (private, never a
  link or a directory others may write), where it is
  (:func:`~proxystore.store.file.directory.mount_of`,
  :func:`~proxystore.store.file.directory.file_system_type`,
  :func:`~proxystore.store.file.directory.is_memory_file_system`), temporary files and
  installing a new version of a key;
* ``_maps`` (the readers' locked and parked mappings) and ``_pool`` (the writer's pool of
  evicted files whose pages new objects are written into), private: page reuse on a memory
  file system (see "Page reuse" in the FileStore docs).

``FileStore`` and ``FileFactory`` are named by this package (``proxystore.store.file:FileStore``,
the registry's ``STORES.FILE``): descriptions and pickled factories keep that path wherever
the code of the class lives.
"""

from __future__ import annotations

from proxystore.store.file.backend import FileBackend
from proxystore.store.file.directory import file_system_type, is_memory_file_system, mount_of
from proxystore.store.file.settings import FileSettings
from proxystore.store.file.store import FileFactory, FileStore

__all__ = [
    "FileBackend",
    "FileFactory",
    "FileSettings",
    "FileStore",
    "file_system_type",
    "is_memory_file_system",
    "mount_of",
]

# The public path of the store (its description's type path, its factory's pickle), as
# httpx names its public classes by the package that exports them.
FileStore.__module__ = __name__
FileFactory.__module__ = __name__
