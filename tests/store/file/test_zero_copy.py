"""Same-host zero-copy: FileStore on a memory file system memory-maps objects.

Where the tests need to watch a file system's usage they mount a private tmpfs (root only);
otherwise they use a directory under /dev/shm.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import StoreError
from proxystore.integrations.futures import ProxyExecutor
from proxystore.store import init_store, unregister_store
from proxystore.store.file import FileStore, file_system_type, is_memory_file_system
from tests.support.integration_helpers import total

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/dev/shm") or not is_memory_file_system("/dev/shm"),
    reason="needs /dev/shm on tmpfs (Linux)",
)


@pytest.fixture
def shm_dir() -> Iterator[str]:
    path = f"/dev/shm/proxystore-test-{uuid.uuid4().hex[:8]}"
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


def used_bytes(path: str) -> int:
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def make(name: str, store_dir: str, **kwargs: Any) -> FileStore:
    store = init_store("file", name, store_dir=store_dir, **kwargs)
    assert isinstance(store, FileStore)
    return store


@pytest.fixture
def store(shm_dir: str) -> Iterator[FileStore]:
    name = f"zc-{uuid.uuid4().hex[:8]}"
    s = make(name, shm_dir)
    yield s
    s.cleanup()
    unregister_store(name)


def test_auto_on_memory_file_system_off_elsewhere(store: FileStore, tmp_path: Path) -> None:
    assert store.zero_copy
    disk = FileStore("disk", store_dir=str(tmp_path / "d"))
    if not is_memory_file_system(str(tmp_path)):
        assert not disk.zero_copy


def test_arrays_share_the_mapping_and_survive_layouts(store: FileStore) -> None:
    arrays = [
        np.arange(200_000, dtype=np.float64),
        np.asfortranarray(np.arange(60_000, dtype=np.int32).reshape(200, 300)),
        np.arange(100_000, dtype=np.complex128)[::3],  # not contiguous: normal path
        np.zeros((0, 5)),
    ]
    for array in arrays:
        got = store.get(store.set(array))
        assert got.dtype == array.dtype and got.shape == array.shape
        assert np.array_equal(got, array)
        if array.flags.forc:
            assert got.flags.f_contiguous == array.flags.f_contiguous
            assert got.flags.c_contiguous == array.flags.c_contiguous
    several = {"a": np.ones(50_000), "b": [np.arange(10_000), "text"], "c": 3}
    got = store.get(store.set(several))
    assert np.array_equal(got["a"], several["a"]) and np.array_equal(got["b"][0], np.arange(10_000))
    assert got["b"][1] == "text" and got["c"] == 3


def test_copy_on_write_isolates_each_get(store: FileStore) -> None:
    original = np.arange(100_000, dtype=np.float64)
    key = store.set(original)
    first, second = store.get(key), store.get(key)
    assert first is not second  # private mappings are never shared through the cache
    first[:] = -1
    assert np.array_equal(second, original)
    assert np.array_equal(store.get(key), original)


def task_writes_into_argument(x: Any) -> float:
    x[:] = 0  # its own copy-on-write pages
    return float(x.sum())


def test_task_writing_its_argument_changes_nothing_else(store: FileStore) -> None:
    data = np.arange(1, 200_001, dtype=np.float64)
    ctx = multiprocessing.get_context("spawn")
    with ProxyExecutor(ProcessPoolExecutor(2, mp_context=ctx), store=store, threshold=1) as ex:
        key = store.set(data)
        proxy = store.proxy(key=key)
        writers = [ex.submit(task_writes_into_argument, proxy) for _ in range(3)]
        readers = [ex.submit(total, proxy) for _ in range(3)]
        assert [w.result() for w in writers] == [0.0] * 3
        assert [r.result() for r in readers] == [float(data.sum())] * 3
    assert np.array_equal(store.get(key), data)


def test_readonly_mode_raises_on_write_and_shares(shm_dir: str) -> None:
    name = f"zc-ro-{uuid.uuid4().hex[:8]}"
    store = make(name, shm_dir, readonly=True)
    try:
        key = store.set(np.arange(10_000))
        array = store.get(key)
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 5
        assert store.get(key) is array  # immutable, so cached and shared
    finally:
        store.cleanup()
        unregister_store(name)


def test_objects_without_buffers_take_the_normal_path(store: FileStore) -> None:
    key = store.set({"a": 1, "b": "two"})
    assert store.get(key) == {"a": 1, "b": "two"}
    assert store.is_cached(key)
    assert store.get(store.set("plain string")) == "plain string"


@pytest.mark.parametrize("pool", [0, None], ids=["no-page-pool", "page-pool-idle"])
def test_eviction_during_use_and_memory_released(private_tmpfs: Any, pool: int | None) -> None:
    """Evicting while an array is used is safe; the memory goes back once it is released.

    Without a page pool at once; with one, after ``page_pool_idle`` seconds of no activity
    (the evicted pages are kept that long for the next put).
    """
    directory = private_tmpfs("256m")
    assert file_system_type(directory) == "tmpfs"
    store = FileStore(
        "released", store_dir=directory, zero_copy=True, page_pool_bytes=pool, page_pool_idle=0.3
    )
    baseline = used_bytes(directory)
    original = np.arange(100 * 2**20 // 8, dtype=np.float64)
    key = store.set(original)
    assert used_bytes(directory) - baseline >= original.nbytes
    held = store.get(key)
    store.evict(key)
    assert not store.exists(key)
    assert np.array_equal(held, original)  # the mapping outlives the file name
    assert used_bytes(directory) - baseline >= original.nbytes  # still held
    del held
    gc.collect()
    if pool is None:  # kept for reuse, then given back by the idle timer (bounded wait)
        deadline = time.monotonic() + 5.0
        while used_bytes(directory) - baseline >= 2**20 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert used_bytes(directory) - baseline < 1 * 2**20  # back to where it was


def test_zero_copy_demanded_off_memory_file_system(tmp_path: Path) -> None:
    if is_memory_file_system(str(tmp_path)):
        pytest.skip("tmp_path is itself on a memory file system")
    with pytest.raises(StoreError, match="memory file system") as info:
        FileStore("nope", store_dir=str(tmp_path / "d"), zero_copy=True)
    assert str(tmp_path / "d") in str(info.value)
    with pytest.raises(ValueError, match="readonly"):
        FileStore("nope", store_dir=str(tmp_path / "e"), readonly=True)


def test_no_space_left_is_a_clear_error(private_tmpfs: Any) -> None:
    directory = private_tmpfs("1m")
    store = FileStore("tiny", store_dir=directory)
    with pytest.raises(StoreError, match="No space left") as info:
        store.set(np.zeros(2 * 2**20 // 8))
    assert directory in str(info.value)
    assert os.listdir(directory) == []  # no partial or temporary file left behind
    assert store.get(store.set(b"small")) == b"small"


def test_readonly_cache_lets_go_of_evicted_files(private_tmpfs: Any) -> None:
    directory = private_tmpfs("256m")
    store = FileStore("ro-release", store_dir=directory, readonly=True)
    baseline = used_bytes(directory)
    key = store.set(np.ones(50 * 2**20 // 8))
    assert float(store.get(key).sum()) == 50 * 2**20 / 8  # cached, mapping held by the cache
    # Another process (a client that evicts after its tasks) removes the file behind our back.
    other = FileStore("ro-release-other", store_dir=directory, readonly=True, page_pool_bytes=0)
    other.evict(key)
    assert used_bytes(directory) - baseline >= 50 * 2**20  # our cache still maps it
    store.get(store.set(np.zeros(1000)))  # the next mapping sweeps entries whose file is gone
    gc.collect()
    assert not store.is_cached(key)
    assert used_bytes(directory) - baseline < 1 * 2**20


def test_background_prefetch_populates_copy_on_write_mappings(store: FileStore) -> None:
    from proxystore.proxy import extract, get_key, resolve_async

    data = np.arange(2_000_000, dtype=np.float64)
    proxy = store.proxy(data)
    resolve_async(proxy)
    got = extract(proxy)
    assert np.array_equal(got, data)
    got[0] = -5  # still copy-on-write after populating
    key = get_key(proxy)
    assert key is not None and store.get(key)[0] == 0.0
