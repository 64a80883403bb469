"""Every ``.. code-block:: python`` of the user's spec (advanced.rst), run as written.

The spec is read from ``../shared/spec/advanced.rst`` next to the repository when it exists,
otherwise from the verbatim copy in ``tests/data/advanced.rst``.

Each block is executed with :func:`exec` in a namespace that provides the free names the spec
leaves to the reader: ``REDIS_HOST``/``REDIS_PORT`` (the test session's real redis-server),
``my_object``, ``my_other_object`` and ``compute_input``. The block text is not edited, with one
exception: the spec writes ``ps.proxy.Proxy(...)`` as a placeholder for "some proxy", which is
not runnable Python; that exact text is replaced by ``ps.proxy.Proxy(PLACEHOLDER_FACTORY)``,
a real proxy of a real factory (several kinds are tried). Nothing else is substituted.
"""

from __future__ import annotations

import re
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest

import proxystore as ps
from proxystore.exceptions import ProxyStoreError
from proxystore.proxy import Proxy, get_key, is_resolved
from proxystore.store import Store, get_store, unregister_store

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent.parent / "shared" / "spec" / "advanced.rst"
VENDORED = HERE / "data" / "advanced.rst"
SPEC_PATH = SPEC if SPEC.exists() else VENDORED

PLACEHOLDER = "ps.proxy.Proxy(...)"
PLACEHOLDER_REPLACEMENT = "ps.proxy.Proxy(PLACEHOLDER_FACTORY)"


def code_blocks(text: str) -> list[tuple[int, str]]:
    """Return ``(line number, code)`` of every ``.. code-block:: python`` directive."""
    lines = text.splitlines()
    blocks: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)\.\. code-block::\s*python\s*$", lines[i])
        if not match:
            i += 1
            continue
        start = i + 1
        indent = len(match.group(1))
        i += 1
        while i < len(lines) and re.match(r"^\s+:[\w-]+:", lines[i]):  # directive options
            i += 1
        body: list[str] = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        blocks.append((start, code))
    return blocks


BLOCKS = code_blocks(SPEC_PATH.read_text(encoding="utf-8"))


def block_id(block: tuple[int, str]) -> str:
    line, code = block
    first = next(
        (
            s.strip()
            for s in code.splitlines()
            if s.strip() and not s.startswith(("import", "from"))
        ),
        "",
    )
    return f"line{line}-" + re.sub(r"\W+", "_", first)[:30].strip("_")


def compute_input(value: Any) -> float:
    """The spec's ``compute_input``: uses its (proxied) input."""
    RECORDED.append(value)
    return float(np.sum(value))


RECORDED: list[Any] = []


@pytest.fixture
def namespace(redis_address: tuple[str, int]) -> Iterator[dict[str, Any]]:
    """The exec namespace, and cleanup of whatever the examples registered or stored."""
    host, port = redis_address
    tag = uuid.uuid4().hex
    ns: dict[str, Any] = {
        "__name__": "__main__",
        "REDIS_HOST": host,
        "REDIS_PORT": port,
        "my_object": {"spec": "my_object", "tag": tag, "values": [1, 2, 3]},
        "my_other_object": {"spec": "my_other_object", "tag": tag},
        "compute_input": compute_input,
    }
    registered_before = set(ps.store.registered_stores())
    RECORDED.clear()
    yield ns
    RECORDED.clear()
    for name in set(ps.store.registered_stores()) - registered_before:
        store = get_store(name)
        unregister_store(name)
        if store is not None:
            try:
                _evict_example_objects(store, (ns["my_object"], ns["my_other_object"]))
            finally:
                store.cleanup()


def _evict_example_objects(store: Store, objects: tuple[Any, ...]) -> None:
    """Remove the objects an example stored in Redis (found by value; only ours match)."""
    import redis

    from proxystore.store.redis import RedisStore

    if not isinstance(store, RedisStore):
        return
    client: redis.Redis[bytes] = redis.Redis(host=store.hostname, port=store.port)
    try:
        keys = [k.decode(errors="replace") for k in client.scan_iter(count=1000)]
    finally:
        client.close()
    for key in keys:
        if key.endswith(":ps-chunks"):
            continue
        try:
            value = store.get(key)
        except ProxyStoreError:
            continue  # not a ProxyStore value: not ours
        if type(value) is dict and any(value == obj for obj in objects):
            store.evict(key)


def run(code: str, ns: dict[str, Any]) -> None:
    exec(compile(code, f"<{SPEC_PATH.name}>", "exec"), ns)


def test_spec_has_the_expected_examples() -> None:
    assert len(BLOCKS) >= 4
    joined = "\n".join(code for _, code in BLOCKS)
    for needle in ("class MyFactory", "ps.proxy.extract", "STORES.REDIS", "def complex_function"):
        assert needle in joined


def test_vendored_copy_matches_spec() -> None:
    if not SPEC.exists():
        pytest.skip("the shared spec is not next to this checkout; the vendored copy is used")
    assert VENDORED.read_bytes() == SPEC.read_bytes(), "refresh tests/data/advanced.rst"


def placeholder_factories(store: Store, key: str) -> dict[str, ps.factory.Factory[Any]]:
    return {
        "simple": ps.factory.SimpleFactory([3, 1, 2]),
        "lambda": ps.factory.LambdaFactory(sorted, [3, 1, 2], reverse=True),
        "redis-store": ps.proxy.get_factory(store.proxy(key=key)),
    }


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_spec_example(
    block: tuple[int, str], namespace: dict[str, Any], store_factory: Any
) -> None:
    _, code = block
    if PLACEHOLDER in code:
        assert code.count(PLACEHOLDER) == 1
        store = store_factory("redis")
        key = store.set([3, 1, 2])
        for name, factory in placeholder_factories(store, key).items():
            ns = dict(namespace, PLACEHOLDER_FACTORY=factory)
            run(code.replace(PLACEHOLDER, PLACEHOLDER_REPLACEMENT), ns)
            p, x = ns["p"], ns["x"]
            assert isinstance(p, Proxy) and is_resolved(p), name
            assert not isinstance(x, Proxy)
            assert x == factory.resolve(), name
        store.evict(key)
        return

    run(code, namespace)

    if "class MyFactory" in code:
        assert isinstance(namespace["p"], np.ndarray)
        assert np.array_equal(namespace["y"], [2, 4, 6])
        assert type(namespace["y"]) is np.ndarray

    if "STORES.REDIS" in code:
        store = namespace["store"]
        assert get_store("redis") is store
        assert type(store).__name__ == "RedisStore"
        key = namespace["key"]
        assert store.exists(key)
        p = namespace["p"]
        assert get_key(p) == key
        assert p == namespace["my_object"]

    if "def complex_function" in code:
        check_complex_function(namespace, store_factory)


def check_complex_function(namespace: dict[str, Any], store_factory: Any) -> None:
    """Call the spec's ``complex_function`` with a real RedisStore proxy."""
    store = store_factory("redis")
    array = np.arange(50_000, dtype=np.float64)
    proxy = store.proxy(array)
    key = get_key(proxy)
    fetch_threads: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == "get_bytes_with_timestamp":
            fetch_threads.append(threading.current_thread().name)

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        namespace["complex_function"](proxy)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    assert is_resolved(proxy)
    assert len(RECORDED) == 1 and RECORDED[0] is proxy
    assert float(np.sum(proxy)) == float(array.sum())
    # The spec: the RedisFactory fetched the object in a new thread, not in the caller's.
    assert fetch_threads == [f"proxystore-resolve-{key}"]
    store.evict(str(key))
