"""The configuration mistakes of issue 10, on the bed: each is reported, where and why."""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any

import numpy as np
import pytest

from proxystore.integrations.dask import ProxyClient
from proxystore.integrations.reachability import StoreReachabilityWarning
from proxystore.store import init_store, unregister_store


def test_proxy_client_warns_about_a_node_local_directory(bed_client: Any) -> None:
    store = init_store("file", "mh-local-dir", store_dir="/dev/shm/proxystore-mh-local-dir")
    try:
        with pytest.warns(StoreReachabilityWarning, match="exists only on this host") as seen:
            ProxyClient(bed_client, store=store)
        message = str(seen[0].message)
        assert "/dev/shm/proxystore-mh-local-dir" in message and "shared by all hosts" in message
    finally:
        store.cleanup()
        unregister_store("mh-local-dir")


def test_proxy_client_warns_about_a_loopback_redis(
    bed_client: Any, redis_address: tuple[str, int]
) -> None:
    _, port = redis_address  # the session's private server, on this host's loopback
    store = init_store("redis", "mh-loopback", hostname="localhost", port=port)
    try:
        with pytest.warns(StoreReachabilityWarning, match="each worker's own machine"):
            ProxyClient(bed_client, store=store)
    finally:
        unregister_store("mh-loopback")


def test_proxy_client_with_the_beds_redis_does_not_warn(testbed: Any, bed_client: Any) -> None:
    host, port = testbed.redis_address
    store = init_store("redis", "mh-good", hostname=host, port=port)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # record every warning, whatever the filters say
            ProxyClient(bed_client, store=store)
        # Third-party deprecations aside (pyproject ignores them too), nothing was said.
        said = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
        assert [f"{w.category.__name__}: {w.message}" for w in said] == []
    finally:
        unregister_store("mh-good")


def test_a_node_local_file_store_fails_on_worker_hosts_saying_so(
    testbed: Any, bed_client: Any
) -> None:
    from tests.multihost.tasks import sum_or_error

    directory = f"/dev/shm/proxystore-mh-wrong-host-{os.getpid()}"
    store = init_store("file", "mh-wrong-host", store_dir=directory)
    try:
        with pytest.warns(StoreReachabilityWarning):
            pclient = ProxyClient(bed_client, store=store, threshold=1_000)
        future = pclient.submit(
            sum_or_error, np.arange(10_000.0), workers=[testbed["b"].address], pure=False
        )
        status, message, seconds = future.result(timeout=60)
        assert status == "error" and seconds < 10, message
        assert "evicted" not in message, message
        host_b = testbed["b"].run(["cat", "/proc/sys/kernel/hostname"]).stdout.decode().strip()
        for part in (directory, "does not exist", "shared file system", "mh-wrong-host", host_b):
            assert part in message, message
        # Resolving never creates the directory on the worker's host.
        assert testbed["b"].run(["test", "-e", directory], check=False).returncode == 1
    finally:
        store.cleanup()
        unregister_store("mh-wrong-host")


def test_a_loopback_redis_fails_on_worker_hosts_saying_what_loopback_means(
    testbed: Any, bed_client: Any, redis_address: tuple[str, int]
) -> None:
    from tests.multihost.tasks import sum_or_error

    _, port = redis_address
    store = init_store("redis", "mh-loopback-fail", hostname="localhost", port=port)
    try:
        with pytest.warns(StoreReachabilityWarning):
            pclient = ProxyClient(bed_client, store=store, threshold=1_000)
        future = pclient.submit(
            sum_or_error, np.arange(10_000.0), workers=[testbed["b"].address], pure=False
        )
        status, message, seconds = future.result(timeout=60)
        assert status == "error" and seconds < 10, message
        host_b = testbed["b"].run(["cat", "/proc/sys/kernel/hostname"]).stdout.decode().strip()
        assert "loopback address localhost" in message, message
        assert f"means {host_b} itself" in message and socket.gethostname() in message, message
    finally:
        unregister_store("mh-loopback-fail")
