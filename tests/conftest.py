from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxystore.store import Store, init_store, registered_stores, unregister_store
from tests.support.globus_sim import make_globus_store
from tests.support.redis_cluster import Cluster, private_cluster
from tests.support.redis_server import redis_server

STORE_KINDS = ["local", "file", "redis", "globus"]


@pytest.fixture(scope="session")
def redis_address() -> Iterator[tuple[str, int]]:
    """A real redis-server: private on a free port, or REDIS_HOST/REDIS_PORT."""
    with redis_server() as address:
        yield address


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A private loopback Redis Cluster of 3 masters (tests must not change its topology)."""
    with private_cluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_address(redis_cluster: Cluster) -> tuple[str, int]:
    """The address of one node of :func:`redis_cluster`."""
    return redis_cluster.host, redis_cluster.port


@pytest.fixture(autouse=True)
def _hygiene() -> Iterator[None]:
    """Fail a test that leaves a store registered or a proxystore thread running."""
    before = set(registered_stores())
    yield
    leaked = set(registered_stores()) - before
    for name in leaked:
        unregister_store(name)
    deadline = time.monotonic() + 5
    while True:
        threads = [t.name for t in threading.enumerate() if t.name.startswith("proxystore-")]
        if not threads or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not leaked, f"test left stores registered: {sorted(leaked)}"
    assert not threads, f"test left proxystore threads running: {threads}"


@pytest.fixture
def private_tmpfs(tmp_path: Path) -> Iterator[Any]:
    """Mount a private tmpfs of a given size (root only), so its usage is ours alone."""
    mounted: list[Path] = []

    def mount(size: str) -> str:
        target = tmp_path / f"tmpfs-{len(mounted)}"
        target.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target)],
            capture_output=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a private tmpfs: {result.stderr.decode().strip()}")
        mounted.append(target)
        return str(target)

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def make_store(
    kind: str, tmp_path: Path, redis_address: tuple[str, int] | None, **kwargs: Any
) -> Store:
    name = f"test-{kind}-{uuid.uuid4().hex[:8]}"
    if kind == "local":
        return init_store("local", name, **kwargs)
    if kind == "file":
        return init_store("file", name, store_dir=str(tmp_path / "store"), **kwargs)
    if kind == "redis":
        assert redis_address is not None
        host, port = redis_address
        return init_store("redis", name, hostname=host, port=port, **kwargs)
    if kind == "redis-cluster":  # large values striped (small chunks: striped early)
        assert redis_address is not None
        host, port = redis_address
        kwargs.setdefault("chunk_size", 4096)
        return init_store("redis", name, hostname=host, port=port, cluster=True, **kwargs)
    if kind == "globus":
        return make_globus_store(name, tmp_path, **kwargs)
    raise AssertionError(kind)


@pytest.fixture
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Make stores of a kind; every one is cleaned up and unregistered afterwards."""
    made: list[Store] = []

    def _make(kind: str, **kwargs: Any) -> Store:
        fixture = {"redis": "redis_address", "redis-cluster": "redis_cluster_address"}
        address = request.getfixturevalue(fixture[kind]) if kind in fixture else None
        store = make_store(kind, tmp_path, address, **kwargs)
        made.append(store)
        return store

    yield _make
    for store in made:
        store.cleanup()
        unregister_store(store.name)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(store_kind: str, store_factory: Any) -> Store:
    """One store of each kind: the contract suite runs over all of them."""
    return store_factory(store_kind)  # type: ignore[no-any-return]
