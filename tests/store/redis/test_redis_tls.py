"""RedisStore over TLS, unix sockets, url= and ACL users, against private redis-servers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from proxystore.exceptions import StoreAuthError, StoreConnectionError, StoreError
from proxystore.store.redis import RedisStore
from proxystore.store.redis.settings import parse_url
from tests.support.redis_server import Server, private_server, tls_unsupported
from tests.support.tls_certs import make_ca, make_server_cert

NO_TLS = tls_unsupported()
needs_tls = pytest.mark.skipif(NO_TLS is not None, reason=str(NO_TLS))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a server certificate it signs; and a second CA that signed nothing."""
    directory = tmp_path_factory.mktemp("tls")
    ca, ca_key = make_ca(directory)
    cert, key = make_server_cert(directory, ca, ca_key)
    other_ca, _ = make_ca(directory, "untrusted-ca")
    return {"ca": ca, "cert": cert, "key": key, "other_ca": other_ca}


@pytest.fixture(scope="module")
def tls_server(certs: dict[str, Path]) -> Iterator[Server]:
    if NO_TLS is not None:
        pytest.skip(NO_TLS)
    with private_server(tls=(certs["ca"], certs["cert"], certs["key"]), unix=True) as server:
        yield server


def tls_store(server: Server, certs: dict[str, Path], **kwargs: Any) -> RedisStore:
    assert server.tls_port is not None
    return RedisStore(
        f"tls-{uuid.uuid4().hex[:8]}",
        hostname="localhost",
        port=server.tls_port,
        ssl=True,
        ssl_ca_certs=str(certs["ca"]),
        **kwargs,
    )


# -- TLS ------------------------------------------------------------------------------------------


@needs_tls
@pytest.mark.timeout(120)
def test_tls_roundtrips_50mb_array_on_the_fast_path(
    tls_server: Server, certs: dict[str, Path]
) -> None:
    store = tls_store(tls_server, certs, cache_size=0)
    try:
        assert type(store._client()).__name__ == "_WireClient"  # not redis-py
        array = np.random.default_rng(7).random(50 * 2**20 // 8)
        start = time.perf_counter()
        key = store.set(array)
        got = store.get(key)
        elapsed = time.perf_counter() - start
        assert np.array_equal(got, array)
        assert got.flags.writeable
        print(f"TLS 50 MB round trip: {elapsed:.3f} s")
        store.evict(key)
        assert not store.exists(key)
    finally:
        store.cleanup()


@needs_tls
def test_tls_chunked_value(tls_server: Server, certs: dict[str, Path]) -> None:
    store = tls_store(tls_server, certs, cache_size=0, chunk_size=100_000)
    try:
        key = store.set(b"t" * 1_000_000)
        assert store.get(key) == b"t" * 1_000_000
        store.evict(key)
    finally:
        store.cleanup()


@needs_tls
@pytest.mark.timeout(60)
def test_tls_untrusted_ca_is_a_clear_error(tls_server: Server, certs: dict[str, Path]) -> None:
    start = time.monotonic()
    with pytest.raises(StoreConnectionError) as info:
        RedisStore(
            "tls-untrusted",
            hostname="localhost",
            port=tls_server.tls_port,
            ssl=True,
            ssl_ca_certs=str(certs["other_ca"]),
        )
    message = str(info.value)
    assert f"localhost:{tls_server.tls_port}" in message
    assert "TLS" in message and "certificate verify failed" in message
    assert "ssl_ca_certs" in message
    assert time.monotonic() - start < 5


@needs_tls
def test_tls_host_name_is_checked(tls_server: Server, certs: dict[str, Path]) -> None:
    """The certificate names localhost only: 127.0.0.1 fails unless ssl_check_hostname=False."""
    kwargs: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(certs["ca"])}
    with pytest.raises(StoreConnectionError, match="TLS certificate verify failed") as info:
        RedisStore("tls-by-ip", hostname="127.0.0.1", port=tls_server.tls_port, **kwargs)
    assert f"127.0.0.1:{tls_server.tls_port}" in str(info.value)
    store = RedisStore(
        "tls-by-ip-ok",
        hostname="127.0.0.1",
        port=tls_server.tls_port,
        ssl_check_hostname=False,
        **kwargs,
    )
    try:
        assert store.get(store.set(1)) == 1
    finally:
        store.cleanup()


def test_unknown_ssl_keyword_is_rejected() -> None:
    with pytest.raises(ValueError, match="ssl_validate_ocsp") as info:
        RedisStore("tls-bad-kw", hostname="localhost", port=1, ssl=True, ssl_validate_ocsp=True)
    assert "ssl_ca_certs" in str(info.value)  # and it lists what is supported


# -- url= -----------------------------------------------------------------------------------------


def test_parse_url_forms() -> None:
    parsed = parse_url("redis://alice:s%40cret@example.org:6390/4")
    assert parsed["hostname"] == "example.org" and parsed["port"] == 6390 and parsed["db"] == 4
    assert parsed["username"] == "alice" and parsed["password"].reveal() == "s@cret"
    assert "s@cret" not in repr(parsed)
    assert parse_url("rediss://h")["ssl"] is True and parse_url("rediss://h")["port"] == 6379
    assert parse_url("unix:///run/r.sock?db=3") == {"unix_socket_path": "/run/r.sock", "db": 3}
    with pytest.raises(ValueError, match="redis://") as info:
        parse_url("http://user:hunter2@host")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match="malformed") as info:
        parse_url("redis://user:hunter2@host:notaport")
    assert "hunter2" not in str(info.value)


@pytest.fixture(scope="module")
def acl_server() -> Iterator[Server]:
    """A private server with ACL users alice (everything) and reader (GET only), no default."""
    with private_server(unix=True) as server:
        admin: redis.Redis[bytes] = redis.Redis(server.host, server.port)
        admin.execute_command("ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "+@all")
        admin.execute_command("ACL", "SETUSER", "reader", "on", ">reader-pw", "~*", "+get", "+ping")
        admin.execute_command("ACL", "SETUSER", "default", "off")
        admin.close()
        yield server


def test_url_with_acl_user_password_and_db(acl_server: Server) -> None:
    url = f"redis://alice:alice-pw@127.0.0.1:{acl_server.port}/2"
    store = RedisStore("url-acl", url=url)
    try:
        key = store.set({"via": "url"})
        assert store.get(key) == {"via": "url"}
        check: redis.Redis[bytes] = redis.Redis(
            acl_server.host, acl_server.port, db=2, username="alice", password="alice-pw"
        )
        assert check.exists(key)
        check.close()
        kwargs = store.description.kwargs
        assert kwargs["username"] == "alice" and kwargs["db"] == 2 and "url" not in kwargs
        assert "alice-pw" not in repr(store) + repr(store.description) + repr(kwargs)
        store.evict(key)
    finally:
        store.cleanup()


def test_username_keyword_with_acl_user(acl_server: Server) -> None:
    store = RedisStore(
        "acl-kw",
        hostname=acl_server.host,
        port=acl_server.port,
        username="alice",
        password="alice-pw",
    )
    try:
        assert store.get(store.set([1, 2])) == [1, 2]
    finally:
        store.cleanup()
    with pytest.raises(StoreAuthError) as info:
        RedisStore(
            "acl-wrong",
            hostname=acl_server.host,
            port=acl_server.port,
            username="alice",
            password="x",
        )
    assert "alice-pw" not in str(info.value)
    # A user the server knows but who may not write: a clear error from the first write.
    reader = RedisStore(
        "acl-reader",
        hostname=acl_server.host,
        port=acl_server.port,
        username="reader",
        password="reader-pw",
    )
    try:
        with pytest.raises(StoreError, match="NOPERM"):
            reader.set("no")
    finally:
        reader.cleanup()


def test_unix_socket_url(acl_server: Server) -> None:
    assert acl_server.unix_socket is not None
    store = RedisStore(
        "url-unix",
        url=f"unix://{acl_server.unix_socket}?db=1",
        username="alice",
        password="alice-pw",
    )
    try:
        assert type(store._client()).__name__ == "_WireClient"
        assert store.address == f"unix:{acl_server.unix_socket}"
        array = np.arange(2_000_000.0)
        key = store.set(array)
        assert np.array_equal(store.get(key), array)
        assert store.description.kwargs["unix_socket_path"] == acl_server.unix_socket
        store.evict(key)
    finally:
        store.cleanup()


@needs_tls
def test_rediss_url_with_ssl_keywords(tls_server: Server, certs: dict[str, Path]) -> None:
    store = RedisStore(
        "url-tls",
        url=f"rediss://localhost:{tls_server.tls_port}/0",
        ssl_ca_certs=str(certs["ca"]),
    )
    try:
        assert store.get(store.set("over tls")) == "over tls"
        assert store.description.kwargs["ssl"] is True
    finally:
        store.cleanup()


def test_no_server_named_is_an_error() -> None:
    with pytest.raises(ValueError, match="hostname= and port="):
        RedisStore("nowhere")
