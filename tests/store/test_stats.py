"""Per-key timing statistics: init_store(..., stats=True) and store.stats()."""

from __future__ import annotations

import pickle
import subprocess
import sys
import uuid
from typing import Any

import numpy as np
import pytest

from proxystore.proxy import extract, resolve_async
from proxystore.store import init_store, unregister_store
from proxystore.store.stats import TimeStats


@pytest.fixture(params=["local", "file", "redis", "globus"])
def stats_store(request: pytest.FixtureRequest, store_factory: Any) -> Any:
    return store_factory(request.param, stats=True)


def test_set_get_resolve_recorded(stats_store: Any) -> None:
    key = stats_store.set(np.arange(1000))
    stats_store.get(key)
    stats_store.get(key)
    stats = stats_store.stats(key)
    assert stats["set"].calls == 1
    assert stats["get"].calls == 2
    get = stats["get"]
    assert isinstance(get, TimeStats)
    assert 0 <= get.min_time_ms <= get.avg_time_ms <= get.max_time_ms
    assert get.total_time_ms == pytest.approx(get.avg_time_ms * 2)

    p = stats_store.proxy(np.ones(10))
    assert float(np.sum(p)) == 10.0
    proxy_stats = stats_store.stats(p)
    assert proxy_stats["resolve"].calls == 1
    assert proxy_stats["set"].calls == 1


def test_batch_set_recorded_per_key(stats_store: Any) -> None:
    keys = stats_store.set_batch([1, "two", [3]])
    for key in keys:
        assert stats_store.stats(key)["set"].calls == 1
    assert [stats_store.get(key) for key in keys] == [1, "two", [3]]


def test_transfer_recorded_for_remote_stores(store_factory: Any) -> None:
    for kind in ("file", "redis", "globus"):
        store = store_factory(kind, stats=True, cache_size=0)
        key = store.set(b"x" * 1000)
        store.get(key)
        p = store.proxy(key=key)
        resolve_async(p)
        assert extract(p) == b"x" * 1000
        stats = store.stats(key)
        assert stats["transfer"].calls == 3  # one write, one read, one background read
        assert stats["resolve"].calls == 1


def test_unknown_key_is_empty_and_stats_off_raises(store_factory: Any) -> None:
    on = store_factory("file", stats=True)
    assert on.stats("never-used") == {}
    off = store_factory("file")
    key = off.set(1)
    with pytest.raises(ValueError, match="stats=True"):
        off.stats(key)
    assert "set" not in vars(off) and "get" not in vars(off)  # no wrappers when off


def test_stats_travel_with_proxies(tmp_path: Any) -> None:
    name = f"stats-{uuid.uuid4().hex[:8]}"
    store = init_store("file", name, store_dir=str(tmp_path), stats=True)
    try:
        p = store.proxy([1, 2, 3])
        code = (
            "import pickle, sys\n"
            "from proxystore.store import get_store\n"
            "p = pickle.loads(sys.stdin.buffer.read())\n"
            "assert p == [1, 2, 3]\n"
            f"print(get_store({name!r}).stats(p)['resolve'].calls)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], input=pickle.dumps(p), capture_output=True, timeout=60
        )
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode().strip() == "1"
    finally:
        store.cleanup()
        unregister_store(name)
