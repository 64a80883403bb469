"""FileSettings: a FileStore's arguments validated once, the decisions made before building,
the description that re-creates an equal store, and FileFactory on proxies."""

from __future__ import annotations

import dataclasses
import os
import pickle
import secrets
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import StoreError
from proxystore.proxy import extract, get_factory
from proxystore.store import get_store, unregister_store
from proxystore.store.base import StoreFactory
from proxystore.store.file import (
    FileBackend,
    FileFactory,
    FileSettings,
    FileStore,
    is_memory_file_system,
)
from proxystore.store.layers import SigningLayer, innermost
from proxystore.store.settings import LayerSettings

MB = 1 << 20


def name() -> str:
    return f"settings-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def disk(tmp_path: Path) -> str:
    """A directory on a file system that is not in memory."""
    if is_memory_file_system(str(tmp_path)):
        pytest.skip("tmp_path is on a memory file system")
    return str(tmp_path)


@pytest.fixture
def shm(private_tmpfs: Any) -> str:
    return str(private_tmpfs("64m"))


@pytest.fixture
def stores() -> Iterator[list[FileStore]]:
    made: list[FileStore] = []
    yield made
    for store in made:
        store.close()


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("store_dir", 5, TypeError),
        ("store_dir", b"/tmp/bytes", TypeError),
        ("zero_copy", "yes", TypeError),
        ("readonly", 1, TypeError),
        ("shared", "no", TypeError),
        ("create_dir", None, TypeError),
        ("cache_size", -1, ValueError),
        ("page_pool_bytes", 0.5, TypeError),
        ("page_pool_idle", float("nan"), ValueError),
        ("host_cache_bytes", 0, ValueError),
        ("signing_key", "text", TypeError),
        ("signing_key", b"short", ValueError),
    ],
)
def test_a_bad_option_is_refused_at_construction_naming_it(
    tmp_path: Path, option: str, value: object, error: type[Exception]
) -> None:
    kwargs: dict[str, Any] = {"store_dir": str(tmp_path / "store"), option: value}
    store_name = name()
    with pytest.raises(error) as info:
        FileStore(store_name, **kwargs)
    message = str(info.value)
    assert f"FileStore {store_name!r}" in message
    assert option in message or option == "signing_key"  # the signing layer names the key
    assert os.listdir(tmp_path) == []  # refused before anything was made


def test_layers_must_be_layer_settings(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="layers must be LayerSettings"):
        FileSettings("s", store_dir=str(tmp_path), layers={"host_cache": None})  # type: ignore[arg-type]


def test_zero_copy_off_memory_is_refused_before_the_directory_is_made(disk: str) -> None:
    target = os.path.join(disk, "store")
    with pytest.raises(StoreError, match="zero_copy=True needs store_dir on a memory") as info:
        FileStore(name(), store_dir=target, zero_copy=True)
    assert target in str(info.value)
    assert not os.path.exists(target)  # the old constructor had made (and kept) it


def test_readonly_without_mapping_or_host_cache_is_refused(disk: str) -> None:
    with pytest.raises(ValueError, match="readonly=True applies to zero-copy"):
        FileSettings("s", store_dir=disk, layers=LayerSettings(readonly=True))
    assert os.listdir(disk) == []


def test_host_cache_with_a_store_dir_in_memory_is_refused(shm: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already maps without a copy"):
        FileStore(name(), store_dir=os.path.join(shm, "s"), host_cache=os.path.join(shm, "c"))
    assert os.listdir(shm) == []


def test_the_settings_decide_before_the_backend_is_built(shm: str, disk: str) -> None:
    """Zero-copy, read-only and the pool are decided by the settings and given to the
    backend's constructor, which nothing changes afterwards."""
    on_shm = FileSettings(
        "a", store_dir=shm, page_pool_bytes=8 * MB, layers=LayerSettings(readonly=True)
    )
    assert (on_shm.on_memory, on_shm.mapped, on_shm.readonly) == (True, True, True)
    backend, codec = on_shm.build()
    files = innermost(backend)
    assert isinstance(files, FileBackend) and files is backend  # no layer was asked for
    assert (files.zero_copy, files.readonly, files.locking) == (True, True, True)
    assert files.pool is not None and files.pool.limit == 8 * MB
    assert codec.cache_buffers and not codec.copy_readonly  # read-only mappings are shared
    files.close()

    forced_off = FileSettings("b", store_dir=shm, zero_copy=False, page_pool_bytes=0)
    assert (forced_off.on_memory, forced_off.mapped) == (True, False)
    files = innermost(forced_off.build()[0])
    assert isinstance(files, FileBackend)
    assert (files.zero_copy, files.pool, files.locking) == (False, None, True)

    on_disk = FileSettings("c", store_dir=disk, page_pool_bytes=8 * MB)
    assert (on_disk.on_memory, on_disk.mapped) == (False, False)
    files = innermost(on_disk.build()[0])
    assert isinstance(files, FileBackend)
    assert (files.zero_copy, files.pool, files.locking) == (False, None, False)
    assert not hasattr(files, "reuse_pages")


def test_options_are_normalized_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = FileSettings(
        "n",
        store_dir="rel",
        cache_size=np.int64(3),  # type: ignore[arg-type]
        page_pool_bytes=np.int64(8 * MB),  # type: ignore[arg-type]
        page_pool_idle=np.float32(5),  # type: ignore[arg-type]
        layers=LayerSettings(host_cache="cache", signing_key=bytearray(32)),  # type: ignore[arg-type]
    )
    assert settings.store_dir == str(tmp_path / "rel")
    assert (type(settings.cache_size), type(settings.page_pool_bytes)) == (int, int)
    assert type(settings.page_pool_idle) is float and settings.page_pool_idle == 5.0
    assert settings.layers.host_cache == str(tmp_path / "cache")
    assert type(settings.layers.signing_key) is bytes
    assert "signing_key=***" in repr(settings) and "\\x00" not in repr(settings)


def test_the_description_is_the_settings_kwargs(tmp_path: Path, stores: list[FileStore]) -> None:
    store = FileStore(name(), store_dir=tmp_path / "d", cache_size=3, shared=False)
    stores.append(store)
    kwargs = store.description.kwargs
    assert dict(kwargs) == store.settings.kwargs()
    assert kwargs == {"store_dir": str(tmp_path / "d"), "cache_size": 3, "create_dir": False}


def configurations(shm: str, disk: str) -> list[dict[str, Any]]:
    key = secrets.token_bytes(32)
    return [
        {"store_dir": os.path.join(disk, "plain")},
        {"store_dir": os.path.join(disk, "signed"), "signing_key": key, "cache_size": 0},
        {
            "store_dir": os.path.join(disk, "tier"),
            "host_cache": os.path.join(shm, "tier"),
            "host_cache_bytes": 4 * MB,
            "host_cache_wait": 2.5,
            "readonly": True,
        },
        {"store_dir": os.path.join(shm, "mapped"), "readonly": True},
        {"store_dir": os.path.join(shm, "cow"), "page_pool_bytes": 8 * MB, "page_pool_idle": 5},
        {"store_dir": os.path.join(shm, "read"), "zero_copy": False, "page_pool_bytes": 0},
    ]


@pytest.mark.parametrize("index", range(6))
def test_a_description_re_creates_an_equal_store(
    shm: str, disk: str, index: int, stores: list[FileStore]
) -> None:
    kwargs = configurations(shm, disk)[index]
    store_name = name()
    original = FileStore(store_name, **kwargs)
    stores.append(original)
    description = pickle.loads(pickle.dumps(original.description))
    rebuilt = FileStore(description.name, **description.kwargs)
    stores.append(rebuilt)
    assert rebuilt.settings == original.settings
    assert rebuilt.description == original.description
    assert not rebuilt.settings.create_dir  # a re-created store never makes the directory
    for attribute in ("store_dir", "zero_copy", "readonly", "shared", "cache_size", "codec"):
        assert getattr(rebuilt, attribute) == getattr(original, attribute), attribute
    assert type(rebuilt.backend) is type(original.backend)
    pools = [store.files.pool for store in (original, rebuilt)]
    assert [None if p is None else (p.limit, p.idle) for p in pools] == [
        None if pools[0] is None else (pools[0].limit, pools[0].idle)
    ] * 2
    data = np.arange(MB // 8, dtype=np.int64)
    key = original.set(data)
    assert np.array_equal(rebuilt.get(key), data)
    if "signing_key" in kwargs:
        assert isinstance(rebuilt.backend, SigningLayer)


def test_a_changed_setting_makes_a_different_description(tmp_path: Path) -> None:
    one = FileSettings("s", store_dir=tmp_path, cache_size=1)
    assert one == FileSettings("s", store_dir=tmp_path, cache_size=1, create_dir=False)
    assert one != dataclasses.replace(one, cache_size=2)
    assert dataclasses.replace(one, cache_size=2).kwargs()["cache_size"] == 2


CHILD = textwrap.dedent(
    """
    import pickle, sys
    from proxystore.proxy import extract, get_factory
    proxy = pickle.load(sys.stdin.buffer)
    value = extract(proxy)
    factory = get_factory(proxy)
    print(type(factory).__module__, type(factory).__qualname__, int(value.sum()))
    """
)


def test_proxies_carry_a_file_factory_named_by_the_package(
    tmp_path: Path, stores: list[FileStore]
) -> None:
    store = FileStore(name(), store_dir=tmp_path / "f")
    stores.append(store)
    assert FileStore.factory_class is FileFactory and issubclass(FileFactory, StoreFactory)
    assert FileStore.type_path() == "proxystore.store.file:FileStore"
    data = np.arange(1000, dtype=np.int64)
    proxy = store.proxy(data)
    factory = get_factory(proxy)
    assert type(factory) is FileFactory
    assert factory.description == store.description  # type: ignore[attr-defined]
    pickled = pickle.dumps(proxy)
    assert b"proxystore.store.file.store" not in pickled  # the public path travels
    assert int(extract(pickle.loads(pickled)).sum()) == int(data.sum())
    made = get_store(store.name)  # the factory re-created the store from its description
    unregister_store(store.name)
    assert isinstance(made, FileStore) and made is not store
    assert made.settings == store.settings
    made.close()
    result = subprocess.run(  # a real process without the store re-creates it from the path
        [sys.executable, "-c", CHILD], input=pickled, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == [
        "proxystore.store.file",
        "FileFactory",
        str(int(data.sum())),
    ]
