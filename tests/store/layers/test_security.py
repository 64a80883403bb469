"""Issue 11: private FileStore directories, signed objects (IntegrityError), secrets hidden.

"Another user" is uid 65534 (nobody), reached with ``os.setuid`` in a forked child (the
suite runs as root).
"""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from proxystore.exceptions import IntegrityError, StoreError
from proxystore.proxy import Proxy, extract
from proxystore.store import get_store, init_store, unregister_store
from proxystore.store.base import Store
from proxystore.store.file import FileStore, is_memory_file_system
from proxystore.store.file._maps import is_mapped
from proxystore.store.layers import SigningLayer, innermost

SHM = "/dev/shm"
NOBODY = 65534
KEY = secrets.token_bytes(32)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
needs_shm = pytest.mark.skipif(
    not (os.path.isdir(SHM) and is_memory_file_system(SHM)), reason=f"{SHM} is not a tmpfs"
)


def as_user(uid: int, action: Callable[[], object]) -> None:
    """Run ``action`` in a forked child as ``uid``; fail if it fails."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.umask(0o022)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the other user's action failed"


@pytest.fixture
def shm_path() -> Iterator[str]:
    """A path under /dev/shm (world-writable, sticky) that nobody has created yet."""
    path = os.path.join(SHM, f"proxystore-sec-{uuid.uuid4().hex[:8]}")
    yield path
    if os.path.islink(path):
        os.unlink(path)
    shutil.rmtree(path, ignore_errors=True)


# -- the directory rule ---------------------------------------------------------------------------


@needs_root
@needs_shm
def test_a_directory_planted_by_another_user_is_refused(shm_path: str) -> None:
    as_user(NOBODY, lambda: os.mkdir(shm_path, 0o755))
    assert os.stat(shm_path).st_uid == NOBODY
    with pytest.raises(StoreError) as info:
        FileStore("victim", store_dir=shm_path)
    message = str(info.value)
    assert shm_path in message and "owned by" in message and "65534" in message
    assert "shared=True" in message  # and how to share on purpose
    assert os.listdir(shm_path) == []  # nothing of ours was written there


@needs_root
@needs_shm
def test_a_symlink_planted_by_another_user_is_refused(shm_path: str, tmp_path: Path) -> None:
    target = f"{shm_path}-target"
    as_user(NOBODY, lambda: (os.mkdir(target, 0o700), os.symlink(target, shm_path)))
    try:
        with pytest.raises(StoreError) as info:
            FileStore("victim", store_dir=shm_path)
        assert shm_path in str(info.value) and "symbolic link" in str(info.value)
        assert os.listdir(target) == []
        # a link of our own is refused too: pass the real directory
        (tmp_path / "real").mkdir(mode=0o700)
        (tmp_path / "link").symlink_to(tmp_path / "real")
        with pytest.raises(StoreError, match="symbolic link"):
            FileStore("mine", store_dir=tmp_path / "link")
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_group_or_world_writable_directories_are_refused(tmp_path: Path) -> None:
    for mode, reason in ((0o770, "its group may write it"), (0o777, "every user may write")):
        directory = tmp_path / f"d{mode:o}"
        directory.mkdir()
        directory.chmod(mode)
        with pytest.raises(StoreError, match=reason) as info:
            FileStore("loose", store_dir=directory)
        assert str(directory) in str(info.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        FileStore("notdir", store_dir=tmp_path / "file")


@needs_root
def test_shared_accepts_a_group_directory_of_another_user(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    directory = tmp_path / "team"
    directory.mkdir()
    os.chown(directory, NOBODY, os.getegid())
    directory.chmod(0o2770)  # group-writable, set-gid: how users set up a shared directory
    with pytest.raises(StoreError, match="owned by"):
        FileStore("team", store_dir=directory)
    store = FileStore("team", store_dir=directory, shared=True, signing_key=KEY)
    key = store.set([1, 2])
    assert stat.S_IMODE(os.stat(directory / key).st_mode) == 0o640
    assert store.get(key) == [1, 2]
    assert store.description.kwargs["shared"] is True
    directory.chmod(0o2777)
    with pytest.raises(StoreError, match="every user may write"):
        FileStore("team", store_dir=directory, shared=True)


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o077])
def test_private_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        store = FileStore("modes", store_dir=tmp_path / "a" / "store")
        key = store.set(np.arange(10))
        store.set("again", key=key)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(store.store_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(store.store_dir, key)).st_mode) == 0o600


def test_shared_store_new_directory_modes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = FileStore("team", store_dir=tmp_path / "new", shared=True)
        key = store.set("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(store.store_dir).st_mode) == 0o2770
    assert stat.S_IMODE(os.stat(os.path.join(store.store_dir, key)).st_mode) == 0o640


# -- signed objects -------------------------------------------------------------------------------


class Evil:
    """Unpickling this creates a marker file: what an attacker's object would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


@pytest.fixture(params=["file", "shm", "redis"])
def signed(request: pytest.FixtureRequest, store_factory: Any) -> Iterator[Store]:
    """A signed store on disk files, on /dev/shm (zero-copy) and in Redis."""
    if request.param != "shm":
        yield store_factory(request.param, signing_key=KEY)
        return
    if not (os.path.isdir(SHM) and is_memory_file_system(SHM)):
        pytest.skip(f"{SHM} is not a tmpfs")
    name = f"signed-shm-{uuid.uuid4().hex[:8]}"
    store = init_store("file", name, store_dir=tempfile.mkdtemp(dir=SHM), signing_key=KEY)
    assert isinstance(store, FileStore) and store.zero_copy
    try:
        yield store
    finally:
        store.cleanup()
        unregister_store(name)


def twin(store: Store, signing_key: bytes | None) -> Store:
    """Another store object on the same backend storage, signing with another key or not."""
    kwargs = dict(store.description.kwargs)
    kwargs.pop("signing_key", None)
    kwargs.pop("create_dir", None)
    if signing_key is not None:
        kwargs["signing_key"] = signing_key
    return type(store)(f"{store.name}-attacker", **kwargs)


def flip_a_bit(store: Store, key: str, offset: int) -> None:
    """Flip one bit of the stored bytes, as a failing disk or an attacker would."""
    inner = innermost(store.backend)
    if isinstance(store, FileStore):
        with open(os.path.join(store.store_dir, key), "r+b") as file:
            file.seek(offset)
            byte = file.read(1)
            file.seek(offset)
            file.write(bytes([byte[0] ^ 0x10]))
        return
    import redis

    from proxystore.store.redis._clients import HEADER

    client = redis.Redis(host=inner.host, port=inner.port)  # type: ignore[attr-defined]
    try:
        position = HEADER.size + offset  # after the value header
        byte = client.getrange(key, position, position)
        client.setrange(key, position, bytes([byte[0] ^ 0x10]))
    finally:
        client.close()


def test_signed_objects_round_trip(signed: Store) -> None:
    array = np.arange(300_000, dtype=np.float64)
    key = signed.set(array)
    assert np.array_equal(signed.get(key), array)
    assert signed.get(signed.set({"a": "b"})) == {"a": "b"}
    assert np.array_equal(extract(signed.proxy(array)), array)
    assert isinstance(signed.backend, SigningLayer)


def test_a_flipped_bit_is_an_integrity_error(signed: Store) -> None:
    array = np.arange(300_000, dtype=np.float64)
    key = signed.set(array)
    proxy = signed.proxy(key=key)
    flip_a_bit(signed, key, 1_000_000)  # inside the array's data
    signed.cache.clear()
    with pytest.raises(IntegrityError) as info:
        signed.get(key)
    assert info.value.key == key and key in str(info.value) and signed.name in str(info.value)
    with pytest.raises(IntegrityError):
        extract(proxy)


@pytest.mark.parametrize("attacker_key", [None, b"k" * 32])
def test_a_replaced_pickle_is_refused_and_runs_nothing(
    signed: Store, tmp_path: Path, attacker_key: bytes | None
) -> None:
    key = signed.set("the real object", key=f"target-{uuid.uuid4().hex[:8]}")
    proxy = signed.proxy(key=key)
    marker = tmp_path / "ran"
    attacker = twin(signed, attacker_key)
    try:
        attacker.set(Evil(str(marker)), key=key)  # replaces the object in the backend
        signed.cache.clear()
        with pytest.raises(IntegrityError, match="signature"):
            signed.get(key)
        with pytest.raises(IntegrityError):
            extract(proxy)
        assert not marker.exists()  # nothing of the object was executed
        if attacker_key is None:  # control: without a signature check, resolving runs it
            attacker.get(key)
            assert marker.exists()
    finally:
        attacker.close()


def test_a_raw_pickle_written_into_the_store_directory_runs_nothing(tmp_path: Path) -> None:
    store = FileStore("raw", store_dir=tmp_path / "s", signing_key=KEY)
    key = store.set(1)
    marker = tmp_path / "ran"
    (tmp_path / "s" / key).write_bytes(pickle.dumps(Evil(str(marker))))
    with pytest.raises(IntegrityError, match=r"no signature|does not match"):
        FileStore("raw2", store_dir=tmp_path / "s", signing_key=KEY).get(key)
    assert not marker.exists()


@needs_shm
def test_signed_zero_copy_stays_zero_copy(tmp_path: Path) -> None:
    directory = tempfile.mkdtemp(dir=SHM)
    try:
        store = FileStore("zc", store_dir=directory, signing_key=KEY, readonly=True)
        got = store.get(store.set(np.arange(1_000_000, dtype=np.float64)))
        base = got
        while not isinstance(base, memoryview):
            base = base.base
        assert is_mapped(base.obj) and not got.flags.writeable
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def resolve_in_child(proxy: Proxy) -> tuple[float, bool]:
    """Run in a spawned process: resolve the proxy; report whether its store signs."""
    value = float(np.sum(proxy))
    store = get_store(proxy)
    assert store is not None
    return value, isinstance(store.backend, SigningLayer)


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_a_signed_proxy_resolves_in_another_process(store_factory: Any, kind: str) -> None:
    store = store_factory(kind, signing_key=KEY)
    proxy = store.proxy(np.arange(1000, dtype=np.float64))
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        value, signs = pool.submit(resolve_in_child, proxy).result(timeout=120)
    assert value == float(np.arange(1000).sum()) and signs


def test_the_signing_key_is_never_shown(store_factory: Any) -> None:
    store = store_factory("file", signing_key=KEY)
    proxy = store.proxy([1])
    shown = " ".join(
        [repr(store), repr(store.description), repr(store.backend), repr(proxy.__factory__)]
    )
    for form in (KEY.hex(), repr(KEY), str(KEY)):
        assert form not in shown
    assert "signing_key=***" in repr(store.description)
    assert store.description.kwargs["signing_key"] == KEY  # it travels, like a password


def test_bad_signing_keys_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="bytes"):
        FileStore("k", store_dir=tmp_path / "a", signing_key="password")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 16 bytes"):
        FileStore("k", store_dir=tmp_path / "b", signing_key=b"short")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_unsigned_object_in_a_signed_store_is_refused(tmp_path: Path) -> None:
    plain = FileStore("plain", store_dir=tmp_path / "s")
    key = plain.set({"x": 1})
    with pytest.raises(IntegrityError, match="no signature"):
        FileStore("signed", store_dir=tmp_path / "s", signing_key=KEY).get(key)


def test_a_signed_globus_store_verifies_what_arrives(store_factory: Any, tmp_path: Path) -> None:
    store = store_factory("globus", signing_key=KEY)
    assert isinstance(store.backend, SigningLayer)
    key = store.set({"a": np.arange(10)})
    assert np.array_equal(store.get(key)["a"], np.arange(10))
    assert "signing_key=***" in repr(store.description)
    local = innermost(store.backend).files  # type: ignore[attr-defined]
    marker = tmp_path / "ran"
    matches = [p for p in Path(local.directory).iterdir() if p.name in key]
    assert matches, "the local copy of the object"
    matches[0].write_bytes(pickle.dumps(Evil(str(marker))))
    store.cache.clear()
    with pytest.raises(IntegrityError):
        store.get(key)
    assert not marker.exists()


def test_signed_chunked_redis_values(store_factory: Any) -> None:
    store = store_factory("redis", signing_key=KEY, chunk_size=4096)
    array = np.arange(50_000, dtype=np.float64)  # about 100 chunks, the signature in the last
    key = store.set(array)
    assert np.array_equal(store.get(key), array)
    plain = twin(store, None)
    try:
        plain.set(np.zeros(50_000), key=key)
        store.cache.clear()
        with pytest.raises(IntegrityError, match="no signature"):
            store.get(key)
    finally:
        plain.close()


@needs_shm
def test_signed_objects_mapped_from_the_host_cache_are_verified(
    store_factory: Any, tmp_path: Path
) -> None:
    cache_dir = os.path.join(SHM, f"proxystore-sec-host-{uuid.uuid4().hex[:8]}")
    try:
        store = store_factory("redis", signing_key=KEY, host_cache=cache_dir)
        assert isinstance(store.backend, SigningLayer)  # outermost: over the host tier
        array = np.arange(100_000, dtype=np.float64)
        key = store.set(array)
        assert np.array_equal(store.get(key), array)  # now in the host cache
        copies = [
            os.path.join(root, name)
            for root, _, names in os.walk(cache_dir)
            for name in names
            if name == key and ".locks" not in root
        ]
        assert len(copies) == 1
        marker = tmp_path / "ran"
        plain = twin(store, None)
        try:
            plain.set(Evil(str(marker)), key="unused")  # the attacker's bytes, unsigned
            payload = innermost(plain.backend).get("unused")
            assert payload is not None
            before = os.stat(copies[0])
            with open(copies[0], "wb") as copy:  # replace the host's copy, in place
                copy.write(bytes(payload[0]))
            os.utime(copies[0], ns=(before.st_atime_ns, before.st_mtime_ns))
        finally:
            plain.evict("unused")
            plain.close()
        store.cache.clear()
        with pytest.raises(IntegrityError):
            store.get(key)
        assert not marker.exists()
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
