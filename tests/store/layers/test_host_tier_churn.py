"""Issue 22, host tier: killed and stopped fetchers, a full memory file system, bad options.

Real processes (spawned or ``python -c``), a real Redis server, real tmpfs mounts of a small
size (``private_tmpfs``): nothing is simulated.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxystore.proxy import extract
from proxystore.store import init_store, unregister_store
from proxystore.store.file import FileStore
from proxystore.store.layers.host_cache import DEFAULT_WAIT, HostCacheLayer
from proxystore.store.redis import RedisStore

LOGGER = "proxystore.store.layers.host_cache"


def used(mount: str) -> int:
    """Bytes in use on the file system of ``mount`` (the private tmpfs: ours alone)."""
    info = os.statvfs(mount)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


def cache_entries(root: str) -> list[str]:
    """Every file of the host cache (temporary ones included; lock files left out)."""
    if not os.path.isdir(root):
        return []
    return sorted(
        entry.name
        for sub in os.scandir(root)
        if sub.is_dir()
        for entry in os.scandir(sub.path)
        if entry.is_file()
    )


def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.01)


def tier_store(redis_address: tuple[str, int], root: str, name: str, **options: Any) -> RedisStore:
    host, port = redis_address
    store = init_store("redis", name, hostname=host, port=port, host_cache=root, **options)
    assert isinstance(store, RedisStore)
    return store


@pytest.fixture
def name() -> Iterator[str]:
    made = f"tier-{uuid.uuid4().hex[:8]}"
    yield made
    unregister_store(made)


# -- children ---------------------------------------------------------------------------------


def resolve_sum(proxy: Any) -> float:
    """Run in a spawned process: resolve the proxy (fetching it into the host cache)."""
    return float(np.sum(extract(proxy)))


def hold_fetch_lock(description: Any, key: str, ready: Any) -> None:
    """Run in a spawned process: take the key's host-wide fetch lock, as a fetcher does."""
    layer = description.get_or_create().backend  # the store, as a worker makes it
    assert isinstance(layer, HostCacheLayer)
    layer.prepare()
    fd = layer._lock(key)
    assert fd is not None
    ready.set()
    time.sleep(300)  # stopped by the test meanwhile, then killed


# -- a fetcher killed while it writes the cache file ------------------------------------------


def test_a_fetcher_killed_while_writing_leaves_nothing_behind(
    redis_address: tuple[str, int], private_tmpfs: Any, name: str
) -> None:
    mount = private_tmpfs("400m")
    root = os.path.join(mount, "cache")
    store = tier_store(redis_address, root, name, cache_size=0)
    spawn = multiprocessing.get_context("spawn")
    try:
        array = np.arange(12_500_000, dtype=np.float64)  # 100 MB: a write of tens of ms
        caught = False
        for _ in range(5):  # a loaded machine may let a child finish before it is seen writing
            key = store.set(array)
            proxy = store.proxy(key=key)
            baseline = used(mount)
            child = spawn.Process(target=resolve_sum, args=(proxy,))
            child.start()
            deadline = time.monotonic() + 120
            while child.is_alive() and time.monotonic() < deadline:
                if used(mount) > baseline + 16 * 2**20:  # the cache file is being written
                    break
            if not child.is_alive():
                child.join()
                store.evict(key)
                continue
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=30)
            if key in cache_entries(root):  # finished writing before the kill landed
                store.evict(key)
                continue
            caught = True
            break
        assert caught, "never caught a fetcher in the middle of its write"
        # Nothing of the dead writer's file stays: no temporary file, no memory.
        wait_until(lambda: used(mount) <= baseline + 2**20, 10, "the dead writer's bytes freed")
        assert [e for e in cache_entries(root) if e.startswith(".tmp")] == []
        # The next resolver on the host fetches it, keeps it, and nothing else is there.
        again = tier_store(redis_address, root, name + "-next", cache_size=0)
        try:
            assert float(np.sum(again.get(key))) == float(array.sum())
        finally:
            again.close()
            unregister_store(name + "-next")
        store.evict(key)
    finally:
        store.close()


CHILD_TEMP = textwrap.dedent(
    """
    import fcntl, os, sys, time
    from proxystore.store.backends.memory import MemoryBackend
    from proxystore.store.layers import _host_files
    from proxystore.store.layers.host_cache import HostCacheLayer

    root, mode = sys.argv[1], sys.argv[2]
    layer = HostCacheLayer(MemoryBackend(), root, namespace="n", store_type="RedisStore")
    layer.prepare()
    if mode == "linked":  # the writer's own protocol, killed between naming and renaming
        fd = _host_files.open_unnamed(layer.directory)
        assert fd is not None
        os.write(fd, b"x" * 2**20)
        name = _host_files.name_unnamed(layer.directory, fd)
    else:  # a named file: an older version's (never locked), or locked (a live writer)
        name = os.path.join(layer.directory, f".tmp-{os.getpid()}-{mode}")
        fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o600)
        if mode == "locked":
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"x" * 2**20)
    print(os.path.basename(name), flush=True)
    time.sleep(300)
    """
)


def start_writer(root: str, mode: str) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_TEMP, root, mode], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()  # bounded: the test's timeout
    assert line, f"the writer child ({mode}) failed"
    return child, line


def test_dead_writers_temp_files_are_reclaimed_live_ones_kept(
    redis_address: tuple[str, int], private_tmpfs: Any, name: str
) -> None:
    mount = private_tmpfs("64m")
    root = os.path.join(mount, "cache")
    children = {mode: start_writer(root, mode) for mode in ("linked", "unlocked", "locked")}
    try:
        temps = {mode: temp for mode, (_, temp) in children.items()}
        assert set(temps.values()) <= set(cache_entries(root))
        os.kill(children["linked"][0].pid, signal.SIGSTOP)  # stopped: alive, holding its lock
        store = tier_store(redis_address, root, name)  # a store opening the host cache
        key = store.set(np.arange(1000.0))
        assert store.get(key)[5] == 5.0  # a fetch, which also sweeps
        assert set(temps.values()) <= set(cache_entries(root)), "live writers' files kept"
        for mode in ("linked", "unlocked"):
            child = children[mode][0]
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        before = used(mount)
        store.close()
        unregister_store(name)
        again = tier_store(redis_address, root, name)  # the next store open reclaims them
        entries = cache_entries(root)
        assert temps["linked"] not in entries and temps["unlocked"] not in entries
        assert temps["locked"] in entries, "a live, locked writer's file is never removed"
        assert used(mount) <= before - 2 * 2**20 + 2**19
        again.close()
    finally:
        for child, _ in children.values():
            if child.poll() is None:
                os.kill(child.pid, signal.SIGCONT)
                child.kill()
            child.wait(timeout=30)
            if child.stdout is not None:
                child.stdout.close()


# -- a full memory file system ----------------------------------------------------------------


@pytest.mark.parametrize("readonly", [False, True])
def test_a_full_tmpfs_serves_the_fetched_object(
    redis_address: tuple[str, int],
    private_tmpfs: Any,
    name: str,
    caplog: pytest.LogCaptureFixture,
    readonly: bool,
) -> None:
    mount = private_tmpfs("16m")
    root = os.path.join(mount, "cache")
    store = tier_store(redis_address, root, name, cache_size=0, readonly=readonly)
    try:
        arrays = [np.full(500_000, float(i)) for i in range(2)]  # 4 MB each
        keys = [store.set(array) for array in arrays]
        layer = store.backend
        assert isinstance(layer, HostCacheLayer)
        layer.prepare()  # the directories, made before the file system fills up
        with open(os.path.join(mount, "filler"), "wb") as filler:  # someone else's use
            try:
                while True:
                    filler.write(b"\0" * 2**20)
                    filler.flush()
            except OSError:
                pass
        full = used(mount)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            for _ in range(2):
                for key, array in zip(keys, arrays):
                    got = store.get(key)
                    assert np.array_equal(got, array)
                    assert got.flags.writeable is not readonly  # as from the cache
        said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert len(said) == 1, said  # once, not per resolve
        assert "full" in said[0] and root in said[0] and "serving the bytes" in said[0]
        assert [e for e in cache_entries(root) if e.startswith(".tmp")] == []
        assert used(mount) <= full
        os.unlink(os.path.join(mount, "filler"))  # room again: the tier keeps objects again
        assert np.array_equal(store.get(keys[0]), arrays[0])
        assert keys[0] in cache_entries(root)
    finally:
        store.close()


# -- a stopped fetcher ------------------------------------------------------------------------


def test_a_stopped_fetcher_costs_the_others_one_bounded_wait(
    redis_address: tuple[str, int], name: str, tmp_path: Path
) -> None:
    root = f"/dev/shm/proxystore-test-stopped-{uuid.uuid4().hex[:8]}"
    store = tier_store(redis_address, root, name, cache_size=0, host_cache_wait=1.0)
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    try:
        array = np.arange(1_000_000, dtype=np.float64)
        key = store.set(array)
        child = spawn.Process(target=hold_fetch_lock, args=(store.description, key, ready))
        child.start()
        deadline = time.monotonic() + 120
        while not ready.wait(timeout=0.1):
            assert child.is_alive() and time.monotonic() < deadline, "no lock taken"
        assert child.pid is not None
        os.kill(child.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            assert np.array_equal(store.get(key), array)
            waited = time.monotonic() - start
            assert 1.0 <= waited < 1.0 + 20, waited  # the configured bound, not 600 s
            assert key in cache_entries(root)  # kept: the next resolvers do not wait
            start = time.monotonic()
            assert np.array_equal(store.get(key), array)
            assert time.monotonic() - start < 1.0
            with spawn.Pool(1) as pool:
                assert pool.apply(resolve_sum, (store.proxy(key=key),)) == float(array.sum())
        finally:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.join(timeout=30)
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def test_host_cache_wait_defaults_to_the_store_timeout_and_travels(
    redis_address: tuple[str, int], name: str, tmp_path: Path
) -> None:
    root = f"/dev/shm/proxystore-test-wait-{uuid.uuid4().hex[:8]}"
    host, port = redis_address
    stores = [
        RedisStore(name, hostname=host, port=port, host_cache=root),
        RedisStore(name, hostname=host, port=port, host_cache=root, socket_timeout=7.0),
        RedisStore(name, hostname=host, port=port, host_cache=root, host_cache_wait=2.5),
        FileStore(name, store_dir=tmp_path / "s", host_cache=root)
        if not _on_memory(tmp_path)
        else None,
    ]
    try:
        waits = [s.backend.wait if s is not None else None for s in stores]  # type: ignore[attr-defined]
        assert waits[:3] == [60.0, 7.0, 2.5]
        assert waits[3] in (DEFAULT_WAIT, None)
        assert stores[2].description.kwargs["host_cache_wait"] == 2.5
        assert "host_cache_wait" not in stores[0].description.kwargs
        description = stores[2].description
        rebuilt = RedisStore(name + "-rebuilt", **description.init_kwargs())
        assert rebuilt.backend.wait == 2.5  # type: ignore[attr-defined]
        rebuilt.close()
    finally:
        for store in stores:
            if store is not None:
                store.close()
        shutil.rmtree(root, ignore_errors=True)


def _on_memory(path: Path) -> bool:
    from proxystore.store.file import is_memory_file_system

    return is_memory_file_system(str(path))


# -- bad options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("host_cache_bytes", 0.5, TypeError),
        ("host_cache_bytes", 8e9, TypeError),
        ("host_cache_bytes", math.nan, TypeError),
        ("host_cache_bytes", True, TypeError),
        ("host_cache_bytes", "1000", TypeError),
        ("host_cache_bytes", 0, ValueError),
        ("host_cache_bytes", -1, ValueError),
        ("host_cache_bytes", 2**70, ValueError),
        ("host_cache_wait", math.nan, ValueError),
        ("host_cache_wait", math.inf, ValueError),
        ("host_cache_wait", 1e300, ValueError),
        ("host_cache_wait", 0, ValueError),
        ("host_cache_wait", -1.0, ValueError),
        ("host_cache_wait", True, TypeError),
        ("host_cache_wait", "5", TypeError),
    ],
)
def test_bad_host_tier_options_are_refused_naming_them(
    tmp_path: Path, option: str, value: Any, error: type[Exception]
) -> None:
    if _on_memory(tmp_path):
        pytest.skip("the temporary directory is on a memory file system here")
    root = f"/dev/shm/proxystore-test-bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(error, match=option) as caught:
        FileStore("bad", store_dir=tmp_path / "s", host_cache=root, **{option: value})
    assert "FileStore 'bad'" in str(caught.value)
    assert not os.path.exists(root), "nothing made before the options are checked"
    layer_options = {"host_cache_bytes": "max_bytes", "host_cache_wait": "wait"}
    if option in layer_options:  # the layer itself checks them too
        from proxystore.store.backends.memory import MemoryBackend

        with pytest.raises(error, match=option):
            HostCacheLayer(MemoryBackend(), root, namespace="n", **{layer_options[option]: value})


def test_readonly_must_be_a_bool(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    root = f"/dev/shm/proxystore-test-bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TypeError, match="readonly must be True or False"):
        RedisStore("bad", hostname=host, port=port, host_cache=root, readonly="yes")  # type: ignore[arg-type]
    assert not os.path.exists(root)


def test_host_cache_wait_needs_host_cache(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="host_cache_wait needs host_cache"):
        FileStore("bad", store_dir=tmp_path / "s", host_cache_wait=5.0)
