"""A proxy pickled into a fresh ``python`` process resolves there, re-creating its store."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from proxystore.proxy import Proxy, get_key, is_resolved
from proxystore.store import Store

CHILD = textwrap.dedent(
    """
    import json, pickle, sys
    from proxystore.exceptions import ProxyResolveMissingKey
    from proxystore.proxy import extract, is_resolved
    from proxystore.store import get_store, registered_stores

    proxy = pickle.load(sys.stdin.buffer)
    report = {
        "resolved_on_arrival": is_resolved(proxy),
        "registered_before": sorted(registered_stores()),
    }
    try:
        value = extract(proxy)
    except ProxyResolveMissingKey as exc:
        report["error"] = {"type": type(exc).__name__, "message": str(exc), "key": exc.key}
    else:
        report["value"] = value.tolist() if hasattr(value, "tolist") else value
        report["value_type"] = type(value).__name__
    store = get_store(proxy)
    report["store"] = {
        "type": type(store).__name__,
        "name": store.name,
        "cache_size": store.cache_size,
        "kwargs": {k: v for k, v in store.factory_kwargs().items() if k != "password"},
        "cached": store.is_cached(proxy.__factory__.key),
    }
    print(json.dumps(report))
    """
)


def resolve_in_fresh_python(p: Proxy) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=pickle.dumps(p),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture(params=["file", "redis"])
def remote(request: pytest.FixtureRequest, store_factory: Any) -> Store:
    store: Store = store_factory(request.param, cache_size=3)
    return store


def test_proxy_resolves_in_fresh_process(remote: Store) -> None:
    array = np.arange(1000).reshape(10, 100)
    p = remote.proxy(array)
    report = resolve_in_fresh_python(p)
    assert report["resolved_on_arrival"] is False
    assert report["registered_before"] == []  # nothing but the proxy came along
    assert report["value_type"] == "ndarray"
    assert report["value"] == array.tolist()
    store = report["store"]
    assert store["type"] == type(remote).__name__
    assert store["name"] == remote.name
    assert store["cache_size"] == 3  # the creator's cache_size, not the default
    assert store["kwargs"] == json.loads(json.dumps(remote.factory_kwargs()))
    assert store["cached"] is True
    assert not is_resolved(p)  # resolving elsewhere does not touch our proxy


def test_resolved_proxy_still_ships_only_factory(remote: Store) -> None:
    p = remote.proxy({"payload": "x" * 100_000})
    assert p["payload"][:1] == "x"  # resolved here first
    data = pickle.dumps(p)
    assert len(data) < 2_000
    report = resolve_in_fresh_python(p)
    assert report["value"] == {"payload": "x" * 100_000}


def test_evict_proxy_evicts_after_resolving_in_subprocess(remote: Store) -> None:
    p = remote.proxy([1, 2, 3], evict=True)
    key = get_key(p)
    assert key is not None and remote.exists(key)
    report = resolve_in_fresh_python(p)
    assert report["value"] == [1, 2, 3]
    assert not remote.exists(key)  # the subprocess evicted it from the shared backend
    assert remote.get(key, default="gone") == "gone"


def test_missing_key_in_subprocess_names_key_and_store(remote: Store) -> None:
    p = remote.proxy("soon gone")
    key = get_key(p)
    assert key is not None
    remote.evict(key)
    report = resolve_in_fresh_python(p)
    error = report["error"]
    assert error["type"] == "ProxyResolveMissingKey"
    assert error["key"] == key
    assert key in error["message"]
    assert remote.name in error["message"]
    assert type(remote).__name__ in error["message"]


def test_strict_proxy_in_subprocess_sees_newest(remote: Store) -> None:
    key = remote.set("v1")
    p = remote.proxy(key=key, strict=True)
    remote.set("v2", key=key)
    assert resolve_in_fresh_python(p)["value"] == "v2"
    remote.evict(key)


def test_serialize_false_proxy_in_subprocess(remote: Store) -> None:
    p = remote.proxy(b"raw bytes", serialize=False)
    child = textwrap.dedent(
        """
        import pickle, sys
        p = pickle.load(sys.stdin.buffer)
        sys.stdout.buffer.write(bytes(p))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child], input=pickle.dumps(p), capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"raw bytes"
