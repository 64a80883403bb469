"""Page reuse under churn: many writers, evictions and readers of the same keys at once.

Real files under /dev/shm (or a private tmpfs), real threads and spawned processes, real
locks. Every object carries the key it was written under, so a key that returns another
key's object is caught on read; children report their findings and must exit 0 (a SIGBUS
would kill them); the directory is scanned while the writers run for a file named twice.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import secrets
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
from proxystore.store.file._pool import MIN_POOLED
from tests.store.file.test_zero_copy import used_bytes

SHM = "/dev/shm"
MB = 2**20
SIZE = MIN_POOLED + MB // 4  # pooled when evicted
pytestmark = pytest.mark.skipif(
    not os.path.isdir(SHM) or not is_memory_file_system(SHM), reason="needs /dev/shm (tmpfs)"
)


@pytest.fixture
def directory() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="proxystore-churn-", dir=SHM)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make(directory: str, **kwargs: Any) -> FileStore:
    return FileStore(f"churn-{uuid.uuid4().hex[:8]}", store_dir=directory, **kwargs)


def thing(key: str, writer: int, seq: int, size: int = SIZE) -> dict[str, Any]:
    """An object that says which key it was written under, by whom, and which version."""
    return {"key": key, "writer": writer, "seq": seq, "data": np.full(size // 8, float(seq))}


def wrong(got: Any, key: str) -> str | None:
    """Why ``got`` (read under ``key``) is not a whole object written under ``key``."""
    if not isinstance(got, dict) or got.get("key") != key:
        return f"{key!r} held {got.get('key') if isinstance(got, dict) else type(got)!r}"
    data = got["data"]
    if not (data == float(got["seq"])).all():
        return f"{key!r} version {got['seq']} is torn"
    return None


def churn(store: FileStore, writer: int, shared: str, seconds: float) -> tuple[int, list[str]]:
    """Set and evict ``shared`` while writing and checking keys of this writer's own.

    Returns how many rounds ran and what was wrong (at most 10 findings).
    """
    problems: list[str] = []
    deadline = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < deadline and len(problems) < 10:
        seq += 1
        store.set(thing(shared, writer, seq), key=shared)
        got = store.get(shared)
        if got is not None and (why := wrong(got, shared)) is not None:
            problems.append(why)
        del got
        store.evict(shared)
        own = f"own-{writer}-{seq % 3}"
        store.set(thing(own, writer, seq), key=own)
        got = store.get(own)
        if got is None:
            problems.append(f"{own!r} missing right after its set")
        elif (why := wrong(got, own)) is not None or got["seq"] != seq:
            problems.append(why or f"{own!r} held version {got['seq']}, not {seq}")
        del got
        if seq % 5 == 0:
            store.evict(own)
    return seq, problems


def _churn_process(
    directory: str, signing_key: bytes | None, writer: int, shared: str, ready: Any, go: Any
) -> tuple[int, list[str]]:
    store = FileStore(
        f"churn-{writer}",
        store_dir=directory,
        cache_size=0,
        create_dir=False,
        signing_key=signing_key,
    )
    ready.put(writer)
    if not go.wait(timeout=120):
        return 0, ["never told to start"]
    try:
        return churn(store, writer, shared, seconds=2.5)
    finally:
        store.close()


def _run_in_child(queue: Any, *args: Any) -> None:
    try:
        queue.put(_churn_process(*args))
    except BaseException as exc:
        queue.put((0, [f"{type(exc).__name__}: {exc}"]))
        raise


def collect(out: Any, children: list[Any], count: int, seconds: float = 120.0) -> list[Any]:
    """Take ``count`` results from ``out``; fail at once, with exit codes, if a child died."""
    import queue

    results: list[Any] = []
    deadline = time.monotonic() + seconds
    while len(results) < count:
        try:
            results.append(out.get(timeout=0.2))
            continue
        except queue.Empty:
            pass
        codes = [child.exitcode for child in children]
        if any(code not in (None, 0) for code in codes) or time.monotonic() > deadline:
            raise AssertionError(f"children ended without reporting: exit codes {codes}")
    return results


class Scanner:
    """Watch a directory while writers run: a file is never under two names at once."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.twice: list[str] = []
        self.scans = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="churn-scanner")

    def run(self) -> None:
        while not self.stop.is_set():
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if info.st_nlink != 1:  # a second name (a hard link) for this file
                        self.twice.append(f"{entry.name} has {info.st_nlink} names")
            self.scans += 1
            time.sleep(0.001)

    def __enter__(self) -> Scanner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def assert_one_name_per_file(directory: str) -> None:
    inodes: dict[int, str] = {}
    for name in os.listdir(directory):
        number = os.stat(os.path.join(directory, name)).st_ino
        assert number not in inodes, f"{name} and {inodes[number]} are one file"
        inodes[number] = name


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_threads_setting_and_evicting_a_shared_key(directory: str, signed: bool) -> None:
    key = secrets.token_bytes(32) if signed else None
    store = make(directory, cache_size=0, signing_key=key)
    results: list[tuple[int, list[str]]] = []
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        try:
            results.append(churn(store, writer, "shared", seconds=2.0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(writer,)) for writer in range(4)]
    with Scanner(directory) as scanner:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert [problem for _, found in results for problem in found] == []
    assert sum(rounds for rounds, _ in results) >= 8  # it did churn
    assert scanner.scans > 0 and scanner.twice == []
    assert_one_name_per_file(directory)
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_processes_setting_and_evicting_a_shared_key(directory: str, signed: bool) -> None:
    context = multiprocessing.get_context("spawn")
    key = secrets.token_bytes(32) if signed else None
    FileStore("creator", store_dir=directory).close()
    ready, go, out = context.Queue(), context.Event(), context.Queue()
    children = [
        context.Process(
            target=_run_in_child, args=(out, directory, key, writer, "shared", ready, go)
        )
        for writer in range(4)
    ]
    for child in children:
        child.start()
    try:
        for _ in children:
            ready.get(timeout=120)
        with Scanner(directory) as scanner:
            go.set()
            results = collect(out, children, len(children))
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
                child.join(timeout=10)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]  # no SIGBUS
    assert [problem for _, found in results for problem in found] == []
    assert sum(rounds for rounds, _ in results) >= 8
    assert scanner.scans > 0 and scanner.twice == []
    assert_one_name_per_file(directory)


def _overwrite(
    directory: str, key: str, writer: int, seconds: float, pool: int | None, big: bool, out: Any
) -> None:
    store = FileStore(
        f"writer-{writer}",
        store_dir=directory,
        cache_size=0,
        create_dir=False,
        page_pool_bytes=pool,
    )
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count += 1
        store.set(thing(key, writer, count, size=64 * 1024 if big else 64), key=key)
        store.set(thing(key, writer, count, size=SIZE if big else 128), key=key)
    store.close()
    out.put(count)


def _busy(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pool", "big"),
    [(None, True), (0, True), (0, False)],
    ids=["reuse", "no-reuse", "no-reuse-small"],
)
def test_readers_under_load_never_see_an_overwritten_key_missing(
    directory: str, pool: int | None, big: bool
) -> None:
    """Two writers overwrite one key without a pause, two processes keep the cores busy.

    Three runs of reads (each 1.2 s of reading), while the same processes keep at it.
    """
    context = multiprocessing.get_context("spawn")
    store = make(directory, cache_size=0, page_pool_bytes=pool)
    store.set(thing("k", -1, 0), key="k")
    problems: list[str] = []
    runs = []
    out = context.Queue()
    others = [context.Process(target=_busy, args=(6.0,)) for _ in range(2)]
    others += [
        context.Process(target=_overwrite, args=(directory, "k", writer, 5.0, pool, big, out))
        for writer in range(2)
    ]
    for other in others:
        other.start()
    try:
        while store.get("k")["writer"] == -1:  # the writers are at work
            time.sleep(0.01)
        for _ in range(3):
            reads = 0
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline and len(problems) < 10:
                got = store.get("k")
                reads += 1
                if got is None:
                    problems.append("missing")
                elif (why := wrong(got, "k")) is not None:
                    problems.append(why)
                del got
            runs.append(reads)
        writes = collect(out, others, 2)
    finally:
        for other in others:
            other.join(timeout=60)
            if other.is_alive():
                other.kill()
    assert [other.exitcode for other in others] == [0, 0, 0, 0]
    assert min(writes) > 0
    assert problems == []
    assert min(runs) > 5
    store.close()


def _forked_child(held: Any, go: int, done: int) -> None:
    """In the forked child: wait until the parent rewrote the key, then check the array."""
    os.read(go, 1)
    ok = float(held.min()) == 1.0 and float(held.max()) == 1.0  # touches every page
    os.write(done, b"1" if ok else b"0")
    os._exit(0 if ok else 3)


@pytest.mark.parametrize("pool", [None, 0], ids=["reuse", "no-reuse"])
def test_a_forked_childs_array_never_changes_under_it(directory: str, pool: int | None) -> None:
    store = make(directory, cache_size=0, page_pool_bytes=pool)
    key = store.set(np.ones(4 * MB // 8))
    held = store.get(key)
    go_read, go_write = os.pipe()
    done_read, done_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            _forked_child(held, go_read, done_write)
        finally:
            os._exit(4)
    try:
        del held  # the parent lets go: its mapping is parked
        gc.collect()
        store.evict(key)
        for _ in range(3):  # with reuse, writes look for the evicted file's pages
            store.evict(store.set(np.full(4 * MB // 8, 2.0)))
        store.set(np.full(4 * MB // 8, 2.0), key="after")
        os.write(go_write, b"1")
        waited, status = 0, 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waited, status = os.waitpid(pid, os.WNOHANG)
            if waited:
                break
            time.sleep(0.01)
        if not waited:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    finally:
        for fd in (go_read, go_write, done_read, done_write):
            os.close(fd)
    assert waited, "the child did not end"
    assert os.WIFEXITED(status), f"the child was killed by signal {os.WTERMSIG(status)}"
    assert os.WEXITSTATUS(status) == 0, "the child's array changed"
    store.close()


def _park_then_idle(directory: str, key: str, ready: Any, done: Any) -> None:
    """Read the object, let it go (parked), then stay idle until told to end."""
    store = FileStore("idle", store_dir=directory, cache_size=0, create_dir=False)
    got = store.get(key)
    ok = float(got.min()) == 1.0
    del got
    gc.collect()
    ready.put(ok)
    done.get(timeout=120)


def _write_then_idle(directory: str, count: int, ready: Any, done: Any) -> None:
    """Fill the pool, write ``count`` objects into its pages, report the keys, stay idle."""
    store = FileStore(
        "writer", store_dir=directory, cache_size=0, create_dir=False, page_pool_idle=600
    )
    first = [store.set(np.ones(8 * MB // 8)) for _ in range(count)]
    for key in first:
        store.evict(key)
    ready.put([store.set(np.ones(8 * MB // 8)) for _ in range(count)])  # reused pages
    pool = store.files.pool
    ready.put(pool.pooled_bytes if pool is not None else -1)
    done.get(timeout=120)


def wait_for_memory(directory: str, baseline: int, seconds: float = 10.0) -> int:
    """Poll the tmpfs until its usage is back to ``baseline`` (plus 1 MiB); return it."""
    deadline = time.monotonic() + seconds
    while True:
        used = used_bytes(directory)
        if used - baseline < MB or time.monotonic() > deadline:
            return used
        time.sleep(0.05)


def test_an_idle_processs_parked_mapping_keeps_no_deleted_memory(private_tmpfs: Any) -> None:
    directory = private_tmpfs("128m")
    store = make(directory, cache_size=0, page_pool_bytes=0)
    baseline = used_bytes(directory)
    key = store.set(np.ones(32 * MB // 8))
    context = multiprocessing.get_context("spawn")
    ready, done = context.Queue(), context.Queue()
    idle = context.Process(target=_park_then_idle, args=(directory, key, ready, done))
    idle.start()
    try:
        assert ready.get(timeout=120) is True  # parked there, and that process is idle now
        held = store.get(key)  # a reader holds it: the eviction cannot truncate it
        store.evict(key)
        assert used_bytes(directory) - baseline >= 30 * MB  # still read here
        del held  # the last reader lets go: nothing but the idle parked mapping refers to it
        gc.collect()
        assert wait_for_memory(directory, baseline) - baseline < MB
    finally:
        done.put(True)
        idle.join(timeout=60)
        if idle.is_alive():
            idle.kill()
    assert idle.exitcode == 0
    store.close()


def test_a_writer_keeps_no_mapping_of_objects_evicted_elsewhere(private_tmpfs: Any) -> None:
    directory = private_tmpfs("160m")
    store = make(directory, cache_size=0, page_pool_bytes=0)
    baseline = used_bytes(directory)
    context = multiprocessing.get_context("spawn")
    ready, done = context.Queue(), context.Queue()
    writer = context.Process(target=_write_then_idle, args=(directory, 4, ready, done))
    writer.start()
    try:
        keys = ready.get(timeout=120)
        assert ready.get(timeout=120) == 0  # its pool gave every page to the new objects
        held = [store.get(key) for key in keys]  # readers: evicting cannot truncate
        for key in keys:
            store.evict(key)
        del held  # the last reader lets go; the writer is idle
        gc.collect()
        assert wait_for_memory(directory, baseline) - baseline < MB
    finally:
        done.put(True)
        writer.join(timeout=60)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == 0
    store.close()


def test_memory_after_churn_is_the_pools_alone(private_tmpfs: Any) -> None:
    """After churn, the file system holds the live objects and the pool's bytes, no more."""
    directory = private_tmpfs("128m")
    store = make(directory, cache_size=0, page_pool_bytes=12 * MB, page_pool_idle=600)
    baseline = used_bytes(directory)
    results = []
    threads = [
        threading.Thread(target=lambda w=w: results.append(churn(store, w, "shared", 1.0)))
        for w in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [problem for _, found in results for problem in found] == []
    gc.collect()
    pool = store.files.pool
    assert pool is not None
    live = sum(
        os.path.getsize(os.path.join(directory, name))
        for name in os.listdir(directory)
        if not name.startswith(".")
    )
    assert pool.pooled_bytes <= 12 * MB
    held = wait_for_memory(directory, baseline + live + pool.pooled_bytes)
    assert held - baseline <= live + pool.pooled_bytes + MB
    store.close()
    assert wait_for_memory(directory, baseline + live) - baseline <= live + MB


@pytest.mark.parametrize("pool", [None, 0], ids=["reuse", "no-reuse"])
def test_a_reader_that_cannot_lock_the_keys_file_yet_retries_not_missing(
    directory: str, pool: int | None
) -> None:
    """A reader whose lock attempt fails (the file it opened is being rewritten, as a pool
    writer holds it) opens the key again until it gets a version: never "missing".

    Here the key's file is held exclusively for 0.3 s by another open file description, so
    every attempt in that time fails; the old reader gave up after three and said missing.
    """
    import fcntl

    store = make(directory, cache_size=0, page_pool_bytes=pool)
    store.set(thing("k", 0, 7), key="k")
    holder = os.open(os.path.join(directory, "k"), os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    timer = threading.Timer(0.3, os.close, args=(holder,))
    timer.start()
    try:
        start = time.monotonic()
        got = store.get("k")
        waited = time.monotonic() - start
    finally:
        timer.join(timeout=30)
    assert got is not None and wrong(got, "k") is None and got["seq"] == 7
    assert waited >= 0.25  # it waited for the lock rather than report the key missing
    del got
    store.close()
