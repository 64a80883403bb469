"""The files of the host tier: written unnamed and locked, reclaimed when their writer is gone.

A cache file is written into an unnamed ``O_TMPFILE`` that is locked (``flock``, exclusive)
before it gets a temporary name (``.tmpl-...``) and keeps the lock until it is renamed into
place: a temporary file whose lock is free therefore has no live writer, and a writer killed
before naming its file leaves nothing (the kernel frees it). Where ``O_TMPFILE`` or
``/proc/self/fd`` is missing, a named file (``.tmp-<pid>-...``) is made and locked at once;
such a file (or one left by an older version, which never locked it) is a dead writer's when
its lock is free and its process is gone, or it is older than :data:`STALE` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from proxystore.serialize import Buffer

TEMP = ".tmp-"
LINKED = ".tmpl-"
STALE = 10.0
NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)
NO_LINK = (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.EINVAL)
_POLL = (0.001, 0.05)  # first and largest pause between attempts to take a lock


def remove(path: str) -> None:
    """Unlink ``path``; a missing file is not an error."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file of a writer (live or dead)."""
    return name.startswith((TEMP, LINKED))


def open_unnamed(directory: str) -> int | None:
    """An unnamed file in ``directory``, locked exclusively; ``None`` where there are none."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
    except OSError as exc:
        if exc.errno in NO_TMPFILE:
            return None
        raise
    fcntl.flock(fd, fcntl.LOCK_EX)  # a new inode: nobody else can hold it
    return fd


def open_named(directory: str) -> tuple[int, str]:
    """A new named temporary file in ``directory``, locked right after it is made."""
    temp = os.path.join(directory, f"{TEMP}{os.getpid()}-{os.urandom(8).hex()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        remove(temp)
        raise
    return fd, temp


def name_unnamed(directory: str, fd: int) -> str:
    """Give the unnamed file ``fd`` a temporary name in ``directory`` (it stays locked)."""
    name = f"{LINKED}{os.urandom(8).hex()}"
    parent = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:  # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N (a directory fd makes it linkat)
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=parent, follow_symlinks=True)
    finally:
        os.close(parent)
    return os.path.join(directory, name)


def write_all(fd: int, data: Buffer, timestamp: float) -> None:
    """Write ``data`` to ``fd`` and stamp it with ``timestamp`` (the origin's write time)."""
    view = memoryview(data).cast("B")
    while view.nbytes:
        view = view[os.write(fd, view) :]
    os.utime(fd, ns=(time.time_ns(), int(timestamp * 1e9)))


def reclaim(root: str) -> int:
    """Remove dead writers' temporary files in every store directory under ``root``."""
    removed = 0
    try:
        subs = [sub.path for sub in os.scandir(root) if sub.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for sub in subs:
        try:
            names = [entry.name for entry in os.scandir(sub) if is_temp(entry.name)]
        except OSError:
            continue
        removed += sum(remove_dead(os.path.join(sub, name)) for name in names)
    return removed


def remove_dead(path: str) -> bool:
    """Remove the temporary file ``path`` if its writer is gone; whether it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer holds it
        info = os.fstat(fd)
        try:
            named = os.lstat(path)
        except FileNotFoundError:
            return False  # renamed into place meanwhile
        if (named.st_dev, named.st_ino) != (info.st_dev, info.st_ino):
            return False
        if os.path.basename(path).startswith(TEMP) and not _writer_gone(path, info):
            return False
        remove(path)
        return True
    finally:
        os.close(fd)


def _writer_gone(path: str, info: os.stat_result) -> bool:
    """Whether the process named in a ``.tmp-<pid>-...`` file is gone, or the file is stale."""
    if time.time() - info.st_ctime > STALE:
        return True
    try:
        pid = int(os.path.basename(path)[len(TEMP) :].split("-", 1)[0])
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def poll_flock(fd: int, kind: int, wait: float) -> bool:
    """Take ``flock`` ``kind`` on ``fd``, polling for at most ``wait`` s; whether it was taken."""
    deadline = time.monotonic() + wait
    pause = _POLL[0]
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, _POLL[1])
