"""The rules a :class:`~proxystore.store.backends.file.FileBackend` applies to its directory.

Private by default: a store directory is created ``0700`` and objects ``0600``, whatever the
umask. An existing directory is used only if it is a real directory (not a symbolic link),
owned by the current user, and not writable by group or others (:func:`unsafe_reason`). With
``shared=True`` (a store shared between users on purpose) a directory of another owner that is
writable by its group is accepted; a directory every user may write never is.

Temporary files (a write in progress) are named ``.tmp-<pid>-<host>-<random>``
(:func:`temp_name`); those of writers that died are removed when a store opens its directory
(:func:`is_dead_temp`), never those of a running writer.
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
    "is_dead_temp",
    "temp_files",
    "temp_name",
    "unsafe_reason",
]

DEAD_WRITER_AGE = 10.0
"""Seconds a temporary file of a dead writer on this host must be unmodified to be removed."""
FOREIGN_TEMP_AGE = 3600.0
"""Seconds a temporary file of another host's writer (or of an unknown name) must be
unmodified to be removed."""

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
_TEMP = re.compile(r"\.tmp-(\d+)-(.+)-[0-9a-f]{16}\Z")


def temp_name(random: str) -> str:
    """Return the name of a temporary file of this process (``random``: 16 hex digits)."""
    return f".tmp-{os.getpid()}-{_HOST}-{random}"


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
            if entry.name.startswith(".tmp-"):
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
