"""Page reuse on a memory file system: evicted objects' pages written again, never under a reader.

Real files under /dev/shm, real processes (fork and spawn) holding mappings, real locks.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from proxystore.store.file import FileStore, is_memory_file_system
from proxystore.store.file import _maps as file_maps
from proxystore.store.file._pool import MIN_POOLED
from tests.store.file.test_zero_copy import used_bytes

SHM = "/dev/shm"
MB = 2**20
pytestmark = pytest.mark.skipif(
    not os.path.isdir(SHM) or not is_memory_file_system(SHM), reason="needs /dev/shm (tmpfs)"
)


@pytest.fixture
def directory() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="proxystore-reuse-", dir=SHM)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make(directory: str, **kwargs: Any) -> FileStore:
    return FileStore(f"reuse-{uuid.uuid4().hex[:8]}", store_dir=directory, **kwargs)


def inode(store: FileStore, key: str) -> int:
    return os.stat(os.path.join(store.store_dir, key)).st_ino


def hidden(directory: str) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(".")]


def array(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(size // 8)


def pooled(store: FileStore) -> int:
    pool = store.files.pool
    assert pool is not None
    return pool.pooled_bytes


def test_evicted_pages_are_written_again(directory: str) -> None:
    store = make(directory)
    first = array(4 * MB, 1)
    key = store.set(first)
    used = inode(store, key)
    store.evict(key)
    assert not store.exists(key)
    assert store.get(key) is None
    assert pooled(store) >= first.nbytes
    second = array(4 * MB, 2)
    again = store.set(second)
    assert inode(store, again) == used  # the same pages, not a new file
    assert pooled(store) == 0
    got = store.get(again)
    assert np.array_equal(got, second)
    assert store.get_timestamp(again) >= time.time() - 60  # a fresh write time
    del got
    store.close()
    assert hidden(directory) == []  # close gives the pool back


def test_a_smaller_object_reuses_a_larger_file_and_shrinks_it(directory: str) -> None:
    store = make(directory)
    store.evict(store.set(array(8 * MB, 1)))
    small = array(2 * MB, 2)
    key = store.set(small)
    assert os.path.getsize(os.path.join(directory, key)) < 3 * MB
    assert np.array_equal(store.get(key), small)
    store.close()


def test_small_objects_are_deleted_not_pooled(directory: str) -> None:
    store = make(directory)
    store.evict(store.set(np.arange(10)))
    assert MIN_POOLED > 80
    assert pooled(store) == 0 and hidden(directory) == []
    store.close()


def test_pool_off_deletes_at_once(directory: str) -> None:
    store = make(directory, page_pool_bytes=0)
    key = store.set(array(4 * MB, 1))
    store.evict(key)
    assert store.files.pool is None
    assert os.listdir(directory) == []


def test_pool_is_bounded(directory: str) -> None:
    store = make(directory, page_pool_bytes=5 * MB)
    keys = [store.set(array(2 * MB, seed)) for seed in range(4)]
    for key in keys:
        store.evict(key)
    assert 0 < pooled(store) <= 5 * MB
    assert len(hidden(directory)) == 2  # the oldest went back
    store.close()


def test_idle_pool_gives_memory_back(directory: str) -> None:
    store = make(directory, page_pool_idle=0.2)
    store.evict(store.set(array(4 * MB, 1)))
    assert hidden(directory)
    deadline = time.monotonic() + 5.0
    while hidden(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hidden(directory) == [] and pooled(store) == 0


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("page_pool_bytes", -1, ValueError),
        ("page_pool_bytes", 0.5, TypeError),  # not silently "off"
        ("page_pool_bytes", 2.0**30, TypeError),
        ("page_pool_bytes", True, TypeError),
        ("page_pool_bytes", "1g", TypeError),
        ("page_pool_idle", 0, ValueError),
        ("page_pool_idle", -1.0, ValueError),
        ("page_pool_idle", float("nan"), ValueError),  # the idle thread spun at 100% CPU
        ("page_pool_idle", float("inf"), ValueError),
        ("page_pool_idle", 1e300, ValueError),
        ("page_pool_idle", True, TypeError),
        ("page_pool_idle", "30", TypeError),
        ("cache_size", -1, ValueError),
        ("cache_size", 1.5, TypeError),
        ("host_cache_bytes", 0, ValueError),
        ("host_cache_bytes", 1.5, TypeError),
    ],
)
def test_bad_numeric_options_are_refused_naming_them(
    directory: str, option: str, value: object, error: type[Exception]
) -> None:
    before = sorted(os.listdir(directory))
    with pytest.raises(error, match=option) as info:
        make(os.path.join(directory, "store"), **{option: value})
    assert repr(value) in str(info.value)
    assert sorted(os.listdir(directory)) == before  # refused before anything was made


def test_good_numeric_options_of_other_number_types_are_taken(directory: str) -> None:
    store = make(directory, page_pool_bytes=np.int64(8 * MB), page_pool_idle=np.float32(5))
    assert store.files.pool is not None and store.files.pool.limit == 8 * MB
    assert store.files.pool.idle == 5.0
    assert type(store.files.pool.limit) is int
    store.close()


def test_an_array_in_use_here_is_never_overwritten(directory: str) -> None:
    store = make(directory, cache_size=0)
    first = array(4 * MB, 1)
    key = store.set(first)
    held = store.get(key)  # copy-on-write, maps the file: a shared lock while alive
    used = inode(store, key)
    store.evict(key)
    second = array(4 * MB, 2)
    other = store.set(second)
    assert inode(store, other) != used  # the held file was skipped
    assert np.array_equal(held, first)
    del held
    gc.collect()
    others = inode(store, other)
    store.evict(other)
    third = array(4 * MB, 3)
    reused = store.set(third)
    assert inode(store, reused) in {used, others}  # a pooled file, free again
    assert np.array_equal(store.get(reused), third)
    store.close()


def _hold(directory: str, name: str, key: str, ready: Any, release: Any, out: Any) -> None:
    """In another process: map the object, report, keep it until told, check it, then read
    the next key given."""
    store = FileStore(name, store_dir=directory, cache_size=0, create_dir=False)
    held = store.get(key)
    expected = float(held.sum())
    ready.put(expected)
    next_key = release.get(timeout=60)
    out.put(float(held.sum()) == expected)  # unchanged while held
    out.put(float(store.get(next_key).sum()))
    del held
    gc.collect()
    ready.put("released")
    final = release.get(timeout=60)
    out.put(float(store.get(final).sum()))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_reader_in_another_process_keeps_its_bytes(directory: str, method: str) -> None:
    context = multiprocessing.get_context(method)
    store = make(directory, cache_size=0)
    first = array(4 * MB, 1)
    key = store.set(first)
    used = inode(store, key)
    ready, release, out = context.Queue(), context.Queue(), context.Queue()
    child = context.Process(
        target=_hold, args=(directory, store.name, key, ready, release, out), daemon=True
    )
    child.start()
    try:
        assert ready.get(timeout=60) == pytest.approx(float(first.sum()))
        store.evict(key)
        second = array(4 * MB, 2)
        during = store.set(second)  # the reader holds the only pooled file: a new one
        assert inode(store, during) != used
        release.put(during)
        assert out.get(timeout=60) is True
        assert out.get(timeout=60) == pytest.approx(float(second.sum()))
        assert ready.get(timeout=60) == "released"
        during_inode = inode(store, during)
        store.evict(during)
        third = array(4 * MB, 3)
        after = store.set(third)  # now free: its pages are written again
        assert inode(store, after) in {used, during_inode}
        release.put(after)
        assert out.get(timeout=60) == pytest.approx(float(third.sum()))
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    store.close()


def test_copy_on_write_mappings_are_reused_only_when_clean(directory: str) -> None:
    file_maps.drop_parked()
    store = make(directory, cache_size=0)
    data = array(4 * MB, 1)
    key = store.set(data)
    got = store.get(key)
    address = got.__array_interface__["data"][0]
    del got
    gc.collect()
    assert file_maps.parked_count() == 1
    again = store.get(key)  # the parked mapping: same address, no page faults
    assert again.__array_interface__["data"][0] == address
    again[0] = -1.0  # a private copy of that page: the mapping is not clean any more
    del again
    gc.collect()
    assert file_maps.parked_count() == 0
    fresh = store.get(key)
    assert fresh[0] == data[0]  # the write never reached the file nor another get
    assert np.array_equal(fresh, data)
    del fresh
    store.close()
    file_maps.drop_parked()


def test_parked_mapping_of_a_deleted_file_is_not_kept(directory: str) -> None:
    file_maps.drop_parked()
    store = make(directory, cache_size=0, page_pool_bytes=0)
    key = store.set(array(4 * MB, 1))
    got = store.get(key)
    store.evict(key)  # deleted while mapped
    del got
    gc.collect()
    assert file_maps.parked_count() == 0  # parking it would keep the deleted file's memory


def _put_in_child(directory: str, name: str, out: Any) -> None:
    store = FileStore(name, store_dir=directory, cache_size=0, create_dir=False)
    pool = store.files.pool
    out.put(pool is not None and pool.pooled_bytes == 0)


def test_a_forked_child_does_not_inherit_the_pool(directory: str) -> None:
    store = make(directory)
    store.evict(store.set(array(4 * MB, 1)))
    kept = pooled(store)
    assert kept > 0
    context = multiprocessing.get_context("fork")
    out = context.Queue()

    def child() -> None:
        out.put(pooled(store) == 0)  # the parent's pooled files are not the child's

    process = context.Process(target=child, daemon=True)
    process.start()
    assert out.get(timeout=60) is True
    process.join(timeout=60)
    assert process.exitcode == 0
    assert pooled(store) == kept  # untouched in the parent
    data = array(4 * MB, 2)
    assert np.array_equal(store.get(store.set(data)), data)
    store.close()


def test_concurrent_puts_gets_and_evictions_stay_correct(directory: str) -> None:
    store = make(directory, cache_size=0)
    errors: list[str] = []

    def worker(seed: int) -> None:
        for round_ in range(15):
            data = np.full(MB // 8 * 2, float(seed * 100 + round_))
            key = store.set(data)
            got = store.get(key)
            if got is None or not np.all(got == data[0]):
                errors.append(f"worker {seed} round {round_}")
            del got
            store.evict(key)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    store.close()
    assert hidden(directory) == []


def _park_and_wait(directory: str, name: str, key: str, ready: Any, done: Any) -> None:
    """In another process: map the object, let it go (parked), then wait to be told to end."""
    store = FileStore(name, store_dir=directory, cache_size=0, create_dir=False)
    total = float(store.get(key).sum())
    gc.collect()
    ready.put((total, file_maps.parked_count()))
    done.get(timeout=60)


@pytest.mark.parametrize("pool", [0, None], ids=["evict-deletes", "pool-drained"])
def test_memory_returns_despite_a_parked_mapping_elsewhere(
    private_tmpfs: Any, pool: int | None
) -> None:
    directory = private_tmpfs("64m")
    store = make(directory, cache_size=0, page_pool_bytes=pool)
    baseline = used_bytes(directory)
    data = array(16 * MB, 1)
    key = store.set(data)
    context = multiprocessing.get_context("fork")
    ready, done = context.Queue(), context.Queue()
    child = context.Process(
        target=_park_and_wait, args=(directory, store.name, key, ready, done), daemon=True
    )
    child.start()
    try:
        total, parked = ready.get(timeout=60)
        assert total == pytest.approx(float(data.sum())) and parked >= 1
        store.evict(key)
        store.close()  # the pool gives its file back (truncated: nobody holds a lock on it)
        assert used_bytes(directory) - baseline < MB  # although the child still maps it
    finally:
        done.put(True)
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


def test_overwriting_a_key_reuses_the_replaced_pages(directory: str) -> None:
    store = make(directory, cache_size=0)
    seen = set()
    for seed in range(6):
        data = array(4 * MB, seed)
        store.set(data, key="same")
        assert np.array_equal(store.get("same"), data)
        seen.add(inode(store, "same"))
    assert len(seen) <= 3  # the replaced files are written again, not new ones each time
    assert [name for name in os.listdir(directory) if not name.startswith(".")] == ["same"]
    store.close()


def test_overwriting_keeps_a_held_old_version_and_readers_never_see_the_key_missing(
    directory: str,
) -> None:
    store = make(directory, cache_size=0)
    first = array(4 * MB, 0)
    store.set(first, key="k")
    held = store.get("k")
    stop = threading.Event()
    missing: list[int] = []

    def read() -> None:
        for _ in range(2000):
            if stop.is_set():
                return
            got = store.get("k")
            if got is None:
                missing.append(1)
            del got

    reader = threading.Thread(target=read)
    reader.start()
    for seed in range(1, 12):
        store.set(array(4 * MB, seed), key="k")
    stop.set()
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert missing == []  # replaced atomically: the old or the new object, never neither
    assert np.array_equal(held, first)  # the held version was never written again
    store.close()


KEEPER = """
import os, signal, sys
import numpy as np
from proxystore.store.file import FileStore

store = FileStore("keeper", store_dir=sys.argv[1])
store.evict(store.set(np.ones(2**20)))  # 8 MB: kept for reuse, as a .pool- file
print(sorted(n for n in os.listdir(sys.argv[1]) if n.startswith(".pool-")), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # dies without giving the pool back
"""


def test_a_dead_processs_pool_files_are_removed_when_the_next_store_opens(
    directory: str,
) -> None:
    import ast
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", KEEPER, directory], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -9, result.stderr
    kept = ast.literal_eval(result.stdout.strip())  # the list the child printed
    assert len(kept) == 1 and kept[0] in os.listdir(directory)
    path = os.path.join(directory, kept[0])
    FileStore("next", store_dir=directory).close()  # at once, however fresh the file
    assert not os.path.exists(path)


def test_kept_write_mappings_are_bounded_and_go_when_idle(directory: str) -> None:
    from proxystore.store.file._pool import KEPT_MAPPINGS

    store = make(directory, cache_size=0, page_pool_idle=0.5)
    pool = store.files.pool
    assert pool is not None
    keys = [store.set(array(2 * MB, seed)) for seed in range(KEPT_MAPPINGS + 2)]
    for key in keys:
        store.evict(key)
    again = [store.set(array(2 * MB, seed)) for seed in range(KEPT_MAPPINGS + 2)]  # reused
    assert 0 < pool.kept_mappings <= KEPT_MAPPINGS
    deadline = time.monotonic() + 10
    while pool.kept_mappings and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.kept_mappings == 0 and pooled(store) == 0  # idle: all given back
    for seed, key in enumerate(again):
        assert np.array_equal(store.get(key), array(2 * MB, seed))
    store.close()


def test_a_reader_gives_up_on_a_key_that_never_holds_still_within_the_bound(
    directory: str,
) -> None:
    """The retry of a replaced key is bounded in time and says so (TimeoutError)."""
    import fcntl

    path = os.path.join(directory, "k")
    with open(path, "wb") as out:
        out.write(b"x" * 100)
    with open(path, "rb") as held:  # as a writer rewriting it would: every lock attempt fails
        fcntl.flock(held, fcntl.LOCK_EX)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="replaced"):
            file_maps.open_locked(path, wait=0.3)
        assert 0.3 <= time.monotonic() - start < 10
    opened = file_maps.open_locked(path, wait=0.3)  # holds still now
    assert opened is not None
    os.close(opened[0])
