"""FileStore: atomic writes, key validation, timestamps for strict, directory handling."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import InvalidKeyError, SerializationError, StoreError
from proxystore.proxy import extract
from proxystore.store import init_store, unregister_store
from proxystore.store.file import FileStore, is_memory_file_system

SHM = "/dev/shm"


@pytest.fixture(params=["disk", "memory"])
def store(request: pytest.FixtureRequest, store_factory: Any) -> Iterator[FileStore]:
    """A FileStore on a disk file system (reads) and on a memory one (memory-mapped reads)."""
    if request.param == "disk":
        made = store_factory("file")
        assert isinstance(made, FileStore)
        assert not made.zero_copy
        yield made
        return
    if not (os.path.isdir(SHM) and is_memory_file_system(SHM)):
        pytest.skip(f"{SHM} is not a memory file system here")
    name = f"shm-{uuid.uuid4().hex[:8]}"
    made = init_store("file", name, store_dir=tempfile.mkdtemp(dir=SHM))
    assert isinstance(made, FileStore) and made.zero_copy
    try:
        yield made
    finally:
        made.cleanup()
        unregister_store(name)


def twin(store: FileStore) -> FileStore:
    """A second, unregistered store object on the same directory (another "process")."""
    return FileStore(f"{store.name}-twin", store_dir=store.store_dir, cache_size=0)


def test_one_file_per_key_and_nothing_else(store: FileStore) -> None:
    keys = [store.set(np.arange(1000) * i) for i in range(3)]
    keys.append(store.set("x", key="custom-key"))
    store.set("y", key="custom-key")  # overwrite
    assert sorted(os.listdir(store.store_dir)) == sorted(keys)


def test_failing_serialization_leaves_no_file(store: FileStore) -> None:
    with pytest.raises(SerializationError):
        store.set(threading.Lock(), key="never")
    assert os.listdir(store.store_dir) == []


def test_failing_rename_leaves_no_temp_file_and_names_path(store: FileStore) -> None:
    # A non-empty directory where the file should go: the rename fails even for root.
    blocker = Path(store.store_dir) / "blocked"
    blocker.mkdir()
    (blocker / "inside").write_text("keep")
    with pytest.raises(StoreError) as info:
        store.set(np.arange(10_000), key="blocked")
    assert str(blocker) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert os.listdir(store.store_dir) == ["blocked"]  # no temporary file left behind
    assert (blocker / "inside").read_text() == "keep"


WRITE_BEYOND_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import os, resource, signal, sys
    import numpy as np
    from proxystore.exceptions import StoreError
    from proxystore.store.file import FileStore

    # A genuine mid-write failure: files may not grow past 4 KiB (EFBIG instead of SIGXFSZ).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    store = FileStore("limited", store_dir=sys.argv[1])
    small = store.set("small is fine", key="small")
    try:
        store.set(np.arange(100_000), key="big")
    except StoreError as exc:
        assert isinstance(exc.__cause__, OSError), exc.__cause__
        assert "big" in str(exc), str(exc)
    else:
        raise AssertionError("write beyond RLIMIT_FSIZE did not fail")
    try:
        store.set(np.arange(100_000), key="small")  # failed overwrite keeps the old value
    except StoreError:
        pass
    assert store.get("small") == "small is fine"
    print(sorted(os.listdir(sys.argv[1])))
    """
)


def test_failing_write_leaves_no_temp_file_and_keeps_old_value(tmp_path: Path) -> None:
    store_dir = tmp_path / "limited"
    result = subprocess.run(
        [sys.executable, "-c", WRITE_BEYOND_FILE_SIZE_LIMIT, str(store_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['small']"
    assert sorted(os.listdir(store_dir)) == ["small"]


def visible(directory: str) -> list[str]:
    """The names in ``directory`` but the files kept for page reuse (``.pool-...``)."""
    return sorted(name for name in os.listdir(directory) if not name.startswith(".pool-"))


def test_readers_never_see_partial_objects(store: FileStore) -> None:
    """A reader polling a key while a writer overwrites it sees only whole versions."""
    versions = [np.full(500_000, i, dtype=np.float64) for i in range(2)]  # 4 MB each
    key = store.set(versions[0])
    reader = twin(store)
    stop = threading.Event()
    seen: list[float] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                got = reader.get(key)
                assert got.shape == versions[0].shape
                first = float(got[0])
                assert (got == first).all()  # one version, never a mix or a truncation
                seen.append(first)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(40):
            store.set(versions[i % 2], key=key)
            # The temporary file is gone (a replaced file may be kept for page reuse).
            assert visible(store.store_dir) == [key]
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors[0]
    assert seen and set(seen) <= {0.0, 1.0}
    assert visible(store.store_dir) == [key]


@pytest.mark.parametrize("key", ["", "../x", "a/b", ".hidden", "..", ".", "nul\x00byte"])
def test_invalid_keys(store: FileStore, key: str) -> None:
    for action in (
        lambda: store.set("v", key=key),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.evict(key),
        lambda: store.get_timestamp(key),
        lambda: extract(store.proxy(key=key)),
    ):
        with pytest.raises(InvalidKeyError) as info:
            action()
        assert info.value.key == key
        assert repr(key) in str(info.value)
        assert isinstance(info.value, ValueError)
    assert os.listdir(store.store_dir) == []
    assert not (Path(store.store_dir).parent / "x").exists()


def test_cleanup_removes_directory(store_factory: Any) -> None:
    store = store_factory("file")
    store.set(np.arange(10))
    assert os.path.isdir(store.store_dir)
    store.cleanup()
    assert not os.path.exists(store.store_dir)
    store.cleanup()  # idempotent


def test_store_dir_is_created_nested(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "c"
    store = FileStore("nested", store_dir=nested)
    try:
        assert nested.is_dir()
        assert store.get(store.set(1)) == 1
        assert store.store_dir == str(nested)
    finally:
        store.cleanup()


def test_relative_store_dir_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = FileStore("relative", store_dir="rel")
    try:
        assert store.store_dir == str(tmp_path / "rel")
        assert store.factory_kwargs()["store_dir"] == str(tmp_path / "rel")
    finally:
        store.cleanup()


def test_uncreatable_store_dir_names_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target = blocker / "store"
    with pytest.raises(StoreError) as info:
        FileStore("bad", store_dir=target)
    assert str(target) in str(info.value)
    assert info.value.store_name == "bad"
    assert isinstance(info.value.__cause__, OSError)


def test_timestamps_differ_across_quick_overwrites(store: FileStore) -> None:
    key = "stamp"
    stamps = []
    for i in range(50):
        store.set(i, key=key)
        stamps.append(store.get_timestamp(key))
    assert len(set(stamps)) == len(stamps)
    assert stamps == sorted(stamps)


def test_strict_sees_every_rapid_overwrite(store: FileStore) -> None:
    key = "rapid"
    writer = twin(store)
    store.set(-1, key=key)
    assert store.get(key) == -1
    for i in range(200):
        writer.set(i, key=key)  # behind the cache of ``store``
        assert store.get(key, strict=True) == i
        assert store.is_cached(key, strict=True)
    assert store.proxy(key=key, strict=True) == 199


def test_missing_timestamp_is_key_error(store: FileStore) -> None:
    with pytest.raises(KeyError):
        store.get_timestamp("not-there")


def test_large_array_roundtrip_shares_read_buffer(store: FileStore) -> None:
    array = np.random.default_rng(0).random((500, 400))
    key = store.set(array)
    got = twin(store).get(key)
    assert np.array_equal(got, array)
    assert got.flags.writeable
    assert os.path.getsize(os.path.join(store.store_dir, key)) < array.nbytes + 4096


def test_factory_carries_directory(store: FileStore) -> None:
    p = store.proxy([1])
    factory = p.__factory__
    assert factory.store_kwargs["store_dir"] == store.store_dir
    assert "store_dir" in repr(store) and store.store_dir in repr(store)


def test_long_keys_up_to_the_name_limit(store_factory: Any) -> None:
    store = store_factory("file")
    key = "k" * 250  # the temporary name does not grow with the key
    assert store.set("value", key=key) == key
    assert store.get(key) == "value"
    store.evict(key)
