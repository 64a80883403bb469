"""Stores that workers on other hosts cannot reach, seen before any task runs."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import Any

import pytest

from proxystore.integrations.reachability import (
    is_loopback,
    is_this_host,
    reachability_problems,
    worker_host,
)
from proxystore.store import init_store, unregister_store

# An address of no interface here (TEST-NET-3, RFC 5737): only ever bound-tested, never contacted.
ELSEWHERE = "203.0.113.7"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.3.4.5", "::1", "[::1]"])
def test_loopback_names(host: str) -> None:
    assert is_loopback(host) and is_this_host(host)


def test_this_host_and_others() -> None:
    assert is_this_host(socket.gethostname())
    assert not is_this_host(ELSEWHERE)
    assert not is_this_host("some-other-node.cluster")  # names are not resolved
    assert worker_host("tcp://10.1.2.3:8786") == "10.1.2.3"
    assert worker_host("tls://[fd00::1]:40000") == "fd00::1"
    assert worker_host("10.1.2.3:1") == "10.1.2.3"


def test_node_local_directory_with_remote_workers(tmp_path: Path) -> None:
    store = init_store("file", "reach-file", store_dir="/dev/shm/proxystore-reach-test")
    try:
        assert reachability_problems(store, ["127.0.0.1", socket.gethostname()]) == []
        (problem,) = reachability_problems(store, [ELSEWHERE, "127.0.0.1"])
        assert "/dev/shm/proxystore-reach-test" in problem and "tmpfs" in problem
        assert ELSEWHERE in problem and "shared by all hosts" in problem
    finally:
        store.cleanup()
        unregister_store("reach-file")


def test_loopback_redis_with_remote_workers(redis_address: tuple[str, int]) -> None:
    _, port = redis_address
    store = init_store("redis", "reach-redis", hostname="localhost", port=port)
    try:
        assert reachability_problems(store, ["127.0.0.1"]) == []
        (problem,) = reachability_problems(store, [ELSEWHERE])
        assert "'localhost'" in problem and "each worker's own machine" in problem
    finally:
        unregister_store("reach-redis")


def test_proxy_client_on_one_host_does_not_warn(store_factory: Any) -> None:
    distributed = pytest.importorskip("distributed")
    from proxystore.integrations.dask import ProxyClient

    with (
        distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # record every warning, whatever the filters say
            ProxyClient(client, store=store_factory("file"))
        # Third-party deprecations aside (pyproject ignores them too), nothing was said.
        said = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
        assert [f"{w.category.__name__}: {w.message}" for w in said] == []
