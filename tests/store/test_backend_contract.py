"""The byte-level contract every backend keeps: one suite, run over every backend and layer.

:class:`~proxystore.store.backends.base.Backend` is what a store needs from the place its
bytes live; this suite checks that protocol directly, below any store (no serialization, no
cache): put/get of parts, write times, exists, evict, batches, keys, immutability, clear,
close and reuse, large values and threads. ``tests/store/test_store_contract.py`` checks the
stores above them.

Backends are imported through :data:`BACKENDS` (the first path that imports wins), so the
suite follows the modules when they move.
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from proxystore.exceptions import StoreError

BACKENDS: dict[str, tuple[str, ...]] = {
    "memory": ("proxystore.store.backends.memory:MemoryBackend",),
    "file": (
        "proxystore.store.file.backend:FileBackend",
        "proxystore.store.backends.file:FileBackend",
    ),
    "redis": (
        "proxystore.store.redis.backend:RedisBackend",
        "proxystore.store.backends.redis:RedisBackend",
    ),
    "redis_cluster": ("proxystore.store.redis:RedisClusterBackend",),
    "timing": ("proxystore.store.layers.timing:TimingLayer",),
    "signing": ("proxystore.store.layers.signing:SigningLayer",),
    "host_cache": ("proxystore.store.layers.host_cache:HostCacheLayer",),
    "stats": ("proxystore.store.stats:StatsRecorder",),
    "innermost": ("proxystore.store.layers:innermost", "proxystore.store.layers.base:innermost"),
    "globus_store": (
        "tests.support.globus_sim:make_globus_store",
        "tests.support.globus_sim:make_globus_store",
    ),
}
"""Where each backend (and what the suite builds them with) lives: candidates, in order."""


def resolve(name: str) -> Any:
    """Import :data:`BACKENDS` ``[name]``: the first candidate path that imports."""
    failures = []
    for path in BACKENDS[name]:
        module_name, _, attribute = path.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            failures.append(f"{path}: {exc}")
    raise ImportError(f"cannot import {name!r} from any of: {'; '.join(failures)}")


MB = 2**20
SIGNING_KEY = b"backend-contract-signing-key-32b"


@dataclass
class Case:
    """A backend under test, and what the suite must know about it."""

    kind: str
    backend: Any
    by_reference: bool = False
    """Keeps the single part it is given as it is (``MemoryBackend(by_reference=True)``)."""
    chunk_size: int | None = None
    """The largest value a Redis backend writes as one Redis value."""
    written: set[str] = field(default_factory=set)

    def put(self, key: str | None, parts: Sequence[Any]) -> str:
        """Put through the backend, remembering the key (evicted after the test)."""
        made = self.backend.put(key, parts)
        self.written.add(made)
        return str(made)

    def put_batch(self, items: Sequence[tuple[str | None, Sequence[Any]]]) -> list[str]:
        """Put a batch through the backend, remembering the keys."""
        made = list(self.backend.put_batch(items))
        self.written.update(made)
        return made


def redis_backend(address: tuple[str, int], **options: Any) -> Any:
    host, port = address
    chunk_size = options.pop("chunk_size", None)
    extra = {} if chunk_size is None else {"chunk_size": chunk_size}
    return resolve("redis")(host, port, options=options, store_name="contract", **extra)


def cluster_backend(address: tuple[str, int], **options: Any) -> Any:
    host, port = address
    chunk_size = options.pop("chunk_size", None)
    extra = {} if chunk_size is None else {"chunk_size": chunk_size}
    return resolve("redis_cluster")(host, port, options=options, store_name="contract", **extra)


CASES = [
    "memory",
    "memory-by-reference",
    "file-disk",
    "file-tmpfs",
    "redis-wire",
    "redis-py",
    "redis-chunked",
    "redis-cluster",
    "redis-cluster-striped",
    "globus",
    "timing(redis)",
    "signing(redis)",
    "host-cache(redis)",
    "signing(redis-cluster)",
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    """Each backend, fresh, with what it wrote evicted (and its resources closed) after."""
    kind = request.param
    cleanups: list[Callable[[], None]] = []

    def address() -> tuple[str, int]:
        return request.getfixturevalue("redis_address")  # type: ignore[no-any-return]

    if kind == "memory":
        made = Case(kind, resolve("memory")())
    elif kind == "memory-by-reference":
        made = Case(kind, resolve("memory")(by_reference=True), by_reference=True)
    elif kind == "file-disk":
        made = Case(kind, resolve("file")(str(tmp_path / "store"), store_name="contract"))
    elif kind == "file-tmpfs":
        mount = request.getfixturevalue("private_tmpfs")
        made = Case(
            kind, resolve("file")(os.path.join(mount("64m"), "store"), store_name="contract")
        )
    elif kind == "redis-wire":
        made = Case(kind, redis_backend(address()))
    elif kind == "redis-py":
        made = Case(kind, redis_backend(address(), max_connections=16))  # not a wire option
    elif kind == "redis-chunked":
        made = Case(kind, redis_backend(address(), chunk_size=4096), chunk_size=4096)
    elif kind == "redis-cluster":
        made = Case(kind, cluster_backend(request.getfixturevalue("redis_cluster_address")))
    elif kind == "redis-cluster-striped":  # values above 4 KiB striped over the masters
        cluster = request.getfixturevalue("redis_cluster_address")
        made = Case(kind, cluster_backend(cluster, chunk_size=4096), chunk_size=4096)
    elif kind == "signing(redis-cluster)":
        inner = cluster_backend(request.getfixturevalue("redis_cluster_address"), chunk_size=4096)
        made = Case(kind, resolve("signing")(inner, SIGNING_KEY, store_name="c"))
    elif kind == "globus":
        name = f"contract-globus-{uuid.uuid4().hex[:8]}"
        store = resolve("globus_store")(name, tmp_path, cache_size=0)
        from proxystore.store import unregister_store

        cleanups.append(lambda: unregister_store(name))
        cleanups.append(store.close)
        made = Case(kind, resolve("innermost")(store.backend))
    elif kind == "timing(redis)":
        made = Case(kind, resolve("timing")(redis_backend(address()), resolve("stats")()))
    elif kind == "signing(redis)":
        made = Case(kind, resolve("signing")(redis_backend(address()), SIGNING_KEY, store_name="c"))
    elif kind == "host-cache(redis)":
        directory = f"/dev/shm/proxystore-contract-{uuid.uuid4().hex[:8]}"
        cleanups.append(lambda: shutil.rmtree(directory, ignore_errors=True))
        inner = redis_backend(address())
        namespace = f"contract {uuid.uuid4().hex}"
        made = Case(kind, resolve("host_cache")(inner, directory, namespace=namespace))
    else:  # pragma: no cover - a new entry of CASES without its construction
        raise AssertionError(kind)
    try:
        yield made
    finally:
        for key in made.written:
            made.backend.evict(key)
        made.backend.close()
        for cleanup in cleanups:
            cleanup()


def stored(case: Case, parts: Sequence[Any]) -> Any:
    """What ``get`` returns for ``parts``: their bytes, or (by reference) the part itself."""
    return parts[0] if case.by_reference else b"".join(bytes(part) for part in parts)


def got(case: Case, key: str) -> Any:
    """The value under ``key`` (bytes, or the object by reference); fails if it is missing."""
    fetched = case.backend.get(key)
    assert fetched is not None, f"{key!r} is missing"
    value, _ = fetched
    return value if case.by_reference else bytes(value)


# -- put and get ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([b"one part"], id="bytes"),
        pytest.param([memoryview(b"a memoryview")], id="memoryview"),
        pytest.param([b"several ", memoryview(b"parts "), bytearray(b"in order")], id="parts"),
        pytest.param([b""], id="empty"),
        pytest.param([b"\x00\xff" * 100, b"\x00"], id="binary"),
    ],
)
def test_put_then_get_returns_the_parts_bytes(case: Case, parts: list[Any]) -> None:
    if case.by_reference and len(parts) > 1:
        pytest.skip("a by-reference backend keeps one part: the object itself")
    key = case.put(None, parts)
    assert isinstance(key, str) and key
    assert case.backend.exists(key)
    value = got(case, key)
    if case.by_reference:
        assert value is parts[0]
    else:
        assert value == stored(case, parts)


def test_a_custom_key_is_kept_and_overwritten(case: Case) -> None:
    key = f"contract-{uuid.uuid4().hex}"
    assert case.put(key, [b"first"]) == key
    assert not case.backend.is_immutable(key), "custom keys may be overwritten"
    assert got(case, key) == stored(case, [b"first"])
    assert case.put(key, [b"second, longer"]) == key
    assert got(case, key) == stored(case, [b"second, longer"])


def test_a_missing_key_is_none_everywhere(case: Case) -> None:
    missing = f"contract-missing-{uuid.uuid4().hex}"
    assert case.backend.get(missing) is None
    assert case.backend.timestamp(missing) is None
    assert case.backend.exists(missing) is False


def test_new_keys_are_unique(case: Case) -> None:
    keys = [case.put(None, [b"x"]) for _ in range(30)]
    keys += case.put_batch([(None, [b"y"]) for _ in range(10)])
    assert len(set(keys)) == len(keys) == 40


# -- write times ----------------------------------------------------------------------------------


def test_get_returns_the_write_time_and_it_never_goes_back(case: Case) -> None:
    key = f"contract-{uuid.uuid4().hex}"
    times = []
    for round_ in range(5):
        case.put(key, [b"version %d" % round_])
        stamp = case.backend.timestamp(key)
        assert isinstance(stamp, float | int) and stamp == stamp  # a number, not NaN
        fetched = case.backend.get(key)
        assert fetched is not None
        assert fetched[1] == stamp, "get returns the write time timestamp() reports"
        times.append(float(stamp))
    assert times == sorted(times), f"write times went back: {times}"
    if not case.by_reference and not isinstance(case.backend, resolve("memory")):
        # Wall-clock times (a write counter for memory backends): seconds since the epoch.
        assert 1.6e9 < times[-1] < 4e9, times


# -- exists, evict --------------------------------------------------------------------------------


def test_evict_removes_and_is_idempotent(case: Case) -> None:
    key, other = case.put(None, [b"evicted"]), case.put(None, [b"kept"])
    case.backend.evict(key)
    assert not case.backend.exists(key)
    assert case.backend.get(key) is None and case.backend.timestamp(key) is None
    case.backend.evict(key)  # again: not an error
    case.backend.evict(f"contract-never-{uuid.uuid4().hex}")  # never written: not an error
    assert case.backend.exists(other) and got(case, other) == stored(case, [b"kept"])


# -- batches --------------------------------------------------------------------------------------


def test_put_batch_returns_the_keys_in_order(case: Case) -> None:
    custom = f"contract-{uuid.uuid4().hex}"
    values = [[b"first"], [b"sec", b"ond"], [b""], [b"last" * 1000]]
    if case.by_reference:
        values = [[b"first"], [b"second"], [b""], [b"last" * 1000]]
    keys = case.put_batch([(None, values[0]), (custom, values[1]), (None, values[2]),
                           (None, values[3])])  # fmt: skip
    assert len(keys) == 4 and keys[1] == custom and len(set(keys)) == 4
    for key, parts in zip(keys, values):
        assert got(case, key) == stored(case, parts), key


def test_an_empty_batch_is_no_keys(case: Case) -> None:
    assert case.backend.put_batch([]) == []


# -- immutability ---------------------------------------------------------------------------------


def test_an_immutable_object_never_changes(case: Case) -> None:
    key = case.put(None, [b"original"])
    if not case.backend.is_immutable(key):
        assert case.put(key, [b"replaced"]) == key  # then it may be overwritten
        assert got(case, key) == stored(case, [b"replaced"])
        return
    before = case.backend.timestamp(key)
    with pytest.raises(StoreError, match=key):
        case.backend.put(key, [b"replaced"])
    assert got(case, key) == stored(case, [b"original"])
    assert case.backend.timestamp(key) == before


# -- clear ----------------------------------------------------------------------------------------


def test_clear_empties_owned_storage_and_refuses_shared_storage(case: Case) -> None:
    keys = [case.put(None, [b"a"]), case.put(f"contract-{uuid.uuid4().hex}", [b"b"])]
    if case.backend.owns_storage:
        case.backend.clear()
        assert not any(case.backend.exists(key) for key in keys)
        case.put(None, [b"after clear"])  # still usable
        return
    with pytest.raises(StoreError) as raised:
        case.backend.clear()
    assert "shared" in str(raised.value) and "evict" in str(raised.value)
    assert all(case.backend.exists(key) for key in keys), "a refused clear removes nothing"


# -- close ----------------------------------------------------------------------------------------


def test_close_keeps_the_objects_and_the_backend_may_be_used_again(case: Case) -> None:
    key = case.put(None, [b"survives close"])
    case.backend.close()
    case.backend.close()  # twice: not an error
    assert case.backend.exists(key)
    assert got(case, key) == stored(case, [b"survives close"])
    again = case.put(None, [b"written after close"])
    assert got(case, again) == stored(case, [b"written after close"])


# -- large values ---------------------------------------------------------------------------------


def test_large_values_round_trip(case: Case) -> None:
    if case.by_reference:
        obj = bytearray(8 * MB)
        assert got(case, case.put(None, [obj])) is obj
        return
    block = os.urandom(MB)
    parts = [block * 5, memoryview(block * 3)[1:], b"tail"]  # 8 MB, unevenly split
    key = case.put(None, parts)
    assert got(case, key) == stored(case, parts)
    if case.chunk_size is not None:  # just above one chunk, and several chunks plus one byte
        for size in (case.chunk_size + 1, 3 * case.chunk_size + 1):
            value = block[:size]
            key = case.put(None, [value[:100], value[100:]])
            assert got(case, key) == value, size


# -- threads --------------------------------------------------------------------------------------


def test_concurrent_puts_and_gets_from_threads(case: Case) -> None:
    shared = case.put(None, [b"shared" * 1000])
    threads, rounds = 8, 20
    lock = threading.Lock()

    def work(index: int) -> int:
        for round_ in range(rounds):
            value = b"%d:%d:" % (index, round_) + bytes([index]) * (1000 * round_)
            key = case.backend.put(None, [value])
            with lock:
                case.written.add(key)
            assert got(case, key) == value
            assert got(case, shared) == stored(case, [b"shared" * 1000])
            case.backend.evict(key)
            assert not case.backend.exists(key)
        return index

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(work, index) for index in range(threads)]
        assert [future.result(timeout=120) for future in futures] == list(range(threads))
