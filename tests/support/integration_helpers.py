"""Task bodies and a read-logging store for the integration tests.

Module-level so that worker processes (process pools, Dask, Parsl) import them by name.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from proxystore.proxy import Proxy, get_factory, get_key, is_resolved
from proxystore.serialize import Buffer
from proxystore.store.file import FileStore


def describe(x: Any, *rest: Any, **kwargs: Any) -> dict[str, Any]:
    """What a task saw: for each argument, whether it came as a proxy and prefetch state."""

    def one(value: Any) -> dict[str, Any]:
        is_proxy = issubclass(type(value), Proxy)  # type(): checking must not resolve
        info: dict[str, Any] = {"proxy": is_proxy}
        if is_proxy:
            factory = get_factory(value)
            info["key"] = get_key(value)
            info["prefetching"] = getattr(factory, "_future", None) is not None or is_resolved(
                value
            )
        return info

    seen = [one(x), *(one(r) for r in rest)]
    items: list[dict[str, Any]] = []
    for container in (x, *rest):
        if type(container) in (list, tuple):
            items.extend(one(item) for item in container)
        elif type(container) is dict:
            items.extend(one(item) for item in container.values())
    return {
        "args": seen,
        "kwargs": {name: one(value) for name, value in kwargs.items()},
        "items": items,
        "pid": os.getpid(),
    }


def total(x: Any, *rest: Any, **kwargs: Any) -> float:
    """A real computation over (possibly proxied) arrays and numbers."""
    import numpy as np

    result = float(np.sum(x))
    for value in (*rest, *kwargs.values()):
        result += float(np.sum(value))
    return result


def fail(x: Any) -> None:
    raise RuntimeError(f"task failed on purpose (got {len(x)} items)")


def sleep_then_total(seconds: float, x: Any) -> float:
    time.sleep(seconds)
    return total(x)


def make_big(n: int) -> Any:
    import numpy as np

    return np.arange(n, dtype=np.float64)


class ReadLoggingFileStore(FileStore):
    """A real FileStore that appends the reading process's pid to a log on every read."""

    def get_bytes_with_timestamp(self, key: str) -> tuple[Buffer, float] | None:
        with open(os.path.join(self.store_dir, "..", "reads.log"), "a") as log:
            log.write(f"{os.getpid()}\n")
        return super().get_bytes_with_timestamp(key)


def read_pids(store_dir: str) -> list[int]:
    path = os.path.join(store_dir, "..", "reads.log")
    if not os.path.exists(path):
        return []
    with open(path) as log:
        return [int(line) for line in log if line.strip()]


def describe_after_gate(gate: str, x: Any) -> dict[str, Any]:
    """Wait (at most 30 s) until the file ``gate`` exists, then describe ``x``."""
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)
    return describe(x)


def mapped_from_store(x: Any) -> bool:
    """Whether the (proxied) array a task received lives on a memory map (zero-copy)."""
    import mmap

    from proxystore.proxy import extract
    from proxystore.store.file._maps import is_mapped

    obj: Any = extract(x) if issubclass(type(x), Proxy) else x
    while obj is not None:
        if isinstance(obj, mmap.mmap) or is_mapped(obj):
            return True
        obj = getattr(obj, "base", None) if not isinstance(obj, memoryview) else obj.obj
    return False


def wait_until_released(owner: Any, timeout: float = 30.0) -> None:
    """Wait until ``owner.proxier`` holds no stored argument; fail (never pass) on timeout."""
    deadline = time.monotonic() + timeout
    while owner.proxier.in_use():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"stored arguments still leased after {timeout} s: {owner.proxier.in_use()}"
            )
        time.sleep(0.01)


def large_arguments() -> dict[str, Any]:
    """Arguments above the tests' 10 kB threshold whose proxies a task body could tell apart."""
    import numpy as np

    return {
        "dict": {f"key{i}": [i, i / 2] for i in range(1_000)},
        "bytes": bytes(range(256)) * 100,
        "list-of-arrays": [np.arange(i, i + 50, dtype=np.float64) for i in range(100)],
        "list-of-big-arrays": [np.arange(2_000.0), np.arange(2_000.0) * 2],
        "str": "proxystore " * 2_000,
        "tuple": tuple(float(i) for i in range(3_000)),
    }


def transparency_probe(x: Any) -> dict[str, Any]:
    """What a task body computes with the operations that tell a proxy from its target."""
    import hashlib
    import json

    import numpy as np

    def attempt(function: Any) -> Any:
        try:
            return function()
        except Exception as exc:
            return f"error: {type(exc).__name__}"

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def view() -> Any:
        m = memoryview(x)
        return (m.nbytes, m.format, m.readonly, digest(m.tobytes()))

    def sum_axis0() -> Any:
        total = np.sum(x, axis=0)
        return (type(total).__name__, np.asarray(total).dtype.str, np.asarray(total).tolist())

    return {
        "type": type(x).__name__,
        "json": attempt(lambda: digest(json.dumps(x).encode())),
        "memoryview": attempt(view),
        "sum_axis0": attempt(sum_axis0),
        "isinstance": isinstance(x, (dict, bytes, list, str, tuple)),
    }


def make_result(kind: str) -> Any:
    """A large result of the given kind (``large_arguments()[kind]``)."""
    return large_arguments()[kind]


def result_type(value: Any) -> str:
    """The name of the type the task body received."""
    return type(value).__name__


_ROOT = Path(__file__).resolve().parent.parent.parent


def parsl_dfk(run_dir: Path) -> Any:
    """A DataFlowKernel with a ThreadPoolExecutor ("threads") and an HTEX ("htex")."""
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.executors import ThreadPoolExecutor as ParslThreads
    from parsl.providers import LocalProvider

    config = Config(
        executors=[
            ParslThreads(label="threads", max_threads=2),
            HighThroughputExecutor(
                label="htex",
                address="127.0.0.1",
                max_workers_per_node=2,
                provider=LocalProvider(
                    init_blocks=1,
                    max_blocks=1,
                    worker_init=f"export PYTHONPATH={_ROOT}:$PYTHONPATH",
                ),
            ),
        ],
        run_dir=str(run_dir),
        strategy="none",
        initialize_logging=False,  # Parsl never closes parsl.log (a ResourceWarning)
    )
    return parsl.load(config)


def produce(n: int, value: float) -> Any:
    """A task that makes a large result: ``n`` float64s of ``value``."""
    import numpy as np

    return np.full(n, float(value))


def consume(x: Any) -> float:
    """A task that reads a whole array (a proxy or the array)."""
    return float(x.sum())


def consume_all(xs: Any) -> float:
    """A task that reads every array of a list."""
    return float(sum(float(x.sum()) for x in xs))
