"""Facts about file systems that the file backend and the host tier both rely on.

Below every store and layer (it imports nothing of ours), so the
:class:`~proxystore.store.layers.host_cache.HostCacheLayer`, which the store base builds
through its settings, and the :mod:`proxystore.store.file` package share one copy of:

* where a path is: :func:`mount_of`, :func:`file_system_type`, :func:`is_memory_file_system`
  (a memory file system, tmpfs or ramfs, is where objects are mapped without a copy);
* whether a directory may hold a store's objects: :func:`unsafe_reason`;
* filling the page table of a writable ``mmap`` without the interpreter lock:
  :func:`populate_mmap`.

The public names are re-exported by :mod:`proxystore.store.file` (and
:mod:`proxystore.store.file.directory`).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import stat

from proxystore.serialize import Buffer

__all__ = [
    "file_system_type",
    "is_memory_file_system",
    "mount_of",
    "populate_mmap",
    "unsafe_reason",
]

_MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+
_LIBC = ctypes.CDLL(None, use_errno=True)  # ctypes calls release the interpreter lock
_LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def unsafe_reason(directory: str, *, shared: bool) -> str | None:
    """Return why ``directory`` must not hold a store, or ``None`` if it may.

    Raises:
        OSError: If it cannot be inspected (``FileNotFoundError`` if missing).
    """
    info = os.lstat(directory)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return (
            f"it is a symbolic link (to {os.readlink(directory)!r}), which someone could have "
            "planted to receive your objects; pass the real directory"
        )
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if mode & 0o002:
        return (
            f"every user may write it (mode {mode:04o}), so anyone could replace your objects "
            "with code your processes would run"
        )
    if shared:
        return None
    if info.st_uid != os.geteuid():
        return (
            f"it is owned by {_owner(info.st_uid)}, not by you ({_owner(os.geteuid())}), and "
            "whoever owns it can read and replace your objects"
        )
    if mode & 0o020:
        return f"its group may write it (mode {mode:04o}), so others could replace your objects"
    return None


def mount_of(path: str) -> tuple[str, list[str]] | None:
    """Return ``(type, options)`` of the mount holding ``path``, e.g. ``("tmpfs", ["rw"])``.

    Read from ``/proc/self/mounts``; ``None`` where that is not available (not Linux).
    """
    try:
        with open("/proc/self/mounts") as mounts:
            entries = [line.split() for line in mounts]
    except OSError:
        return None
    real = os.path.realpath(path)
    best, found = "", None
    for entry in entries:
        if len(entry) < 4:
            continue
        mount_point = entry[1].replace("\\040", " ")
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, found = mount_point, (entry[2], entry[3].split(","))
    return found


def file_system_type(path: str) -> str | None:
    """Return the type of the file system holding ``path`` (``"tmpfs"``, ``"ext4"``, ...)."""
    mount = mount_of(path)
    return None if mount is None else mount[0]


def is_memory_file_system(path: str) -> bool:
    """Return whether ``path`` is on a memory file system (tmpfs or ramfs)."""
    return file_system_type(path) in _MEMORY_FILE_SYSTEMS


def populate_mmap(data: Buffer) -> None:
    """Fill the page table of a view of a writable ``mmap.mmap`` without the interpreter lock.

    ``MADV_POPULATE_READ`` (Linux 5.14+), so a task's first pass over a copy-on-write array
    does not fault every few pages. Anything but a view of a writable ``mmap`` is left alone.
    """
    mapping = data.obj if isinstance(data, memoryview) else None
    if not isinstance(mapping, mmap.mmap):
        return
    try:
        anchor = ctypes.c_char.from_buffer(mapping)
    except (TypeError, ValueError):
        return
    try:
        _LIBC.madvise(
            ctypes.c_void_p(ctypes.addressof(anchor)),
            ctypes.c_size_t(len(mapping)),
            ctypes.c_int(_MADV_POPULATE_READ),
        )  # a kernel without MADV_POPULATE_READ answers EINVAL: nothing lost
    finally:
        del anchor
