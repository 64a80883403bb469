"""proxy_executor over real Parsl executors (a ThreadPoolExecutor and HighThroughputExecutors
with a LocalProvider: real worker processes) with real File and Redis stores, and Parsl's own
ProxyStoreSerializer plugin over this project's stores."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

parsl = pytest.importorskip("parsl")

from parsl import bash_app, python_app  # noqa: E402
from parsl.config import Config  # noqa: E402
from parsl.executors import HighThroughputExecutor  # noqa: E402
from parsl.executors import ThreadPoolExecutor as ParslThreads  # noqa: E402
from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD  # noqa: E402
from parsl.providers import LocalProvider  # noqa: E402

from proxystore.integrations.parsl import proxy_app, proxy_executor  # noqa: E402
from proxystore.proxy import Proxy, extract  # noqa: E402
from proxystore.store import Store, init_store, unregister_store  # noqa: E402
from tests.support.integration_helpers import (  # noqa: E402
    describe,
    describe_after_gate,
    fail,
    large_arguments,
    result_type,
    total,
)

THRESHOLD = 10_000
BIG = np.arange(THRESHOLD, dtype=np.float64)  # 80 kB
SMALL = np.arange(10, dtype=np.float64)
ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning"),
]


@pytest.fixture(scope="module")
def stores(
    tmp_path_factory: pytest.TempPathFactory, redis_address: tuple[str, int]
) -> Iterator[dict[str, Store]]:
    host, port = redis_address
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    made = {
        "file": init_store(
            "file", f"pe-file-{tag}", store_dir=str(tmp_path_factory.mktemp("pe") / "store")
        ),
        "redis": init_store("redis", f"pe-redis-{tag}", hostname=host, port=port),
    }
    try:
        yield made
    finally:
        for store in made.values():
            store.cleanup()
            unregister_store(store.name)


def htex(label: str, workers: int = 2) -> HighThroughputExecutor:
    # Workers run this interpreter (so this checkout's proxystore), not the first
    # process_worker_pool.py on PATH.
    launch = DEFAULT_LAUNCH_CMD.replace(
        "process_worker_pool.py",
        f"{sys.executable} -m parsl.executors.high_throughput.process_worker_pool",
        1,
    )
    return HighThroughputExecutor(
        label=label,
        address="127.0.0.1",
        launch_cmd=launch,
        max_workers_per_node=workers,
        provider=LocalProvider(
            init_blocks=1, max_blocks=1, worker_init=f"export PYTHONPATH={ROOT}:$PYTHONPATH"
        ),
    )


@pytest.fixture(scope="module")
def executors(stores: dict[str, Store]) -> dict[str, Any]:
    return {
        "threads": proxy_executor(
            ParslThreads(label="threads", max_threads=4), store=stores["file"], threshold=THRESHOLD
        ),
        "htex": proxy_executor(htex("htex"), store=stores["file"], threshold=THRESHOLD),
        "htex-redis": proxy_executor(
            htex("htex-redis"), store=stores["redis"], threshold=THRESHOLD
        ),
        "plain": ParslThreads(label="plain", max_threads=2),
        "plain-htex": htex("plain-htex", workers=1),  # for Parsl's own serializer plugin
    }


@pytest.fixture(scope="module")
def dfk(executors: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    bindir = os.path.dirname(sys.executable)
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{bindir}{os.pathsep}{old_path}"
    config = Config(
        executors=list(executors.values()),
        run_dir=str(tmp_path_factory.mktemp("parsl")),
        strategy="none",
        initialize_logging=False,
    )
    dfk = parsl.load(config)
    try:
        yield dfk
    finally:
        dfk.cleanup()
        parsl.clear()
        os.environ["PATH"] = old_path


@pytest.fixture(params=["threads", "htex", "htex-redis"])
def label(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Puts:
    """Counts what an executor's proxier stores (a spy on the real store's ``set``)."""

    def __init__(self, executor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.proxier = executor.proxystore_proxier
        self.store: Store = self.proxier.store
        self.keys: list[str] = []
        real = self.store.set

        def counting(*args: Any, **kwargs: Any) -> str:
            key = real(*args, **kwargs)
            self.keys.append(key)
            return key

        monkeypatch.setattr(self.store, "set", counting)

    def wait_released(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.proxier.in_use():
            if time.monotonic() > deadline:
                raise AssertionError(f"still leased after {timeout} s: {self.proxier.in_use()}")
            time.sleep(0.01)

    def none_left(self) -> bool:
        return not any(self.store.exists(key) for key in self.keys)


@pytest.fixture
def puts(dfk: Any, executors: dict[str, Any], label: str, monkeypatch: pytest.MonkeyPatch) -> Puts:
    return Puts(executors[label], monkeypatch)


def app(fn: Any, label: str) -> Any:
    return python_app(fn, executors=[label])


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@bash_app(executors=["htex"])
def count_bytes(data: bytes, stdout: Any = None) -> str:
    return f"echo {len(data)}"


def test_executor_kept_its_label_and_kind(dfk: Any, executors: dict[str, Any]) -> None:
    for name in ("threads", "htex", "htex-redis"):
        executor = executors[name]
        assert executor.label == name
        assert dfk.executors[name] is executor
    assert isinstance(executors["htex"], HighThroughputExecutor)
    assert isinstance(executors["threads"], ParslThreads)
    assert executors["htex"].provider.init_blocks == 1
    assert "proxy_executor" in repr(executors["htex"])


def test_results_equal_plain_parsl(dfk: Any, label: str, puts: Puts) -> None:
    plain = app(total, "plain")
    proxied = app(total, label)
    assert proxied(BIG, SMALL, 2.0).result() == plain(BIG, SMALL, 2.0).result()
    assert proxied(SMALL, inputs=[BIG]).result() == plain(SMALL, inputs=[BIG]).result()
    assert proxied(1.0, 2).result() == 3.0
    puts.wait_released()
    assert len(puts.keys) == 2
    assert puts.none_left()


def test_object_used_by_many_tasks_is_stored_once(
    dfk: Any, label: str, puts: Puts, tmp_path: Path
) -> None:
    gate = str(tmp_path / "gate")
    waiting = app(describe_after_gate, label)
    futures = [waiting(gate, BIG) for _ in range(4)]
    wait_for(lambda: list(puts.proxier.in_use().values()) == [4])
    assert len(puts.keys) == 1
    open(gate, "w").close()
    seen = [future.result() for future in futures]
    assert all(s["args"][0]["proxy"] and s["args"][0]["prefetching"] for s in seen)
    assert len({s["args"][0]["key"] for s in seen}) == 1
    puts.wait_released()
    assert puts.none_left()


def test_store_empty_after_a_failed_task(dfk: Any, label: str, puts: Puts) -> None:
    with pytest.raises(RuntimeError, match="on purpose"):
        app(fail, label)(BIG).result()
    puts.wait_released()
    assert len(puts.keys) == 1
    assert puts.none_left()


def test_delivery_rule_as_with_proxy_app(dfk: Any, label: str, puts: Puts) -> None:
    seen = app(describe, label)(BIG, SMALL, big=BIG + 1).result()
    assert seen["args"][0]["proxy"] and seen["args"][0]["prefetching"]
    assert not seen["args"][1]["proxy"]
    assert seen["kwargs"]["big"]["proxy"]
    if label != "threads":
        assert seen["pid"] != os.getpid()
    kinds = large_arguments()
    got = app(result_type, label)
    for kind in ("dict", "bytes", "str"):  # built-in kinds: the body gets the object itself
        assert got(kinds[kind]).result() == type(kinds[kind]).__name__, kind
    puts.wait_released()
    assert puts.none_left()


def test_bash_apps_go_untouched(
    dfk: Any, executors: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Puts(executors["htex"], monkeypatch)
    out = str(tmp_path / "out.txt")
    assert count_bytes(bytes(50_000), stdout=out).result() == 0
    with open(out) as handle:
        assert handle.read().strip() == "50000"
    assert counted.keys == []


def test_proxy_app_keeps_working_on_a_proxying_executor(
    dfk: Any, stores: dict[str, Store], executors: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Puts(executors["htex"], monkeypatch)  # the same store as the app's
    proxier = executors["htex"].proxystore_proxier
    wrapped: list[Any] = []
    submit = proxier.submit

    def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
        wrapped.append(fn)
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(proxier, "submit", spy)
    decorated = proxy_app(store=stores["file"], threshold=THRESHOLD)(
        python_app(total, executors=["htex"])
    )
    assert decorated(BIG, 1).result() == total(BIG) + 1
    assert len(counted.keys) == 1  # stored once, by the app
    assert wrapped == [], "the app's task goes to the executor as the app made it"


def test_bad_input(stores: dict[str, Store], store_factory: Any) -> None:
    with pytest.raises(TypeError, match="Parsl executor"):
        proxy_executor(object(), store=stores["file"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store"):
        proxy_executor(ParslThreads(label="t"), store=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="process"):
        proxy_executor(htex("h"), store=store_factory("local"))
    with pytest.raises(ValueError, match="threshold= or policy="):
        proxy_executor(ParslThreads(label="t"), store=stores["file"], threshold=1, policy=object())  # type: ignore[arg-type]
    threads = proxy_executor(ParslThreads(label="t"), store=store_factory("local"))  # in-process
    with pytest.raises(ValueError, match="already"):
        proxy_executor(threads, store=stores["file"])


# -- Parsl's own ProxyStoreSerializer plugin over this project's stores ---------------------------


def test_parsl_proxystore_serializer_with_our_stores(
    dfk: Any, stores: dict[str, Store], tmp_path: Path
) -> None:
    from parsl.serialize import facade
    from parsl.serialize.proxystore import ProxyStoreSerializer

    store = stores["file"]
    serializer = ProxyStoreSerializer(
        store=store,
        should_proxy=lambda o: isinstance(o, np.ndarray) and o.nbytes >= THRESHOLD,
    )
    payload = serializer.serialize({"big": BIG, "small": SMALL})
    assert len(payload) < THRESHOLD  # the array went to the store
    back = serializer.deserialize(payload)
    assert issubclass(type(back["big"]), Proxy) and np.array_equal(extract(back["big"]), BIG)
    # Another process resolves it: the factory re-creates the store there.
    probe = (
        "import sys, numpy as np; from parsl.serialize.proxystore import ProxyStoreSerializer; "
        "d = ProxyStoreSerializer().deserialize(open(sys.argv[1], 'rb').read()); "
        "print(float(np.sum(d['big'])))"
    )
    (tmp_path / "payload").write_bytes(payload)
    run = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "payload")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.strip()) == float(np.sum(BIG))
    # Registered as Parsl's data serializer for a real run on HTEX workers.
    # Tried first; Parsl's default stays registered after it (results come back with it).
    saved = dict(facade.methods_for_data)
    facade.methods_for_data.clear()
    facade.register_method_for_data(serializer)
    facade.methods_for_data.update(saved)
    try:
        before = set(os.listdir(store.store_dir))
        run_on_htex = python_app(total, executors=["plain-htex"])
        assert run_on_htex(BIG, SMALL).result() == total(BIG, SMALL)
        # The plugin stored the array (and never evicts it: no lease, no eviction).
        assert set(os.listdir(store.store_dir)) - before
    finally:
        facade.methods_for_data.clear()
        facade.methods_for_data.update(saved)
