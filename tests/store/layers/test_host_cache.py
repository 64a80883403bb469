"""The host tier (``host_cache=``): one fetch per host, then zero-copy mappings, bounded."""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import ProxyResolveMissingKey, StoreError
from proxystore.proxy import extract, get_key
from proxystore.store import init_store, unregister_store
from proxystore.store.backends.memory import MemoryBackend
from proxystore.store.layers.host_cache import HostCacheLayer
from proxystore.store.redis import RedisStore
from tests.support.host_tier_tasks import resolve_and_describe
from tests.support.redis_server import private_redis
from tests.support.waiting import wait_until

N = 1_000_000  # 8 MB arrays


def served_bytes(port: int) -> int:
    """Bytes the server has sent to its clients so far (its own counter)."""
    import redis

    client = redis.Redis(port=port)
    try:
        return int(client.info("stats")["total_net_output_bytes"])
    finally:
        client.close()


@pytest.fixture
def server() -> Iterator[int]:
    with private_redis() as (_, port):
        yield port


@pytest.fixture
def cache_dir() -> Iterator[str]:
    path = f"/dev/shm/proxystore-test-host-cache-{uuid.uuid4().hex[:8]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make(server: int, cache_dir: str, name: str = "tier", **options: Any) -> RedisStore:
    store = init_store(
        "redis", name, hostname="127.0.0.1", port=server, host_cache=cache_dir, **options
    )
    assert isinstance(store, RedisStore)
    return store


def cached_files(cache_dir: str) -> list[str]:
    return sorted(
        entry.name
        for sub in os.scandir(cache_dir)
        for entry in os.scandir(sub.path)
        if entry.is_file() and not entry.name.startswith(".")
    )


def test_processes_of_a_host_fetch_once_and_map_copy_on_write(server: int, cache_dir: str) -> None:
    store = make(server, cache_dir)
    try:
        array = np.arange(N, dtype=np.float64)
        proxy = store.proxy(array)
        before = served_bytes(server)
        start_at = time.time() + 1.0  # four resolvers in four processes, started together
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            seen = pool.starmap(resolve_and_describe, [(proxy, start_at)] * 4)
        sent = served_bytes(server) - before
        assert array.nbytes <= sent < 1.2 * array.nbytes, "one copy for the whole host"
        expected = float(array[1:].sum())
        for result in seen:  # each wrote array[0] = -1 into its own copy-on-write pages
            assert result == {"sum": expected, "first": -1.0, "writable": True}
        assert cached_files(cache_dir) == [get_key(proxy)]
        again = extract(store.proxy(key=get_key(proxy)))
        assert again[0] == 0.0, "the cached object itself was never written"
        assert served_bytes(server) - before < 1.2 * array.nbytes
    finally:
        store.close()
        unregister_store("tier")


def test_readonly_arrays_are_shared_and_cannot_be_written(server: int, cache_dir: str) -> None:
    store = make(server, cache_dir, readonly=True)
    try:
        proxy = store.proxy(np.ones(N))
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            seen = pool.starmap(resolve_and_describe, [(proxy, 0.0)] * 2)
        assert all(not result["writable"] and result["first"] == 1.0 for result in seen)
        array = store.get(get_key(proxy))
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 2.0
    finally:
        store.close()
        unregister_store("tier")


def test_the_cache_stays_under_its_bound_and_keeps_mapped_objects(
    server: int, cache_dir: str
) -> None:
    size = N * 8
    store = make(server, cache_dir, host_cache_bytes=int(3.5 * size), cache_size=0)
    try:
        keys = [store.set(np.full(N, float(i))) for i in range(6)]
        held = store.get(keys[0])  # mapped by this process: must survive the bound
        for key in keys[1:]:
            assert store.get(key)[0] == float(keys.index(key))
        files = cached_files(cache_dir)
        total = sum(
            os.path.getsize(os.path.join(cache_dir, d, f))
            for d in os.listdir(cache_dir)
            for f in files
            if os.path.exists(os.path.join(cache_dir, d, f))
        )
        assert total <= int(3.5 * size)
        assert keys[0] in files, "an object a process still maps is never evicted"
        assert keys[-1] in files
        assert held[0] == 0.0
    finally:
        store.close()
        unregister_store("tier")


def test_a_newer_version_and_an_eviction_at_the_origin_are_seen(
    server: int, cache_dir: str
) -> None:
    store = make(server, cache_dir, cache_size=0)
    try:
        store.set(np.zeros(10), key="custom")
        assert store.get("custom")[0] == 0.0  # now in the host cache
        writer = RedisStore("writer", hostname="127.0.0.1", port=server)  # no host tier
        first = writer.backend.timestamp("custom")
        assert first is not None
        wait_until(lambda: time.time() > first + 0.001, timeout=10, what="the clock to advance")
        writer.set(np.ones(10), key="custom")
        second = writer.backend.timestamp("custom")
        assert second is not None and second > first, "the newer version has a newer write time"
        assert store.get("custom")[0] == 1.0, "the host cache revalidates against the origin"
        assert store.get("custom", strict=True)[0] == 1.0
        proxy = store.proxy(key="custom")
        writer.evict("custom")
        with pytest.raises(ProxyResolveMissingKey):
            extract(proxy)
        assert cached_files(cache_dir) == []
        writer.close()
    finally:
        store.close()
        unregister_store("tier")


def test_an_object_larger_than_the_cache_is_fetched_but_not_kept(
    server: int, cache_dir: str
) -> None:
    store = make(server, cache_dir, host_cache_bytes=1_000_000)
    try:
        key = store.set(np.arange(N, dtype=np.float64))
        assert store.get(key)[5] == 5.0
        assert cached_files(cache_dir) == []
    finally:
        store.close()
        unregister_store("tier")


def test_a_stuck_fetch_on_the_host_costs_one_bounded_wait_then_is_fetched_here(
    cache_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    inner = MemoryBackend()
    layer = HostCacheLayer(
        inner, cache_dir, namespace="t", store_name="s", store_type="RedisStore", wait=0.3
    )
    key = inner.put(None, [b"\x01data"])
    layer.prepare()
    lock_path = os.path.join(layer.locks, key)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another "process" fetching it, and stuck
    try:
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="proxystore.store.layers.host_cache"):
            found = layer.get(key)
        assert 0.3 <= time.monotonic() - start < 5
        assert found is not None and bytes(found[0]) == b"\x01data"
        said = " ".join(record.getMessage() for record in caplog.records)
        for part in (socket.gethostname(), key, lock_path, "host_cache_wait=0.3"):
            assert part in said
        start = time.monotonic()  # put in the cache despite the lock: no second wait
        assert bytes(layer.get(key)[0]) == b"\x01data"  # type: ignore[index]
        assert time.monotonic() - start < 0.3
    finally:
        os.close(fd)
    assert bytes(layer.get(key)[0]) == b"\x01data"  # type: ignore[index]


def test_a_process_that_only_writes_makes_no_host_cache_directory(
    server: int, cache_dir: str
) -> None:
    store = make(server, cache_dir)
    try:
        key = store.set(np.arange(10.0))
        assert not os.path.exists(cache_dir), "a client that only writes leaves /dev/shm alone"
        assert store.get(key)[3] == 3.0
        assert cached_files(cache_dir) == [key]
        assert oct(os.stat(cache_dir).st_mode & 0o777) == "0o700"
    finally:
        store.close()
        unregister_store("tier")


def test_host_cache_must_be_a_private_memory_directory(
    server: int, cache_dir: str, tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="not on a memory file system"):
        make(server, str(tmp_path / "disk-cache"), name="bad-disk")
    os.mkdir(cache_dir, 0o700)
    os.chown(cache_dir, 65534, 65534)
    with pytest.raises(StoreError, match=r"owned by .*uid 65534"):
        make(server, cache_dir, name="bad-owner")
    os.rmdir(cache_dir)
    os.symlink("/dev/shm", cache_dir)  # a planted link
    try:
        with pytest.raises(StoreError, match="symbolic link"):
            make(server, cache_dir, name="bad-link")
    finally:
        os.unlink(cache_dir)
    with pytest.raises(ValueError, match="host_cache_bytes needs host_cache"):
        RedisStore("x", hostname="127.0.0.1", port=server, host_cache_bytes=10)


def test_concurrent_resolves_in_one_process_share_one_fetch(server: int) -> None:
    store = init_store("redis", "inflight", hostname="127.0.0.1", port=server)
    try:
        key = store.set(np.arange(N, dtype=np.float64))
        proxies = [store.proxy(key=key) for _ in range(4)]
        store.cache.clear()
        before = served_bytes(server)
        barrier = threading.Barrier(4)
        results: list[Any] = []

        def resolve(proxy: Any) -> None:
            barrier.wait(timeout=10)
            results.append(extract(proxy))

        threads = [threading.Thread(target=resolve, args=(p,)) for p in proxies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(results) == 4 and all(r is results[0] for r in results)
        assert served_bytes(server) - before < 1.2 * N * 8, "one fetch for the four"
    finally:
        store.close()
        unregister_store("inflight")


def test_file_store_on_a_shared_file_system_takes_the_host_tier(
    tmp_path: Path, cache_dir: str
) -> None:
    from proxystore.store.file import is_memory_file_system

    if is_memory_file_system(str(tmp_path)):
        pytest.skip("the temporary directory is on a memory file system here")
    store = init_store("file", "shared-fs", store_dir=str(tmp_path / "store"), host_cache=cache_dir)
    try:
        key = store.set(np.arange(N, dtype=np.float64))
        array = store.get(key)
        assert array[7] == 7.0 and cached_files(cache_dir) == [key]
        array[7] = -1.0  # copy-on-write: neither the cache nor the store file changes
        assert store.get(key)[7] == 7.0
        assert store.description.kwargs["host_cache"] == cache_dir
    finally:
        store.cleanup()
        unregister_store("shared-fs")
    with pytest.raises(ValueError, match="already maps without a copy"):
        init_store("file", "shm-fs", store_dir=cache_dir + "-store", host_cache=cache_dir)
    shutil.rmtree(cache_dir + "-store", ignore_errors=True)


def test_globus_store_takes_the_host_tier(tmp_path: Path, cache_dir: str) -> None:
    from tests.support.globus_sim import make_globus_store

    store = make_globus_store("globus-tier", tmp_path, host_cache=cache_dir)
    try:
        key = store.set(np.arange(1_000, dtype=np.float64))
        assert store.get(key)[3] == 3.0
        assert cached_files(cache_dir) == [key]
    finally:
        store.close()
        unregister_store("globus-tier")
