r"""``proxystore``: list, measure and clean up a store's objects from the command line.

For the cases where objects leak (a client that died before evicting, proxies never
resolved)::

    proxystore ls /dev/shm/ps                       # key, size, age of every object
    proxystore stats redis://:PASSWORD@host:6379/0  # count, total size, oldest, ...
    proxystore rm --older-than 1h /dev/shm/ps       # asks first; --yes to skip the question

A store is named as for ``init_store``: a ``FileStore`` directory (or ``file:///path``), or a
Redis URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, or
``unix:///path/to/redis.sock[?db=N]`` for a unix socket. The password may instead come from
the ``REDISCLI_AUTH`` environment variable, which keeps it out of the process list. URLs are
read strictly: a URL with no host (``redis://``), a bad port or database, ``unix://`` with a
relative path, an unknown ``scheme://`` or an empty name is refused with a one-line error and
exit status 2, never read as a default (the password is masked in the message). A directory is
checked as a ``FileStore`` checks it (``--shared`` for a store shared between users on
purpose), and opening it removes the temporary files of writers that died, as opening any
``FileStore`` does.

Keys are printed escaped, so that no key can forge a line of output or send a terminal
escape: control characters, backslashes and other unprintable characters appear as Python
writes them in a string (``\n``, ``\t``, ``\x1b``, ``\\``, ``\u200b``), and the bytes of a
Redis key that are not UTF-8 as ``\xNN``. A printable key is printed as it is.

``rm`` never removes anything without a confirmation: it asks on a terminal, and refuses when
standard input is not one, unless ``--yes`` is given. Long operations show their progress on
standard error.

The package also holds the ``proxystore-globus-auth`` program, which logs in to Globus for the
``GlobusStore`` (:mod:`proxystore.cli.globus_login`). ``python -m proxystore.cli`` runs
``proxystore``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TextIO
from urllib.parse import unquote, urlsplit

from proxystore.exceptions import ProxyStoreError, StoreError
from proxystore.store.backends.base import Backend, KeyInfo
from proxystore.store.file.backend import FileBackend

__all__ = [
    "BadTarget",
    "escape_key",
    "format_age",
    "format_size",
    "main",
    "open_backend",
    "parse_age",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*\Z")


def parse_age(text: str) -> float:
    """Parse an age such as ``90``, ``90s``, ``15m``, ``1.5h``, ``2d`` or ``1w`` into seconds.

    Raises:
        argparse.ArgumentTypeError: If ``text`` is not such an age.
    """
    match = _AGE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid age {text!r}: use a number with an optional unit s, m, h, d or w "
            "(e.g. 30m, 1h, 2d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def format_age(seconds: float) -> str:
    """Return a short human age (``"45s"``, ``"3m"``, ``"2h05m"``, ``"4d03h"``; ``"?"``: none)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def format_size(size: float) -> str:
    """Return a human size in powers of 1024 (``"512 B"``, ``"1.5 MiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class BadTarget(ValueError):
    """The store named on the command line is not a valid directory name or URL."""


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _masked(url: str) -> str:
    """``url`` with any password replaced by ``***`` (and escaped), for a message."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        url = f"{scheme}://{userinfo}@{host}"
    return escape_key(url)


def open_backend(target: str, *, shared: bool = False) -> Backend:
    """Return the backend of the store named by ``target`` (a directory or a Redis URL).

    Never creates a directory, and never reads a malformed or empty name as a default.

    Raises:
        BadTarget: If ``target`` is empty, a malformed Redis URL, or has an unknown scheme.
        StoreError: If the directory is not safe to use, or the server does not answer.
        MissingExtraError: For a Redis URL when ``redis`` is not installed.
    """
    if not target.strip():
        raise BadTarget(
            "no store given: name a FileStore directory (use '.' for the current one) or a "
            "Redis URL (redis://host:port/db, rediss://..., unix:///path/to/redis.sock)"
        )
    match = _SCHEME.match(target)
    scheme = match.group(1).lower() if match else ""
    if scheme in _REDIS_SCHEMES:
        return _open_redis(target)
    if scheme == "file":
        try:
            parts = urlsplit(target)
        except ValueError:
            parts = None
        if parts is None or parts.netloc not in ("", "localhost") or not parts.path:
            raise BadTarget(
                f"invalid store {_masked(target)!r}: a file URL is file:///absolute/path"
            )
        target = unquote(parts.path)
    elif scheme:
        raise BadTarget(
            f"invalid store {_masked(target)!r}: unknown scheme {scheme}:// (a store is a "
            "directory, file:///path, redis://, rediss:// or unix://; write ./NAME for a "
            "directory whose name has '://' in it)"
        )
    directory = os.path.abspath(target)
    return FileBackend(directory, shared=shared, create=False, store_name=directory)


def _open_redis(url: str) -> Backend:
    from proxystore.store.registry import resolve_store_class

    resolve_store_class("redis")  # MissingExtraError when redis is not installed
    from proxystore.store.redis import RedisBackend, parse_url

    try:
        settings = parse_url(url)
    except ValueError as exc:
        raise BadTarget(f"invalid store {_masked(url)!r}: {exc}") from None
    host = settings.pop("hostname", "")
    port = settings.pop("port", 0)
    password = settings.pop("password", None) or os.environ.get("REDISCLI_AUTH")
    if password:
        settings["password"] = password
    where = f"unix:{settings['unix_socket_path']}" if not host else f"{host}:{port}"
    try:
        backend = RedisBackend(host, port, options=settings, store_name=where)
    except (TypeError, ValueError) as exc:
        raise BadTarget(f"invalid store {_masked(url)!r}: {exc}") from None
    try:
        backend.ping()
    except BaseException:
        backend.close()
        raise
    return backend


def escape_key(key: str) -> str:
    r"""Return ``key`` as it is safe to print: one line, no terminal escapes, unambiguous.

    A printable key is returned as it is; otherwise backslashes are doubled, control
    characters and other unprintable ones are written as in a Python string (``\n``, ``\x1b``,
    ``\u200b``), and the lone surrogates that stand for the bytes of a Redis key that are not
    UTF-8 as the bytes they stand for (``\xff``).
    """
    if key.isprintable() and "\\" not in key:
        return key
    out = []
    for char in key:
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        elif "\udc80" <= char <= "\udcff":
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(repr(char)[1:-1])
    return "".join(out)


def _one_line(message: str) -> str:
    """``message`` with no control character (messages quote keys and paths with ``repr``)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _scan(backend: Backend, pattern: str) -> Iterator[KeyInfo]:
    redis_backends = sys.modules.get("proxystore.store.redis.backend")  # imported if opened
    if redis_backends is not None and isinstance(backend, redis_backends.RedisBackend):
        from proxystore.store.redis import scan_keys

        return scan_keys(backend, pattern)  # SCAN MATCH: the pattern is applied by Redis
    if pattern != "*":
        import fnmatch

        return (info for info in backend.scan() if fnmatch.fnmatchcase(info.key, pattern))
    return backend.scan()


class _Progress:
    """Progress on standard error: a rewritten line on a terminal, else a line now and then."""

    def __init__(self, verb: str, stream: TextIO, total: int | None = None) -> None:
        self.verb = verb
        self.stream = stream
        self.total = total
        self.tty = stream.isatty()
        self.count = 0
        self.shown = time.monotonic()
        self.started = self.shown

    def step(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.shown >= (0.2 if self.tty else 5.0):
            self.shown = now
            self._show("\r" if self.tty else "", "" if self.tty else "\n")

    def _show(self, start: str, end: str) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        self.stream.write(f"{start}{self.verb} {self.count}{of} objects...{end}")
        self.stream.flush()

    def done(self) -> None:
        if time.monotonic() - self.started >= (0.2 if self.tty else 5.0):
            self._show("\r" if self.tty else "", "\n")


def _collect(backend: Backend, pattern: str, stderr: TextIO) -> list[KeyInfo]:
    progress = _Progress("scanned", stderr)
    found = []
    for info in _scan(backend, pattern):
        found.append(info)
        progress.step()
    progress.done()
    return found


def _describe(backend: Backend) -> str:
    if isinstance(backend, FileBackend):
        return f"directory {backend.directory!r} on host {socket.gethostname()!r}"
    return repr(backend)


def _ls(backend: Backend, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    now = time.time()
    found = [
        info
        for info in _collect(backend, args.pattern, err)
        if args.older_than is None or now - info.written >= args.older_than
    ]
    order = {"age": lambda i: i.written, "size": lambda i: -i.size, "key": lambda i: i.key}
    found.sort(key=order[args.sort])
    shown = [escape_key(info.key) for info in found]
    width = max([len(key) for key in shown] + [3])
    out.write(f"{'KEY':<{width}}  {'SIZE':>10}  {'AGE':>7}\n")
    for info, key in zip(found, shown):
        size = str(info.size) if args.bytes else format_size(info.size)
        out.write(f"{key:<{width}}  {size:>10}  {format_age(now - info.written):>7}\n")
    total = sum(info.size for info in found)
    out.write(f"{len(found)} objects, {format_size(total)}\n")
    return 0


def _stats(backend: Backend, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    now = time.time()
    found = _collect(backend, args.pattern, err)
    rows = [("store", _describe(backend)), ("objects", str(len(found)))]
    total = sum(info.size for info in found)
    rows.append(("total size", format_size(total)))
    if found:
        largest = max(found, key=lambda i: i.size)
        oldest = min(found, key=lambda i: i.written)
        newest = max(found, key=lambda i: i.written)
        rows.append(("largest", f"{format_size(largest.size)} ({escape_key(largest.key)})"))
        rows.append(("oldest", f"{format_age(now - oldest.written)} ({escape_key(oldest.key)})"))
        rows.append(("newest", f"{format_age(now - newest.written)} ({escape_key(newest.key)})"))
    if isinstance(backend, FileBackend):
        temps = backend.temp_files()
        size = sum(size for _, size, _ in temps)
        rows.append(("temporary files", f"{len(temps)}, {format_size(size)} (writes under way)"))
        usage = shutil.disk_usage(backend.directory)
        rows.append(("free space", f"{format_size(usage.free)} of {format_size(usage.total)}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out.write(f"{name + ':':<{width + 1}}  {value}\n")
    return 0


def _confirm(count: int, size: int, what: str, stdin: TextIO, err: TextIO) -> bool:
    if not stdin.isatty():
        err.write(
            f"proxystore: not removing {count} objects ({format_size(size)}) from {what}: "
            "standard input is not a terminal, so there is no one to confirm. Pass --yes to "
            "remove them.\n"
        )
        return False
    err.write(f"Remove {count} objects ({format_size(size)}) from {what}? [y/N] ")
    err.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def _rm(backend: Backend, args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    now = time.time()
    doomed = [
        info
        for info in _collect(backend, args.pattern, err)
        if now - info.written >= args.older_than
    ]
    size = sum(info.size for info in doomed)
    what = f"{_describe(backend)} older than {format_age(args.older_than)}"
    if not doomed:
        out.write(f"nothing to remove: no object in {what}\n")
        return 0
    if not args.yes and not _confirm(len(doomed), size, what, stdin, err):
        return 2
    progress = _Progress("removed", err, total=len(doomed))
    failed = 0
    for info in doomed:
        try:
            backend.evict(info.key)
        except StoreError as exc:
            failed += 1
            err.write(f"proxystore: {_one_line(str(exc))}\n")
        progress.step()
    progress.done()
    out.write(f"removed {len(doomed) - failed} objects ({format_size(size)}) from {what}\n")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxystore",
        description="List, measure and clean up the objects of a ProxyStore store.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    target_help = (
        "a FileStore directory, or a Redis URL: redis://[[user]:password@]host[:port][/db], "
        "rediss://... (TLS) or unix:///path/to/redis.sock[?db=N]"
    )

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("store", help=target_help)
        sub.add_argument("--pattern", default="*", help="only keys matching this glob")
        sub.add_argument(
            "--shared", action="store_true", help="the directory is shared between users"
        )

    ls = commands.add_parser("ls", help="list the objects: key, size, age")
    common(ls)
    ls.add_argument("--older-than", type=parse_age, help="only objects older than this age")
    ls.add_argument("--sort", choices=("age", "size", "key"), default="age")
    ls.add_argument("--bytes", action="store_true", help="sizes in bytes")
    stats = commands.add_parser("stats", help="count, total size, oldest and largest objects")
    common(stats)
    rm = commands.add_parser("rm", help="remove objects older than an age")
    common(rm)
    rm.add_argument("--older-than", type=parse_age, required=True, help="age, e.g. 30m, 1h, 2d")
    rm.add_argument("--yes", "-y", action="store_true", help="remove without asking")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command line; return the exit status.

    0: done; 1: the store failed (unreachable, refused, unsafe directory, ...); 2: a usage
    error (bad arguments, a malformed store URL) or a removal not confirmed.
    """
    out, err, inp = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    args = _parser().parse_args(argv)
    try:
        try:
            backend = open_backend(args.store, shared=args.shared)
        except BadTarget as exc:
            err.write(f"proxystore: error: {_one_line(str(exc))}\n")
            return 2
        try:
            if args.command == "ls":
                return _ls(backend, args, out, err)
            if args.command == "stats":
                return _stats(backend, args, out, err)
            return _rm(backend, args, out, err, inp)
        finally:
            backend.close()
    except ProxyStoreError as exc:
        err.write(f"proxystore: error: {_one_line(str(exc))}\n")
        return 1
    except KeyboardInterrupt:
        err.write("\nproxystore: interrupted\n")
        return 130
