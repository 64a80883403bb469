"""The rules a :class:`~proxystore.store.backends.file.FileBackend` applies to its directory.

Private by default: a store directory is created ``0700`` and objects ``0600``, whatever the
umask. An existing directory is used only if it is a real directory (not a symbolic link),
owned by the current user, and not writable by group or others (:func:`unsafe_reason`). With
``shared=True`` (a store shared between users on purpose) a directory of another owner that is
writable by its group is accepted; a directory every user may write never is.

Where a directory is (:func:`mount_of`, :func:`is_memory_file_system`) decides zero-copy
mapping and page reuse.

Temporary files (a write in progress) are named ``.tmp-<pid>-<host>-<random>``
(:func:`temp_name`), and files kept for page reuse ``.pool-<pid>-<host>-<random>``
(:func:`pool_name`); those of processes that died are removed when a store opens its
directory (:func:`is_dead_temp`), never those of a running process.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import time

__all__ = [
    "DEAD_WRITER_AGE",
    "FOREIGN_TEMP_AGE",
    "file_system_type",
    "is_dead_temp",
    "is_memory_file_system",
    "mount_of",
    "pool_name",
    "temp_files",
    "temp_name",
    "unsafe_reason",
]

DEAD_WRITER_AGE = 10.0
"""Seconds a temporary file of a dead writer on this host must be unmodified to be removed."""
FOREIGN_TEMP_AGE = 3600.0
"""Seconds a temporary file of another host's writer (or of an unknown name) must be
unmodified to be removed."""

_MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
_TEMP = re.compile(r"\.(?:tmp|pool)-(\d+)-(.+)-[0-9a-f]{16}\Z")


def temp_name(random: str) -> str:
    """Return the name of a temporary file of this process (``random``: 16 hex digits)."""
    return f".tmp-{os.getpid()}-{_HOST}-{random}"


def pool_name(random: str) -> str:
    """Return the name of a file kept for page reuse by this process (see ``file_pool``)."""
    return f".pool-{os.getpid()}-{_HOST}-{random}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    return True


def is_dead_temp(name: str, age: float) -> bool:
    """Return whether the temporary file ``name``, unmodified for ``age`` s, is abandoned.

    It is when its writer was on this host, is no longer running, and the file is at least
    :data:`DEAD_WRITER_AGE` old; or when its writer was on another host (or the name is not
    ours) and the file is at least :data:`FOREIGN_TEMP_AGE` old.
    """
    match = _TEMP.match(name)
    if match is not None and match.group(2) == _HOST:
        pid = int(match.group(1))
        return age >= DEAD_WRITER_AGE and pid != os.getpid() and not _alive(pid)
    return age >= FOREIGN_TEMP_AGE


def temp_files(directory: str, now: float | None = None) -> list[tuple[str, int, float]]:
    """Return ``(name, size, seconds since modified)`` of each temporary file in ``directory``.

    Raises:
        OSError: If the directory cannot be listed.
    """
    now = time.time() if now is None else now
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith((".tmp-", ".pool-")):
                with contextlib.suppress(FileNotFoundError):
                    info = entry.stat(follow_symlinks=False)
                    found.append((entry.name, info.st_size, now - info.st_mtime))
    return found


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
