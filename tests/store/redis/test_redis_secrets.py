"""A Redis password never shows: reprs, ``__dict__`` displays, errors, log lines, and the locals
a traceback captures from a failing resolve or task. It still travels in pickles."""

from __future__ import annotations

import logging
import pickle
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from proxystore.exceptions import (
    ProxyResolveMissingKey,
    ProxyStoreError,
    StoreAuthError,
    StoreConnectionError,
)
from proxystore.proxy import Proxy, get_factory
from proxystore.secret import Secret
from proxystore.store import get_store, init_store, unregister_store
from proxystore.store.redis import RedisStore
from tests.support.redis_server import Server, private_server

PASSWORD = f"sesame-{uuid.uuid4().hex}"


@pytest.fixture
def server() -> Iterator[Server]:
    with private_server("--requirepass", PASSWORD) as made:
        yield made


def shown(*objects: Any) -> str:
    """Everything a person (or a log, or a traceback) could see of ``objects``."""
    texts = []
    for obj in objects:
        texts += [repr(obj), str(obj)]
        if hasattr(obj, "__dict__"):
            texts.append(repr(vars(obj)))
    return "\n".join(texts)


def test_secret_type() -> None:
    secret = Secret(PASSWORD)
    assert repr(secret) == str(secret) == "'***'"
    assert PASSWORD not in repr({"password": secret}) + f"{secret}"
    assert pickle.loads(pickle.dumps(secret)).reveal() == PASSWORD
    assert secret == Secret(PASSWORD) and secret != PASSWORD
    with pytest.raises(TypeError):
        Secret(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["password", "url"])
def test_password_never_shown_by_the_objects_that_hold_it(server: Server, how: str) -> None:
    name = f"secret-{uuid.uuid4().hex[:8]}"
    if how == "url":
        kwargs: dict[str, Any] = {"url": f"redis://:{PASSWORD}@{server.host}:{server.port}/0"}
    else:
        kwargs = {"hostname": server.host, "port": server.port, "password": PASSWORD}
    store = init_store("redis", name, **kwargs)
    try:
        p = store.proxy({"data": 1})
        factory = get_factory(p)
        backend = store.backend
        client = backend.client  # type: ignore[attr-defined]
        pool = client.pool
        with pool.connection() as conn:
            text = shown(store, factory, factory.description, backend, client, pool, conn)
        text += shown(factory.description.kwargs, store.factory_kwargs())
        assert PASSWORD not in text
        assert p == {"data": 1}
        # ... yet it travels with the proxy: a worker needs it to connect.
        assert PASSWORD.encode() in pickle.dumps(p)
        assert factory.store_kwargs["password"].reveal() == PASSWORD
    finally:
        store.cleanup()
        unregister_store(name)


def resolve_in_fresh_process_state(p: Proxy[Any]) -> ProxyStoreError:
    """Resolve ``p`` as a worker would (its store re-created from the description); fail."""
    name = get_factory(p).store_name
    before = get_store(name)
    if before is not None:
        before.close()
        unregister_store(name)

    def task(argument: Any) -> int:
        return len(argument)  # the task uses the proxy: it resolves here

    try:
        task(p)
    except ProxyStoreError as exc:
        return exc
    finally:
        made = get_store(name)
        if made is not None:
            made.cleanup()
        unregister_store(name)
    raise AssertionError("the resolve did not fail")


def assert_nothing_shows(error: BaseException, logs: str) -> None:
    report = traceback.TracebackException.from_exception(error, capture_locals=True)
    text = "".join(report.format())
    assert "self = " in text and "argument = " in text  # the locals are there
    assert PASSWORD not in text
    assert PASSWORD not in str(error) + repr(error) + repr(vars(error))
    assert PASSWORD not in logs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("failure", ["server-gone", "password-changed", "key-missing"])
def test_failing_resolve_captures_no_password(
    server: Server, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = RedisStore(
        f"resolve-{uuid.uuid4().hex[:8]}",
        hostname=server.host,
        port=server.port,
        password=PASSWORD,
        socket_connect_timeout=2,
    )
    p: Proxy[Any] = store.proxy([1, 2, 3])
    admin: redis.Redis[bytes] = redis.Redis(server.host, server.port, password=PASSWORD)
    try:
        expected: type[ProxyStoreError]
        if failure == "server-gone":
            admin.shutdown(nosave=True)
            expected = StoreConnectionError
        elif failure == "password-changed":
            admin.config_set("requirepass", "another-" + PASSWORD[::-1])
            expected = StoreAuthError
        else:
            store.evict(str(get_factory(p).key))
            expected = ProxyResolveMissingKey
        error = resolve_in_fresh_process_state(p)
        assert isinstance(error, expected)
        assert_nothing_shows(error, caplog.text)
    finally:
        admin.close()
        store.close()
