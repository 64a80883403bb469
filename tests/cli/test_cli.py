"""The ``proxystore`` command-line tool: ls, stats and rm on a FileStore and a RedisStore."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from proxystore.cli import format_age, format_size, parse_age

ROOT = Path(__file__).resolve().parent.parent.parent


def run(*args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """Run ``python -m proxystore.cli`` (standard input is not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "proxystore.cli", *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_ages_and_sizes() -> None:
    assert parse_age("90") == 90 and parse_age("15m") == 900 and parse_age("1.5h") == 5400
    assert parse_age("2d") == 172800 and parse_age("1w") == 604800
    with pytest.raises(Exception, match="invalid age"):
        parse_age("soon")
    assert format_age(42) == "42s" and format_age(3 * 3600 + 300) == "3h05m"
    assert format_size(512) == "512 B" and format_size(1.5 * 2**20) == "1.5 MiB"


def test_ls_stats_rm_on_a_file_store(store_factory: Any) -> None:
    store = store_factory("file")
    old = [store.set(bytes(1000 * (i + 1))) for i in range(3)]
    new = [store.set("fresh") for _ in range(2)]
    for key in old:
        then = time.time() - 7200
        os.utime(os.path.join(store.store_dir, key), (then, then))

    listed = run("ls", store.store_dir)
    assert listed.returncode == 0, listed.stderr
    for key in old + new:
        assert key in listed.stdout
    assert "5 objects" in listed.stdout and "2h00m" in listed.stdout
    only_old = run("ls", "--older-than", "1h", store.store_dir)
    assert all(key in only_old.stdout for key in old)
    assert not any(key in only_old.stdout for key in new)

    stats = run("stats", store.store_dir)
    assert stats.returncode == 0, stats.stderr
    assert "objects:" in stats.stdout and " 5\n" in stats.stdout
    assert "temporary files:" in stats.stdout and old[2] in stats.stdout  # the largest

    refused = run("rm", "--older-than", "1h", store.store_dir)  # stdin is not a terminal
    assert refused.returncode == 2
    assert "--yes" in refused.stderr and "3 objects" in refused.stderr
    assert all(store.exists(key) for key in old + new)

    removed = run("rm", "--older-than", "1h", "--yes", store.store_dir)
    assert removed.returncode == 0, removed.stderr
    assert "removed 3 objects" in removed.stdout
    assert not any(store.exists(key) for key in old)
    assert all(store.exists(key) for key in new)


def test_rm_asks_on_a_terminal(store_factory: Any) -> None:
    import pty

    store = store_factory("file")
    key = store.set("x")
    for answer, kept in ((b"n\n", True), (b"y\n", False)):
        controller, terminal = pty.openpty()
        try:
            os.write(controller, answer)
            result = run("rm", "--older-than", "0s", store.store_dir, stdin=terminal)
        finally:
            os.close(controller)
            os.close(terminal)
        assert "Remove 1 objects" in result.stderr
        assert store.exists(key) is kept


def test_refusals_and_errors(tmp_path: Path) -> None:
    missing = run("ls", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert not (tmp_path / "nope").exists()  # the tool never creates a directory
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    refused = run("stats", str(loose))
    assert refused.returncode == 1 and "every user may write" in refused.stderr
    no_age = run("rm", str(tmp_path))
    assert no_age.returncode == 2 and "--older-than" in no_age.stderr


def test_ls_stats_rm_on_a_redis_store(store_factory: Any, redis_address: Any) -> None:
    store = store_factory("redis")
    prefix = f"cli-{uuid.uuid4().hex[:8]}-"
    keys = [store.set(bytes(100 * (i + 1)), key=f"{prefix}{i}") for i in range(3)]
    other = store.set("not matched")
    host, port = redis_address
    url = f"redis://{host}:{port}/0"
    pattern = ("--pattern", f"{prefix}*")

    listed = run("ls", *pattern, url)
    assert listed.returncode == 0, listed.stderr
    assert all(key in listed.stdout for key in keys) and other not in listed.stdout
    assert "3 objects" in listed.stdout
    everything = run("ls", url)
    assert other in everything.stdout and ":ps-chunks" not in everything.stdout

    stats = run("stats", *pattern, url)
    assert stats.returncode == 0, stats.stderr
    assert f"{host}:{port}" in stats.stdout and keys[2] in stats.stdout

    refused = run("rm", "--older-than", "0s", *pattern, url)
    assert refused.returncode == 2 and all(store.exists(key) for key in keys)
    removed = run("rm", "--older-than", "0s", "--yes", *pattern, url)
    assert removed.returncode == 0, removed.stderr
    assert not any(store.exists(key) for key in keys) and store.exists(other)


def test_redis_errors_name_the_server() -> None:
    from tests.support.redis_server import free_port

    port = free_port()
    result = run("ls", f"redis://127.0.0.1:{port}")
    assert result.returncode == 1 and f"127.0.0.1:{port}" in result.stderr


def test_the_entry_point_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "proxystore"
    if not script.exists():
        pytest.skip("the package is not installed with its scripts here")
    (tmp_path / "s").mkdir(mode=0o700)
    result = subprocess.run(
        [str(script), "ls", str(tmp_path / "s")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "0 objects" in result.stdout
