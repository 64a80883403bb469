"""proxy_app over real Parsl executors: ThreadPoolExecutor and a HighThroughputExecutor with a
LocalProvider (real worker processes on this machine), with real File and Redis stores."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

parsl = pytest.importorskip("parsl")

from parsl import python_app  # noqa: E402

from proxystore.integrations.parsl import ProxyApp, proxy_app  # noqa: E402
from proxystore.integrations.policy import ProxyPolicy  # noqa: E402
from proxystore.proxy import Proxy, extract  # noqa: E402
from proxystore.serialize import SerializationError  # noqa: E402
from proxystore.store import Store  # noqa: E402
from tests.support.integration_helpers import (  # noqa: E402
    large_arguments,
    make_big,
    make_result,
    mapped_from_store,
    parsl_dfk,
    total,
    transparency_probe,
    wait_until_released,
)

THRESHOLD = 10_000
BIG = np.arange(THRESHOLD, dtype=np.float64)
SMALL = np.arange(10, dtype=np.float64)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning"),
]


@pytest.fixture(scope="module")
def dfk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # Parsl starts its interchange and worker pool as scripts: make sure this interpreter's
    # script directory is on PATH, and that workers can import the test helpers.
    bindir = os.path.dirname(sys.executable)
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{bindir}{os.pathsep}{old_path}"
    dfk = parsl_dfk(tmp_path_factory.mktemp("parsl"))
    try:
        yield dfk
    finally:
        dfk.cleanup()
        parsl.clear()
        os.environ["PATH"] = old_path


@pytest.fixture(params=["threads", "htex"])
def label(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["file", "redis"])
def remote_store(request: pytest.FixtureRequest, store_factory: Any) -> Store:
    return store_factory(request.param)  # type: ignore[no-any-return]


def app(fn: Any, store: Store, label: str, **options: Any) -> ProxyApp:
    policy = options.pop("policy", None)
    kwargs: dict[str, Any] = {"policy": policy} if policy else {"threshold": THRESHOLD}
    return proxy_app(store=store, **kwargs)(python_app(fn, executors=[label], **options))


def test_data_futures_pass_through(dfk: Any, remote_store: Store) -> None:
    make = app(make_big, remote_store, "htex")
    add = app(total, remote_store, "htex")
    upstream = make(THRESHOLD)
    assert add(upstream, BIG).result() == total(make_big(THRESHOLD), BIG)


def test_app_options_kept_and_results_proxied(dfk: Any, remote_store: Store) -> None:
    policy = ProxyPolicy(threshold=THRESHOLD, proxy_results=True)
    proxied = app(make_big, remote_store, "threads", policy=policy, cache=True)
    assert proxied.app.executors == ["threads"]
    assert proxied.app.cache is True
    result = proxied(THRESHOLD).result()
    assert issubclass(type(result), Proxy)
    assert np.array_equal(extract(result), make_big(THRESHOLD))


def test_bad_input(dfk: Any, store_factory: Any) -> None:
    with pytest.raises(TypeError, match="store"):
        proxy_app(store=None)
    with pytest.raises(ValueError, match="process"):
        proxy_app(store=store_factory("local"))
    with pytest.raises(ValueError, match=">= 0"):
        proxy_app(store=store_factory("file"), threshold=-1)
    proxied = proxy_app(store=store_factory("file"), threshold=THRESHOLD)(
        python_app(total, executors=["htex"])
    )
    with pytest.raises(SerializationError, match="cannot be serialized"):
        proxied(threading.Lock())
    assert proxied.proxier.in_use() == {}
    with pytest.raises(TypeError, match="python_app"):
        proxy_app(store=store_factory("file"))(total)  # type: ignore[arg-type]


def test_same_host_zero_copy_on_dev_shm(dfk: Any) -> None:
    from proxystore.store import init_store, unregister_store

    name = f"shm-parsl-{os.getpid()}"
    store = init_store("file", name, store_dir=f"/dev/shm/{name}")
    try:
        proxied = app(mapped_from_store, store, "htex")
        assert proxied(BIG).result()
        assert not proxied(SMALL).result()
    finally:
        store.cleanup()
        unregister_store(name)


# -- transparency: the body computes what it computes under the plain app ------------------------


def test_body_computes_what_the_plain_app_computes(
    dfk: Any, label: str, remote_store: Store
) -> None:
    plain = python_app(transparency_probe, executors=[label])
    proxied = app(transparency_probe, remote_store, label)
    for kind, value in large_arguments().items():
        _, _, lease = proxied.proxier.carry_out((value,), {})
        assert lease.keys, f"{kind} must travel through the store"
        proxied.proxier.release(lease)
        assert proxied(value).result() == plain(value).result(), kind


def test_results_of_builtin_kinds_come_back_as_the_plain_app_returns_them(
    dfk: Any, label: str, remote_store: Store
) -> None:
    policy = ProxyPolicy(threshold=THRESHOLD, proxy_results=True)
    proxied = app(make_result, remote_store, label, policy=policy)
    for kind in ("dict", "bytes", "list-of-arrays"):
        assert type(proxied(kind).result()) is type(large_arguments()[kind]), kind


def test_scalar_calls_run_the_plain_function(
    dfk: Any, remote_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[Any] = []
    submit = dfk.submit

    def spy(func: Any, *args: Any, **kwargs: Any) -> Any:
        # Parsl may hand the DFK the app's function wrapped once (error wrapping).
        plain = type(func).__name__ == "ProxyTask"
        ran.append(func if plain else getattr(func, "__wrapped__", func))
        return submit(func, *args, **kwargs)

    monkeypatch.setattr(dfk, "submit", spy)
    proxied = app(total, remote_store, "threads")
    assert proxied(2.0, 3).result() == 5.0
    assert ran == [total]
    assert proxied(BIG, 1).result() == total(BIG) + 1
    assert type(ran[-1]).__name__ == "ProxyTask"
    wait_until_released(proxied)
