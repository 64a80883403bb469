"""The rules a :class:`~proxystore.store.file.backend.FileBackend` applies to its directory.

Private by default: a store directory is created ``0700`` and objects ``0600``, whatever the
umask. An existing directory is used only if it is a real directory (not a symbolic link),
owned by the current user, and not writable by group or others (:func:`unsafe_reason`). With
``shared=True`` (a store shared between users on purpose) a directory of another owner that is
writable by its group is accepted; a directory every user may write never is.

Where a directory is (:func:`mount_of`, :func:`is_memory_file_system`) decides zero-copy
mapping and page reuse. On a memory file system a new version of a key is put in place by
:func:`install`, which exchanges it with the old one atomically.

Temporary files (a write in progress, or an evicted object on its way out) are named
``.tmp-<pid>-s<start>-<host>-<random>`` (:func:`temp_name`), and files kept for page reuse
``.pool-<pid>-s<start>-<host>-<random>`` (:func:`pool_name`), where ``<start>`` is the start
time of the process (``/proc/<pid>/stat``). So a store that opens the directory tells a dead
writer of this host from a running one at once, even after its process id was reused
(:func:`is_dead_temp`); a writer also holds an exclusive ``flock`` on a temporary file it is
writing on a memory file system, and a locked file is never removed
(:func:`remove_if_dead`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import re
import socket
import stat
import time

from proxystore.store._filesystem import (
    file_system_type,
    is_memory_file_system,
    mount_of,
    unsafe_reason,
)

__all__ = [
    "DEAD_WRITER_AGE",
    "FOREIGN_TEMP_AGE",
    "file_system_type",
    "install",
    "is_dead_temp",
    "is_memory_file_system",
    "mount_of",
    "pool_name",
    "process_tag",
    "remove_if_dead",
    "temp_files",
    "temp_name",
    "unsafe_reason",
    "write_all",
]

DEAD_WRITER_AGE = 10.0
"""Seconds a temporary file of a dead writer on this host must be unmodified to be removed,
when its name carries no start time (an older name, or no ``/proc``): a name with one is
removed as soon as its writer is gone."""
FOREIGN_TEMP_AGE = 3600.0
"""Seconds a temporary file of another host's writer (or of an unknown name) must be
unmodified to be removed."""

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
_TEMP = re.compile(r"\.(?:tmp|pool)-(\d+)-(?:s(\d+)-)?(.+)-[0-9a-f]{16}\Z")
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_INSTALL_TRIES = 64
_LIBC = ctypes.CDLL(None, use_errno=True)
_RENAMEAT2 = getattr(_LIBC, "renameat2", None)  # glibc 2.28+
if _RENAMEAT2 is not None:
    _RENAMEAT2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]


def _renameat2(source: str, target: str, flags: int) -> int:
    """``renameat2``; 0 or the error number."""
    assert _RENAMEAT2 is not None
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return 0
    return ctypes.get_errno()


def install(source: str, target: str, *, new: bool = False) -> bool:
    """Rename the file ``source`` (a name of this process) to ``target`` (a key) atomically.

    If ``target`` named a regular file, the two are exchanged: ``source`` then names the old
    file, which nobody else names (returns ``True``: the caller pools or deletes it). A
    reader of ``target`` sees the old file or the new one, never neither. Where exchanging is
    not supported, ``target`` is replaced as by :func:`os.replace` (returns ``False``).
    ``new``: ``target`` is most likely missing (a generated key), so try that first.

    Raises:
        OSError: If the rename fails (``FileNotFoundError`` if ``source`` is gone).
    """
    if _RENAMEAT2 is None:
        os.replace(source, target)
        return False
    for attempt in range(_INSTALL_TRIES):
        try:
            info = None if new and attempt == 0 else os.lstat(target)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            break  # a directory or a link: replace, which fails as it should
        if info is not None:
            code = _renameat2(source, target, _RENAME_EXCHANGE)
            if code == 0:
                return True
            if code in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EXDEV):
                break
            if code != errno.ENOENT:
                raise OSError(code, os.strerror(code), target)
            if not os.path.lexists(source):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), source)
            continue  # the key went away meanwhile
        code = _renameat2(source, target, _RENAME_NOREPLACE)
        if code == 0:
            return False
        if code in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EXDEV):
            break
        if code != errno.EEXIST:
            raise OSError(code, os.strerror(code), source)
        # the key was written meanwhile: exchange with that one
    os.replace(source, target)
    return False


def _read_start(pid: int) -> int | None:
    """The start time of a running process (clock ticks since boot), ``None`` if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of proc(5); the first two precede the ")"
    except (OSError, IndexError, ValueError):
        return None


@functools.lru_cache(maxsize=8)
def _own_start(pid: int) -> int | None:
    return _read_start(pid)  # keyed by pid: a forked child looks its own up


def process_tag(pid: int | None = None) -> str:
    """Return ``<pid>-s<start>-<host>`` of a process (this one by default).

    ``-s<start>`` is left out where the start time is unknown (no ``/proc``).
    """
    start = _own_start(os.getpid()) if pid is None else _read_start(pid)
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_HOST}" if start is None else f"{pid}-s{start}-{_HOST}"


def temp_name(random: str) -> str:
    """Return the name of a temporary file of this process (``random``: 16 hex digits)."""
    return f".tmp-{process_tag()}-{random}"


def pool_name(random: str) -> str:
    """Return the name of a file kept for page reuse by this process (see ``_pool``)."""
    return f".pool-{process_tag()}-{random}"


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

    It is when its writer was on this host and is no longer running: its process id is gone,
    or now belongs to a process started at another time than the one in the name (a name
    without a start time must also be :data:`DEAD_WRITER_AGE` old). A file of another host's
    writer (or of an unknown name) is abandoned when at least :data:`FOREIGN_TEMP_AGE` old.
    """
    match = _TEMP.match(name)
    if match is not None and match.group(3) == _HOST:
        pid = int(match.group(1))
        if pid == os.getpid():
            return False
        if match.group(2) is None:
            return age >= DEAD_WRITER_AGE and not _alive(pid)
        start = _read_start(pid)
        return start != int(match.group(2)) and (start is not None or not _alive(pid))
    return age >= FOREIGN_TEMP_AGE


def remove_if_dead(path: str, age: float) -> bool:
    """Remove the temporary file ``path`` if it is abandoned (:func:`is_dead_temp`).

    Never while a writer holds its exclusive lock on it. A file nobody holds a lock on is
    truncated first (its memory returns even where a mapping elsewhere refers to it); one
    that readers still lock (a dead process's pooled file under a live array) is only
    unlinked. Returns whether it was removed.
    """
    if not is_dead_temp(os.path.basename(path), age):
        return False
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False
    try:
        truncate = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return False  # a writer is at work on it
            truncate = False  # readers only: they keep what they map
        info = os.fstat(fd)
        try:
            named = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        if (named.st_dev, named.st_ino) != (info.st_dev, info.st_ino):
            return False
        if truncate and stat.S_ISREG(info.st_mode):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        try:
            os.unlink(path)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


_IOV_MAX = min(getattr(os, "sysconf", lambda _: 1024)("SC_IOV_MAX"), 1024)


def write_all(fd: int, views: list[memoryview], mode: int, *, lock: bool) -> None:
    """Write ``views`` to the new temporary file ``fd`` with ``writev``, stamp it, close it.

    With ``lock``, the file is locked exclusively while it is written (so it is never taken
    for a dead writer's, see :func:`remove_if_dead`). ``views`` is consumed.

    Raises:
        OSError: If writing fails (``fd`` is closed all the same).
    """
    try:
        if lock:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.fchmod(fd, mode)  # whatever the umask
        while views:
            written = os.writev(fd, views[:_IOV_MAX])
            while views and written >= views[0].nbytes:
                written -= views[0].nbytes
                views.pop(0)
            if written:
                views[0] = views[0][written:]
        now = time.time_ns()
        os.utime(fd, ns=(now, now))
    finally:
        os.close(fd)


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
