"""Issue 22, signing: the signature covers the key and the write time, not only the bytes.

An attacker who can write the backend moves a signed object under another key, or changes the
write time a backend reports (the Redis value header, a file's modification time): both are an
``IntegrityError`` before anything is unpickled, and ``get_timestamp`` never returns a time
that was not verified. Real Redis (the ``redis_address`` fixture, written with redis-py as an
attacker would), real files.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import struct
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import ForeignValueError, IntegrityError
from proxystore.proxy import extract
from proxystore.store import init_store, unregister_store
from proxystore.store.base import Store
from proxystore.store.file import FileStore, is_memory_file_system
from proxystore.store.globus._keys import split_key
from proxystore.store.layers import SigningLayer, innermost
from proxystore.store.redis import RedisStore
from tests.support.redis_server import private_redis

KEY = secrets.token_bytes(32)
YEAR = 365 * 86_400.0
SHM = "/dev/shm"
TIME_OFFSET = 4  # the write time in the Redis value header: after the 4-byte magic


def redis_client(store: Store) -> Any:
    import redis

    inner = innermost(store.backend)
    return redis.Redis(host=inner.host, port=inner.port)  # type: ignore[attr-defined]


@pytest.fixture(params=["file", "shm", "redis", "redis-chunked"])
def signed(request: pytest.FixtureRequest, store_factory: Any) -> Iterator[Store]:
    """A signed store on disk files, on /dev/shm (zero-copy), in Redis (inline and chunked)."""
    kind = request.param
    if kind == "file":
        yield store_factory("file", signing_key=KEY)
    elif kind == "redis":
        yield store_factory("redis", signing_key=KEY)
    elif kind == "redis-chunked":
        yield store_factory("redis", signing_key=KEY, chunk_size=4096)
    else:
        if not (os.path.isdir(SHM) and is_memory_file_system(SHM)):
            pytest.skip(f"{SHM} is not a tmpfs")
        name = f"signed-shm-{uuid.uuid4().hex[:8]}"
        store = init_store("file", name, store_dir=tempfile.mkdtemp(dir=SHM), signing_key=KEY)
        try:
            yield store
        finally:
            store.cleanup()
            unregister_store(name)


def move(store: Store, source: str, target: str) -> None:
    """Put the stored bytes of ``source`` under ``target``, as an attacker with write access."""
    if isinstance(store, FileStore):
        shutil.copy2(  # the bytes and the modification time, under the other name
            os.path.join(store.store_dir, source), os.path.join(store.store_dir, target)
        )
        return
    client = redis_client(store)
    try:
        client.copy(source, target, replace=True)
        if client.exists(source + ":ps-chunks"):
            client.copy(source + ":ps-chunks", target + ":ps-chunks", replace=True)
    finally:
        client.close()


def shift_write_time(store: Store, key: str, seconds: float) -> None:
    """Change the write time the backend reports for ``key`` (header or file time)."""
    if isinstance(store, FileStore):
        path = os.path.join(store.store_dir, key)
        info = os.stat(path)
        shifted = info.st_mtime_ns + int(seconds * 1e9)
        os.utime(path, ns=(info.st_atime_ns, shifted))
        return
    client = redis_client(store)
    try:
        (written,) = struct.unpack("<d", client.getrange(key, TIME_OFFSET, TIME_OFFSET + 7))
        client.setrange(key, TIME_OFFSET, struct.pack("<d", written + seconds))
    finally:
        client.close()


def test_an_object_moved_under_another_key_is_refused(signed: Store) -> None:
    array = np.arange(20_000, dtype=np.float64)  # several chunks on the chunked store
    made = signed.set(array)
    other = signed.set(np.zeros(20_000))
    custom = f"custom-{uuid.uuid4().hex[:8]}"
    signed.set({"custom": True}, key=custom)
    cases = [
        (made, other),  # store-made over store-made
        (made, custom),  # store-made over a custom key
        (custom, f"new-{uuid.uuid4().hex[:8]}"),  # custom under a key that did not exist
    ]
    for source, target in cases:
        move(signed, source, target)
        proxy = signed.proxy(key=target)  # the key exists now (proxy(key=) checks that)
        signed.cache.clear()
        with pytest.raises(IntegrityError, match="moved from another key") as caught:
            signed.get(target)
        assert caught.value.key == target and target in str(caught.value)
        with pytest.raises(IntegrityError):
            extract(proxy)
    assert np.array_equal(signed.get(made), array)  # the source itself is intact


@pytest.mark.parametrize("shift", [-YEAR, YEAR])
def test_a_forged_write_time_is_refused_and_never_returned(signed: Store, shift: float) -> None:
    key = signed.set(np.arange(20_000, dtype=np.float64), key=f"k-{uuid.uuid4().hex[:8]}")
    before = time.time()
    signed.get(key)  # cached, with its verified time
    written = signed.get_timestamp(key)
    assert abs(written - before) < 60
    shift_write_time(signed, key, shift)
    with pytest.raises(IntegrityError, match="write time was changed"):
        signed.get_timestamp(key)
    with pytest.raises(IntegrityError, match="write time was changed"):
        signed.get(key, strict=True)  # strict revalidates: the cached copy is not trusted
    signed.cache.clear()
    with pytest.raises(IntegrityError, match="write time was changed"):
        signed.get(key)
    shift_write_time(signed, key, -shift)  # put back: verified again
    assert signed.get_timestamp(key) == written
    assert signed.get(key)[7] == 7.0


def test_verified_write_times_cost_no_fetch_and_strict_still_sees_new_versions() -> None:
    import redis

    with private_redis() as (_, port):
        store = RedisStore("signed-times", hostname="127.0.0.1", port=port, signing_key=KEY)
        writer = RedisStore("signed-writer", hostname="127.0.0.1", port=port, signing_key=KEY)
        client = redis.Redis(port=port)

        def served() -> int:
            return int(client.info("stats")["total_net_output_bytes"])

        try:
            key = f"k-{uuid.uuid4().hex[:8]}"
            store.set(np.zeros(1_000_000), key=key)  # 8 MB
            assert store.get(key)[0] == 0.0
            first = store.get_timestamp(key)
            start = served()
            for _ in range(5):
                assert store.get_timestamp(key) == first
                assert store.get(key, strict=True)[0] == 0.0  # the cached copy: current
            assert served() - start < 64 * 1024, "a verified version's time: headers only"
            time.sleep(0.01)
            writer.set(np.ones(1_000_000), key=key)
            assert store.get(key, strict=True)[0] == 1.0
            assert store.get_timestamp(key) > first
        finally:
            client.close()
            store.close()
            writer.close()


def test_old_format_signatures_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    plain = FileStore("old-plain", store_dir=tmp_path / "s")
    key = plain.set({"x": 1})
    fetched = innermost(plain.backend).get(key)
    assert fetched is not None
    body = bytes(fetched[0])
    old = b"PSS1" + hmac.new(KEY, body, hashlib.sha256).digest()  # the first format's trailer
    innermost(plain.backend).put(key, [body, old])
    signed = FileStore("old-signed", store_dir=tmp_path / "s", signing_key=KEY)
    with pytest.raises(IntegrityError, match=r"first signature format \(PSS1\)") as caught:
        signed.get(key)
    assert "write the object again" in str(caught.value)
    with pytest.raises(IntegrityError, match="no signature"):
        signed.get(plain.set({"y": 2}))


@pytest.mark.skipif(
    not (os.path.isdir(SHM) and is_memory_file_system(SHM)), reason=f"{SHM} is not a tmpfs"
)
def test_host_cache_copies_moved_under_another_key_are_refused(store_factory: Any) -> None:
    cache_dir = os.path.join(SHM, f"proxystore-sign-host-{uuid.uuid4().hex[:8]}")
    try:
        store = store_factory("redis", signing_key=KEY, host_cache=cache_dir, cache_size=0)
        assert isinstance(store.backend, SigningLayer)
        first = store.set(np.full(10_000, 1.0))
        second = store.set(np.full(10_000, 2.0))
        assert store.get(first)[0] == 1.0 and store.get(second)[0] == 2.0  # both cached
        copies = {
            name: os.path.join(root, name)
            for root, _, names in os.walk(cache_dir)
            if ".locks" not in root
            for name in names
        }
        target = os.stat(copies[second])
        shutil.copyfile(copies[first], copies[second])  # the host's copy of another key
        os.utime(copies[second], ns=(target.st_atime_ns, target.st_mtime_ns))  # looks fresh
        with pytest.raises(IntegrityError, match="moved from another key"):
            store.get(second)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def test_globus_objects_moved_to_a_custom_key_are_refused(store_factory: Any) -> None:
    store = store_factory("globus", signing_key=KEY)
    made = store.set({"made": True})
    custom = f"custom-{uuid.uuid4().hex[:8]}"
    other = f"other-{uuid.uuid4().hex[:8]}"
    store.set({"custom": True}, key=custom)
    store.set({"other": True}, key=other)
    local = innermost(store.backend).files.directory  # type: ignore[attr-defined]
    for source in (split_key(made)[0], custom):
        shutil.copy2(os.path.join(local, source), os.path.join(local, other))
        store.cache.clear()
        with pytest.raises(IntegrityError, match="moved from another key"):
            store.get(other)
    assert store.get(made) == {"made": True} and store.get(custom) == {"custom": True}


class Evil:
    """Unpickling this creates a marker directory: what an attacker's object would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def test_a_raw_redis_value_on_a_signed_store_runs_nothing(
    store_factory: Any, tmp_path: Path
) -> None:
    import pickle

    store = store_factory("redis", signing_key=KEY)
    key = store.set("the real object", key=f"raw-{uuid.uuid4().hex[:8]}")
    marker = tmp_path / "ran"
    client = redis_client(store)
    try:
        client.set(key, pickle.dumps(Evil(str(marker))))  # no ProxyStore header at all
    finally:
        client.close()
    store.cache.clear()
    # The backend finds no value of its own there (ForeignValueError); on a signed store that
    # is an object without a valid signature: IntegrityError, and nothing of it deserialized.
    for call in (store.get, store.get_timestamp):
        with pytest.raises(IntegrityError) as caught:
            call(key)
        assert key in str(caught.value) and caught.value.key == key
        assert isinstance(caught.value.__cause__, ForeignValueError)
    with pytest.raises(IntegrityError):
        extract(store.proxy(key=key))
    assert not marker.exists()
