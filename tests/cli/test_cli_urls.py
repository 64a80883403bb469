"""The ``proxystore`` tool reads store names strictly and prints keys escaped.

A malformed URL, an empty name, ``redis://`` with no host, ``unix://`` with a relative path,
or an unknown scheme is a one-line error naming it (password masked) with exit status 2 and
no traceback, never a default (localhost:6379, the current directory). ``unix:///path`` is
a Redis unix socket. An out-of-range database is reported as such. Keys with newlines,
terminal escapes, backslashes or bytes that are not UTF-8 are printed escaped, so that no key
can forge a line of output, and ``rm`` removes exactly the keys it listed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from proxystore.cli import escape_key, main
from proxystore.store.redis import RedisStore
from tests.support.redis_server import free_port, private_server

ROOT = Path(__file__).resolve().parent.parent.parent


def run_main(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: exit status, standard output, standard error."""
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdin=io.StringIO(), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m proxystore.cli`` in a child process (standard input is not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "proxystore.cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


# A port nothing listens on: a name read as a default or a lenient parse would try to connect
# (and fail with status 1), not exit 2 at once.
PORT = free_port()

BAD = {
    "redis://[::1": "Invalid IPv6 URL",
    "redis://": "needs a host",
    "rediss://": "needs a host",
    "": "no store given",
    "   ": "no store given",
    "unix://relative/x": "absolute socket path",
    "unix://": "needs a socket path",
    f"redis://127.0.0.1:{PORT}/abc": "database must be a number",
    f"redis://127.0.0.1:{PORT}/-1": "database must be a number",
    f"redis://127.0.0.1:{PORT}/0/1": "database must be a number",
    "redis://127.0.0.1:0": "port must be in 1..65535",
    "redis://127.0.0.1:99999": "Port out of range",
    "redis://127.0.0.1:port": "Port could not be cast",
    f"redis://127.0.0.1:{PORT}/0?timeout=1": "unknown query setting 'timeout'",
    f"redis://127.0.0.1:{PORT}/0#x": "fragment",
    "http://example.invalid/x": "unknown scheme http://",
    "file://": "file:///absolute/path",
    "file://host/dir": "file:///absolute/path",
}


@pytest.mark.parametrize("target", sorted(BAD))
def test_a_bad_store_name_is_a_one_line_usage_error(target: str) -> None:
    status, out, err = run_main("ls", target)
    assert status == 2, (status, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("proxystore: error: "), err
    assert BAD[target] in err, err
    if target.strip():
        assert repr(target) in err  # the name, as given (no password here)


def test_no_traceback_and_the_password_is_masked() -> None:
    for target in ("redis://user:hunter2@[::1", f"redis://:hunter2@127.0.0.1:{PORT}/x"):
        result = run("stats", target)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
        assert "user:***@" in result.stderr or ":***@" in result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_directory_whose_name_has_a_scheme_is_reachable_with_dot_slash(tmp_path: Path) -> None:
    (tmp_path / "http:").mkdir(mode=0o700)
    (tmp_path / "http:" / "x").mkdir(mode=0o700)
    refused = subprocess.run(
        [sys.executable, "-m", "proxystore.cli", "ls", "http://x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert refused.returncode == 2 and "unknown scheme" in refused.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "proxystore.cli", "ls", "./http://x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert listed.returncode == 0, listed.stderr
    assert "0 objects" in listed.stdout


def test_out_of_range_database_is_reported_as_such(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    status, _, err = run_main("ls", f"redis://{host}:{port}/99")
    assert status == 1
    assert "db=99" in err and "databases" in err and f"{host}:{port}" in err
    assert "credentials" not in err and "password" not in err


@pytest.mark.timeout(60)
def test_unix_socket_url() -> None:
    with private_server(unix=True) as server:
        assert server.unix_socket is not None
        store = RedisStore(f"cli-unix-{uuid.uuid4().hex[:6]}", unix_socket_path=server.unix_socket)
        try:
            key = store.set(b"over the unix socket", key="unix-key")
            status, out, err = run_main("ls", f"unix://{server.unix_socket}")
            assert status == 0, err
            assert key in out and "1 objects" in out
            status, out, err = run_main("ls", f"unix://{server.unix_socket}?db=1")
            assert status == 0 and "0 objects" in out, err
        finally:
            store.cleanup()


# -- keys printed escaped --------------------------------------------------------------------


def test_escape_key() -> None:
    assert escape_key("plain-key 1") == "plain-key 1"
    assert escape_key("two\nlines") == "two\\nlines"
    assert escape_key("\x1b[2J\x1b[Hclear") == "\\x1b[2J\\x1b[Hclear"
    assert escape_key("back\\slash") == "back\\\\slash"
    assert escape_key("tab\there\r") == "tab\\there\\r"
    assert escape_key("zero\u200bwidth") == "zero\\u200bwidth"
    assert escape_key("not utf-8 \udcff\udc80") == "not utf-8 \\xff\\x80"
    assert escape_key("café ☕") == "café ☕"
    assert escape_key("a\\nb") != escape_key("a\nb")  # unambiguous


def test_redis_keys_are_printed_escaped_and_rm_removes_exactly_them(
    redis_address: tuple[str, int],
) -> None:
    host, port = redis_address
    prefix = f"cli-esc-{uuid.uuid4().hex[:8]}-"
    forged = f"{prefix}a\n{prefix}forged        1 B      0s\n999 objects, 1 TiB"
    keys = [forged, f"{prefix}\x1b[2J\x1b[31mred", f"{prefix}back\\slash", f"{prefix}bin\udcff"]
    store = RedisStore(f"cli-esc-{uuid.uuid4().hex[:6]}", hostname=host, port=port)
    raw: redis.Redis[bytes] = redis.Redis(host=host, port=port)
    try:
        for key in keys:
            store.set(b"x", key=key)
        assert raw.exists(f"{prefix}bin".encode() + b"\xff")  # the key's byte, as given
        url = f"redis://{host}:{port}/0"
        status, out, err = run_main("ls", "--pattern", f"{prefix}*", "--sort", "key", url)
        assert status == 0, err
        lines = out.splitlines()
        assert len(lines) == 1 + len(keys) + 1, out  # header, one line per key, total
        assert lines[-1].startswith(f"{len(keys)} objects")
        assert "\x1b" not in out and "forged" in out
        for key in keys:
            assert escape_key(key) in out
        assert f"{prefix}bin\\xff" in out and f"{prefix}back\\\\slash" in out
        status, out, err = run_main("stats", "--pattern", f"{prefix}*", url)
        assert status == 0 and "\x1b" not in out and len(out.splitlines()) == 6, out
        status, out, err = run_main(
            "rm", "--older-than", "0s", "--yes", "--pattern", f"{prefix}*", url
        )
        assert status == 0, err
        assert f"removed {len(keys)} objects" in out
        assert not any(store.exists(key) for key in keys)
        assert not raw.keys(f"{prefix}*".encode())  # the non-UTF-8 key included
    finally:
        for key in keys:
            store.evict(key)
        store.cleanup()
        raw.close()


def test_file_store_keys_are_printed_escaped(store_factory: Any) -> None:
    store = store_factory("file")
    store.set("x", key="line\n1 objects, 0 B")
    store.set("y", key="bell\x07")
    status, out, err = run_main("ls", store.store_dir)
    assert status == 0, err
    assert out.splitlines()[-1].startswith("2 objects") and len(out.splitlines()) == 4, out
    assert "line\\n1 objects, 0 B" in out and "bell\\x07" in out and "\x07" not in out
