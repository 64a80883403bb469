"""The configuration mistakes of issue 10, on the bed: each is reported, where and why."""

from __future__ import annotations

from typing import Any

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
        ProxyClient(bed_client, store=store)  # filterwarnings=error: a warning would fail
    finally:
        unregister_store("mh-good")
