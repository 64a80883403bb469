"""FileStore failures: dead writers' temp files, the wrong host, evict errors, bad proxy args."""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxystore.exceptions import StoreError
from proxystore.store.file import FileStore, is_memory_file_system
from proxystore.store.file.directory import (
    DEAD_WRITER_AGE,
    FOREIGN_TEMP_AGE,
    process_tag,
    temp_name,
)

ROOT = Path(__file__).resolve().parent.parent.parent.parent

# The child stops in the middle of writing a large object (after its first megabyte reaches
# the temporary file) and says so; the test then kills it with SIGKILL.
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from proxystore.store.file import FileStore

    store = FileStore("writer", store_dir=sys.argv[1])
    real_writev = os.writev

    def writev_then_stall(fd, views):
        written = 0
        for view in views:
            written += real_writev(fd, [memoryview(view)[: 2**20]])
            if written >= 2**20:
                break
        print("writing", flush=True)
        time.sleep(600)
        return written

    os.writev = writev_then_stall
    store.set(bytes(256 * 2**20))
    """
)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture(params=["disk", "memory"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A directory for a store on disk, or on a memory file system (writers lock temps)."""
    if request.param == "disk":
        yield tmp_path
        return
    if not (os.path.isdir("/dev/shm") and is_memory_file_system("/dev/shm")):
        pytest.skip("/dev/shm is not a memory file system here")
    path = Path(tempfile.mkdtemp(prefix="proxystore-recovery-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_killed_writers_temp_file_is_removed_when_the_next_store_opens(place: Path) -> None:
    directory = place / "store"
    FileStore("owner", store_dir=directory)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "writing"
        temps = [p for p in directory.iterdir() if p.name.startswith(".tmp-")]
        assert len(temps) == 1 and temps[0].stat().st_size >= 2**20
        assert f"-{child.pid}-" in temps[0].name
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stdout is not None
        child.stdout.close()
    FileStore("next", store_dir=directory)  # at once: the name says which process wrote it
    assert not temps[0].exists()
    assert os.listdir(directory) == []


def test_a_running_writers_temp_file_is_never_removed(place: Path) -> None:
    directory = place / "store"
    store = FileStore("owner", store_dir=directory)
    mine = directory / temp_name("0123456789abcdef")  # this process: alive
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = directory / f".tmp-{process_tag(sleeper.pid)}-0123456789abcdef"
        start = int(process_tag(sleeper.pid).split("-")[1][1:])
        # The same process id, started at another time: a dead writer whose id was reused.
        reused = directory / theirs.name.replace(f"-s{start}-", f"-s{start + 1}-")
        foreign_old = directory / ".tmp-123-otherhost-0123456789abcdef"
        foreign_new = directory / ".tmp-124-otherhost-0123456789abcdef"
        for path in (mine, theirs, reused, foreign_old, foreign_new):
            path.write_bytes(b"partial")
            age(path, FOREIGN_TEMP_AGE - 60)
        age(foreign_old, FOREIGN_TEMP_AGE + 60)
        assert store.files.remove_dead_temps() == 2
        assert mine.exists() and theirs.exists() and foreign_new.exists()
        assert not foreign_old.exists() and not reused.exists()
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)
    with open(theirs, "rb") as held:  # the writer (in another pid namespace, say) locks it
        fcntl.flock(held, fcntl.LOCK_EX)
        assert store.files.remove_dead_temps() == 0
        assert theirs.exists()
    assert store.files.remove_dead_temps() == 1  # the sleeper is gone, nothing locks it
    assert not theirs.exists()


def test_a_temp_name_without_a_start_time_waits_for_its_age(tmp_path: Path) -> None:
    """Older names (or a host without /proc) carry no start time: the old rule applies."""
    directory = tmp_path / "store"
    store = FileStore("owner", store_dir=directory)
    sleeper = subprocess.Popen([sys.executable, "-c", "pass"])
    sleeper.wait(timeout=30)
    tag = process_tag(os.getpid())
    host = tag.split("-", 2)[2]
    old = directory / f".tmp-{sleeper.pid}-{host}-0123456789abcdef"
    old.write_bytes(b"partial")
    assert store.files.remove_dead_temps() == 0  # too fresh to be sure
    age(old, DEAD_WRITER_AGE + 1)
    assert store.files.remove_dead_temps() == 1
    assert not old.exists()


RESOLVE = textwrap.dedent(
    """
    import os, pickle, sys
    from proxystore.proxy import extract
    proxy = pickle.loads(sys.stdin.buffer.read())
    try:
        extract(proxy)
    except Exception as exc:
        print(type(exc).__name__)
        print(exc)
    print("exists" if os.path.exists(sys.argv[1]) else "absent")
    """
)


def test_a_missing_directory_on_the_resolving_host_is_an_error_that_says_so(
    store_factory: Any,
) -> None:
    store = store_factory("file")
    proxy = store.proxy([1, 2, 3])
    key = store.set("x")
    directory = store.store_dir
    subprocess.run(["rm", "-rf", directory], check=True)  # "another host": not there
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE, directory],
        input=pickle.dumps(proxy),
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    kind, message, exists = out.splitlines()
    assert kind == "StoreError"
    for part in (repr(socket.gethostname()), directory, store.name, "shared file system"):
        assert part in message
    assert proxy.__factory__.key in message and "evicted" not in message
    assert exists == "absent"  # resolving did not create it
    # in the creating process too: an error, not "evicted"
    store.cache.clear()
    with pytest.raises(StoreError, match="does not exist on host"):
        store.get(key)
    assert not os.path.exists(directory)
    store.set("the creator may write: it makes the directory again")
    assert os.path.isdir(directory)


def test_clear_then_get_is_missing_not_an_error(store_factory: Any) -> None:
    store = store_factory("file")
    key = store.set(1)
    store.clear()
    assert store.get(key) is None and not store.exists(key)
    assert store.get(store.set(2)) == 2


def test_evict_errors_name_the_key_and_path(store_factory: Any) -> None:
    store = store_factory("file")
    key = "a-directory"
    os.mkdir(os.path.join(store.store_dir, key))  # unlink fails: EISDIR
    with pytest.raises(StoreError) as info:
        store.evict(key)
    assert repr(key) in str(info.value) and store.store_dir in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("kind", ["file", "local"])
def test_proxy_with_an_unknown_argument_stores_nothing(store_factory: Any, kind: str) -> None:
    store = store_factory(kind)
    with pytest.raises(TypeError, match="bogus") as info:
        store.proxy([1, 2], bogus=1)
    assert "nothing was stored" in str(info.value)
    assert list(store.backend.scan()) == []
