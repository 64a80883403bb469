"""Errors from resolving say where: the resolving host, the store, the key, the address or dir."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import numpy as np
import pytest

from proxystore.exceptions import ProxyResolveMissingKey, StoreConnectionError
from proxystore.proxy import extract, get_key
from proxystore.store import init_store, unregister_store
from tests.support.redis_server import private_redis


def test_a_missing_key_names_host_store_key_and_where_it_looked(tmp_path: Path) -> None:
    store = init_store("file", "where-file", store_dir=str(tmp_path / "objects"))
    try:
        proxy = store.proxy(np.arange(3))
        store.evict(get_key(proxy))
        with pytest.raises(ProxyResolveMissingKey) as caught:
            extract(proxy)
        error = caught.value
        assert error.host == socket.gethostname() and error.location == str(tmp_path / "objects")
        text = str(error)
        for part in (socket.gethostname(), "FileStore 'where-file'", get_key(proxy)):
            assert part in text
        again = pickle.loads(pickle.dumps(error))  # crosses processes intact
        assert str(again) == text
    finally:
        store.cleanup()
        unregister_store("where-file")


def test_a_backend_error_while_resolving_names_the_resolving_host_and_key() -> None:
    with private_redis() as (_, port):
        store = init_store(
            "redis", "where-redis", hostname="127.0.0.1", port=port, socket_timeout=2
        )
        proxy = store.proxy(np.arange(3))
        store.cache.clear()
    try:  # the server is gone now
        with pytest.raises(StoreConnectionError) as caught:
            extract(proxy)
        text = str(caught.value)
        assert f"127.0.0.1:{port}" in text
        assert f"resolving key {get_key(proxy)!r} of RedisStore 'where-redis'" in text
        assert f"on host {socket.gethostname()}" in text
        assert caught.value.resolving_host == socket.gethostname()  # type: ignore[attr-defined]
    finally:
        store.close()
        unregister_store("where-redis")
