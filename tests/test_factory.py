"""Factories: SimpleFactory, LambdaFactory (with real background resolution), custom ones,
and the store factory (re-creation through the registry, errors, prefetching)."""

from __future__ import annotations

import pickle
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import StoreConnectionError
from proxystore.factory import Factory, LambdaFactory, SimpleFactory
from proxystore.proxy import Proxy, extract, get_factory, get_key, is_resolved, resolve_async
from proxystore.store import get_store, init_store, unregister_store
from proxystore.store.base import MISSING, Prefetched
from proxystore.store.file import FileStore
from proxystore.store.registry import get_or_create
from tests.support.redis_server import private_redis


class Recorder:
    """A target that records which thread called it and how often."""

    def __init__(self, result: Any = "result", error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.threads: list[threading.Thread] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.current_thread())
        self.release.wait(timeout=30)
        if self.error is not None:
            raise self.error
        return (self.result, args, kwargs)


def module_level_target(a: int, b: int = 0) -> int:
    return a * 10 + b


_GATE = threading.Event()
_CALLS: list[tuple[int, int]] = []


def gated_target(x: int) -> tuple[int, int]:
    """Waits for ``_GATE``; returns its argument and the id of the thread that ran it."""
    _GATE.wait(timeout=30)
    _CALLS.append((x, threading.get_ident()))
    return x, threading.get_ident()


# -- SimpleFactory ------------------------------------------------------------------------------


def test_simple_factory_returns_the_object_itself() -> None:
    obj = {"a": [1, 2]}
    factory = SimpleFactory(obj)
    assert factory.resolve() is obj
    assert factory() is obj
    assert isinstance(factory, Factory)
    factory.resolve_async()  # the base no-op
    assert factory() is obj


def test_simple_factory_pickles_with_its_object() -> None:
    factory = pickle.loads(pickle.dumps(SimpleFactory(np.arange(4))))
    assert np.array_equal(factory.resolve(), np.arange(4))


def test_simple_factory_repr_does_not_dump_the_object() -> None:
    text = repr(SimpleFactory("x" * 10_000))
    assert "SimpleFactory" in text and "str" in text
    assert len(text) < 100


def test_factory_is_abstract() -> None:
    with pytest.raises(TypeError):
        Factory()  # type: ignore[abstract]


# -- LambdaFactory ------------------------------------------------------------------------------


def test_lambda_factory_passes_args_and_kwargs() -> None:
    factory = LambdaFactory(module_level_target, 4, b=2)
    assert factory.resolve() == 42
    assert factory() == 42
    p = Proxy(LambdaFactory(dict, [("a", 1)], b=2))
    assert p == {"a": 1, "b": 2}


def test_lambda_factory_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        LambdaFactory(42)  # type: ignore[arg-type]


def test_lambda_factory_sync_resolve_runs_in_caller_thread() -> None:
    recorder = Recorder()
    LambdaFactory(recorder, 1).resolve()
    assert recorder.threads == [threading.current_thread()]


def test_resolve_async_runs_target_in_another_thread() -> None:
    recorder = Recorder()
    recorder.release.clear()  # hold the target inside the background thread
    factory = LambdaFactory(recorder, 1, k="v")
    factory.resolve_async()
    try:
        # resolve_async returned while the target is still running: it really is asynchronous.
        deadline = threading.Event()
        for _ in range(3000):
            if recorder.threads:
                break
            deadline.wait(0.01)
        assert len(recorder.threads) == 1
        worker = recorder.threads[0]
        assert worker is not threading.current_thread()
        assert worker.name.startswith("proxystore-")
        assert worker.is_alive()
    finally:
        recorder.release.set()
    assert factory.resolve() == ("result", (1,), {"k": "v"})
    assert len(recorder.threads) == 1  # resolve used the async result, no second call


def test_resolve_async_twice_starts_one_call() -> None:
    recorder = Recorder()
    recorder.release.clear()
    factory = LambdaFactory(recorder)
    factory.resolve_async()
    factory.resolve_async()
    recorder.release.set()
    factory.resolve()
    assert len(recorder.threads) == 1


def test_proxy_after_resolve_async_calls_target_once() -> None:
    recorder = Recorder(result=[1, 2, 3])
    p = Proxy(LambdaFactory(recorder))
    resolve_async(p)
    assert not is_resolved(p)  # started in the background, but the proxy is not resolved yet
    result, _args, _kwargs = p
    assert result == [1, 2, 3]
    assert len(recorder.threads) == 1
    assert recorder.threads[0] is not threading.current_thread()
    assert is_resolved(p)
    resolve_async(p)  # resolved: a no-op, the target is not called again
    assert extract(p)[0] == [1, 2, 3]
    assert len(recorder.threads) == 1


def test_exception_in_async_resolve_surfaces_on_use() -> None:
    recorder = Recorder(error=ValueError("boom in background"))
    p = Proxy(LambdaFactory(recorder))
    resolve_async(p)
    with pytest.raises(ValueError, match="boom in background"):
        len(p)
    assert recorder.threads[0] is not threading.current_thread()
    assert not is_resolved(p)


def test_lambda_factory_pickles_lambdas_and_closures() -> None:
    base = 100
    secret = np.arange(3)

    def closure(x: int) -> Any:
        return secret * x + base

    for factory in (
        LambdaFactory(lambda x, y=0: x + y + base, 1, y=2),
        LambdaFactory(closure, 2),
    ):
        clone = pickle.loads(pickle.dumps(factory))
        assert isinstance(clone, LambdaFactory)
        assert np.array_equal(clone.resolve(), factory.resolve())

    p = pickle.loads(pickle.dumps(Proxy(LambdaFactory(lambda: {"built": base}))))
    assert not is_resolved(p)
    assert p == {"built": 100}


def test_lambda_factory_pickled_while_resolving_async() -> None:
    _GATE.clear()
    factory = LambdaFactory(gated_target, 5)
    factory.resolve_async()
    try:
        clone = pickle.loads(pickle.dumps(factory))
    finally:
        _GATE.set()
    assert factory.resolve() == (5, _CALLS[-1][1])
    assert _CALLS[-1][1] != threading.get_ident()  # the original resolved in the background
    # The clone carries no future of the original: it calls its own target, synchronously.
    assert clone.resolve() == (5, threading.get_ident())


def test_lambda_factory_repr_names_target() -> None:
    assert "module_level_target" in repr(LambdaFactory(module_level_target, 1))


# -- custom factories ---------------------------------------------------------------------------


def test_spec_style_factory_without_base_init() -> None:
    """The spec's ``MyFactory``: subclasses need not call ``Factory.__init__``."""

    class MyFactory(Factory[Any]):
        def __init__(self, obj: Any) -> None:
            self.obj = obj

        def resolve(self) -> Any:
            return self.obj

    x = np.array([1, 2, 3])
    factory = MyFactory(x)
    assert factory() is x
    factory.resolve_async()  # inherited no-op
    p = Proxy(factory)
    assert isinstance(p, np.ndarray)
    assert np.array_equal(x + p, [2, 4, 6])


def test_custom_factory_with_async_support() -> None:
    class Prefetching(Factory[str]):
        def __init__(self) -> None:
            self.started_in: threading.Thread | None = None
            self.done = threading.Event()

        def _work(self) -> None:
            self.started_in = threading.current_thread()
            self.done.set()

        def resolve_async(self) -> None:
            threading.Thread(target=self._work, name="proxystore-test-prefetch").start()

        def resolve(self) -> str:
            self.done.wait(30)
            return "prefetched" if self.started_in is not None else "sync"

    factory = Prefetching()
    p = Proxy(factory)
    resolve_async(p)
    assert p == "prefetched"
    assert factory.started_in is not threading.current_thread()


def test_a_resolve_error_is_a_new_error_chained_from_the_backends() -> None:
    """The key, store and host are added by a new error of the same type, ``from`` the
    backend's, which is left as it was raised."""
    name = f"factory-chain-{uuid.uuid4().hex[:8]}"
    with private_redis() as (_, port):
        store = init_store("redis", name, hostname="127.0.0.1", port=port, socket_timeout=2)
        proxy = store.proxy(np.arange(3))
        store.cache.clear()
    try:  # the server is gone now
        with pytest.raises(StoreConnectionError) as caught:
            extract(proxy)
        error, cause = caught.value, caught.value.__cause__
        assert isinstance(cause, StoreConnectionError) and cause is not error
        assert f"resolving key {get_key(proxy)!r} of RedisStore {name!r}" in str(error)
        assert "resolving key" not in str(cause)  # the original is not rewritten
        assert str(error).startswith(str(cause))
        assert error.address == cause.address == f"127.0.0.1:{port}"
        assert error.store_name == cause.store_name
        assert getattr(error, "resolving_host", None) == socket.gethostname()
        assert getattr(cause, "resolving_host", None) is None
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is StoreConnectionError and str(again) == str(error)
    finally:
        store.close()
        unregister_store(name)


def test_prefetch_gives_a_named_value_that_complete_finishes(tmp_path: Path) -> None:
    store = FileStore(f"factory-pre-{uuid.uuid4().hex[:8]}", store_dir=tmp_path, cache_size=4)
    try:
        key = store.set({"a": 1})
        token = store.prefetch(key)
        assert isinstance(token, Prefetched) and token.fetched is not None
        assert store.complete(key, token) == {"a": 1}
        assert store.prefetch(key) is None  # cached now: nothing to fetch
        missing = store.prefetch("no-such-key")
        assert isinstance(missing, Prefetched) and missing.fetched is None
        assert store.complete("no-such-key", missing, default=MISSING) is MISSING
    finally:
        store.cleanup()


def test_a_factory_re_creates_its_store_through_the_registry(tmp_path: Path) -> None:
    name = f"factory-again-{uuid.uuid4().hex[:8]}"
    original = FileStore(name, store_dir=tmp_path / "d", cache_size=3)  # not registered
    factory = pickle.loads(pickle.dumps(get_factory(original.proxy([1, 2]))))
    try:
        assert get_store(name) is None
        made = factory.get_store()
        assert isinstance(made, FileStore) and made is not original
        assert get_store(name) is made is get_or_create(original.description)
        assert made.description == original.description  # an equal store
        assert factory.resolve() == [1, 2]
    finally:
        unregister_store(name)
        original.cleanup()
