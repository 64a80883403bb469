"""The adapter contract for the data libraries users pass: the task body computes what it
computes with the plain engine, for torch tensors, Arrow tables, pandas, SciPy sparse, polars and
xarray objects above the threshold, on ProxyExecutor (threads and a spawn process pool),
ProxyClient (a real Dask LocalCluster, in-process workers and worker processes) and proxy_app
(a Parsl ThreadPoolExecutor), with a real FileStore.

Before issue 17 the adapters handed every such argument over as a proxy: ``torch.sum(x)``
failed with "Multiple dispatch failed", ``pa.concat_tables([t, t])`` with "Cannot convert Proxy
to pyarrow.lib.Table", ``df.assign(c=s)`` with a TypeError, ``np.ones(n) @ m`` with a
ValueError, and ``torch.as_tensor(x)`` crashed the worker.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest

from proxystore.integrations.futures import ProxyExecutor
from proxystore.integrations.policy import ProxyPolicy, register_delivery
from proxystore.proxy import Proxy, extract
from proxystore.store import Store
from tests.support.integration_helpers import wait_until_released

THRESHOLD = 1_000

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::ResourceWarning", "ignore:Sending large graph"
)


# -- arguments (made the same in every process: fixed seeds) ----------------------------------


def tensor() -> Any:
    import torch

    return torch.randn(100, 200, generator=torch.Generator().manual_seed(1))


def table() -> Any:
    import pyarrow as pa

    return pa.table({"a": np.arange(1_000), "b": np.arange(1_000) / 7})


def frame_and_series() -> tuple[Any, Any]:
    import pandas as pd

    df = pd.DataFrame({"a": np.arange(1_000), "b": np.arange(1_000) / 3})
    return df, pd.Series(np.arange(1_000) * 2.0, name="c")


def sparse() -> Any:
    import scipy.sparse

    return scipy.sparse.random(300, 300, density=0.05, format="csr", random_state=3)


def polars_frame() -> Any:
    import polars as pl

    return pl.DataFrame({"a": np.arange(1_000), "b": np.arange(1_000) / 3})


def data_array() -> Any:
    import xarray as xr

    return xr.DataArray(np.arange(2_000.0).reshape(100, 20), dims=("x", "y"), name="v")


# -- task bodies (module-level: worker processes import them by name) -------------------------


def torch_sum(x: Any) -> Any:
    import torch

    return torch.sum(x)


def torch_relu(x: Any) -> Any:
    import torch.nn.functional as F

    return F.relu(x)


def torch_linear(x: Any) -> Any:
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        return torch.nn.Linear(200, 3)(x)


def torch_cat(x: Any) -> Any:
    import torch

    return torch.cat([x, x])


def torch_as_tensor(x: Any) -> Any:
    import torch

    return torch.as_tensor(x) * 2


def arrow_concat(t: Any) -> Any:
    import pyarrow as pa

    return pa.concat_tables([t, t])


def arrow_equals(t: Any) -> Any:
    return t.equals(t)


def arrow_sum(t: Any) -> Any:
    import pyarrow.compute as pc

    return pc.sum(t["a"]).as_py()


def pandas_assign(df: Any, s: Any) -> Any:
    return df.assign(c=s)


def pandas_concat(df: Any, s: Any) -> Any:
    import pandas as pd

    return pd.concat([df, s.to_frame()], axis=1)


def sparse_vecmat(m: Any) -> Any:
    return np.ones(m.shape[0]) @ m


def sparse_matmul(m: Any) -> Any:
    return (m @ m.T).toarray()


def polars_concat(df: Any) -> Any:
    import polars as pl

    return pl.concat([df, df])


def polars_expr(df: Any) -> Any:
    import polars as pl

    return df.with_columns((pl.col("a") * 2).alias("c")).select(pl.col("c").sum())


def xarray_mean(da: Any) -> Any:
    return da.mean("x")


def xarray_concat(da: Any) -> Any:
    import xarray as xr

    return xr.concat([da, da * 2], dim="x")


def received(*args: Any) -> list[tuple[str, bool]]:
    """What the body received: the plain type's name and whether it was a proxy."""
    return [
        (type(extract(a)).__name__, True)
        if issubclass(type(a), Proxy)
        else (type(a).__name__, False)
        for a in args
    ]


def to_numpy(x: Any) -> Any:
    """A resolver: the task receives the tensor's numpy view."""
    return x.numpy()


def numpy_type_and_sum(x: Any) -> tuple[str, float]:
    return type(x).__name__, float(x.sum())


# (library, body, arguments)
CASES: dict[str, tuple[str, Callable[..., Any], Callable[[], tuple[Any, ...]]]] = {
    "torch.sum": ("torch", torch_sum, lambda: (tensor(),)),
    "F.relu": ("torch", torch_relu, lambda: (tensor(),)),
    "nn.Linear": ("torch", torch_linear, lambda: (tensor(),)),
    "torch.cat": ("torch", torch_cat, lambda: (tensor(),)),
    "torch.as_tensor": ("torch", torch_as_tensor, lambda: (tensor(),)),
    "pa.concat_tables": ("pyarrow", arrow_concat, lambda: (table(),)),
    "Table.equals": ("pyarrow", arrow_equals, lambda: (table(),)),
    "pc.sum": ("pyarrow", arrow_sum, lambda: (table(),)),
    "df.assign": ("pandas", pandas_assign, frame_and_series),
    "pd.concat": ("pandas", pandas_concat, frame_and_series),
    "ones@sparse": ("scipy", sparse_vecmat, lambda: (sparse(),)),
    "sparse@sparse.T": ("scipy", sparse_matmul, lambda: (sparse(),)),
    "pl.concat": ("polars", polars_concat, lambda: (polars_frame(),)),
    "pl.with_columns": ("polars", polars_expr, lambda: (polars_frame(),)),
    "xr.mean": ("xarray", xarray_mean, lambda: (data_array(),)),
    "xr.concat": ("xarray", xarray_concat, lambda: (data_array(),)),
}


# Calls that crashed the interpreter on a proxy before issue 17 run only in worker processes,
# so that a regression fails a test instead of ending the run.
CRASH_PRONE = frozenset({"torch.as_tensor"})
IN_PROCESS_CASES = sorted(set(CASES) - CRASH_PRONE)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (each library's own equality)."""
    if type(a) is not type(b):
        return False
    module = type(a).__module__.split(".")[0]
    if module == "torch":
        return bool(a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all()))
    if module == "numpy":
        return bool(a.dtype == b.dtype and np.array_equal(a, b))
    if module in ("pyarrow", "pandas", "polars"):
        return bool(a.equals(b))
    if module == "xarray":
        return bool(a.identical(b))
    return bool(a == b)


def case_arguments(name: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    library, body, make = CASES[name]
    pytest.importorskip(library)
    return body, make()


# -- engines --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spawn_pool() -> Iterator[Executor]:
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def parsl_threads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    parsl = pytest.importorskip("parsl")
    from parsl.config import Config
    from parsl.executors import ThreadPoolExecutor as ParslThreads

    config = Config(
        executors=[ParslThreads(label="threads", max_threads=2)],
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


def run_futures(
    pool: Executor, store: Store, body: Callable[..., Any], args: tuple[Any, ...], **policy: Any
) -> tuple[Any, Any]:
    """(the plain pool's result, ProxyExecutor's result) of ``body(*args)``."""
    plain = pool.submit(body, *args).result(timeout=120)
    ex = ProxyExecutor(pool, store=store, policy=ProxyPolicy(threshold=THRESHOLD, **policy))
    _, _, lease = ex.proxier.carry_out(args, {})
    assert len(lease.keys) == len(args), "every argument must travel through the store"
    ex.proxier.release(lease)
    proxied = ex.submit(body, *args).result(timeout=120)
    wait_until_released(ex)
    return plain, proxied


@pytest.mark.parametrize("name", IN_PROCESS_CASES)
def test_thread_pool_computes_what_the_plain_pool_computes(name: str, store_factory: Any) -> None:
    body, args = case_arguments(name)
    with ThreadPoolExecutor(2) as pool:
        plain, proxied = run_futures(pool, store_factory("file"), body, args)
    assert same(proxied, plain), (proxied, plain)


@pytest.mark.parametrize("name", sorted(CASES))
def test_spawn_pool_computes_what_the_plain_pool_computes(
    name: str, spawn_pool: Executor, store_factory: Any
) -> None:
    body, args = case_arguments(name)
    plain, proxied = run_futures(spawn_pool, store_factory("file"), body, args)
    assert same(proxied, plain), (proxied, plain)


@pytest.mark.parametrize("name", IN_PROCESS_CASES)
def test_dask_computes_what_the_plain_client_computes(
    name: str, dask_client: Any, store_factory: Any
) -> None:
    from proxystore.integrations.dask import ProxyClient

    body, args = case_arguments(name)
    plain = dask_client.submit(body, *args, pure=False).result(timeout=120)
    pclient = ProxyClient(dask_client, store=store_factory("file"), threshold=THRESHOLD)
    proxied = pclient.submit(body, *args, pure=False).result(timeout=120)
    assert same(proxied, plain), (proxied, plain)
    wait_until_released(pclient)


def test_dask_worker_processes_compute_what_the_plain_client_computes(
    store_factory: Any,
) -> None:
    distributed = pytest.importorskip("distributed")
    from proxystore.integrations.dask import ProxyClient

    names = ("nn.Linear", "pa.concat_tables", "df.assign", "ones@sparse", "pl.concat", "xr.mean")
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    try:
        pclient = ProxyClient(client, store=store_factory("file"), threshold=THRESHOLD)
        for name in names:
            body, args = case_arguments(name)
            plain = client.submit(body, *args, pure=False).result(timeout=120)
            proxied = pclient.submit(body, *args, pure=False).result(timeout=120)
            assert same(proxied, plain), (name, proxied, plain)
        wait_until_released(pclient)
    finally:
        client.close()
        cluster.close()


@pytest.mark.parametrize("name", IN_PROCESS_CASES)
def test_parsl_computes_what_the_plain_app_computes(
    name: str, parsl_threads: Any, store_factory: Any
) -> None:
    from parsl import python_app

    from proxystore.integrations.parsl import proxy_app

    body, args = case_arguments(name)
    plain = python_app(body, executors=["threads"])(*args).result(timeout=120)
    app = proxy_app(store=store_factory("file"), threshold=THRESHOLD)(
        python_app(body, executors=["threads"])
    )
    proxied = app(*args).result(timeout=120)
    assert same(proxied, plain), (proxied, plain)
    wait_until_released(app)


# -- what the body receives --------------------------------------------------------------------

# library -> delivered as a proxy under the default rule (else the object itself)
AS_PROXY = {
    "torch": False,  # torch's C code reads a proxy claiming Tensor as a tensor struct
    "pyarrow": False,  # Cython exact-type checks: "Cannot convert Proxy to pyarrow.lib.Table"
    "pandas": False,  # pandas' C paths check types (df.assign(c=s): TypeError)
    "scipy": False,  # np.ones(n) @ m: ValueError
    "polars": True,  # proxy-safe: tests/test_transparency_libraries.py
    "xarray": True,
}
FIRST_CASE = {"torch": "torch.sum", "pyarrow": "pa.concat_tables", "pandas": "df.assign"}
FIRST_CASE.update({"scipy": "ones@sparse", "polars": "pl.concat", "xarray": "xr.mean"})


@pytest.mark.parametrize("library", sorted(AS_PROXY))
def test_the_body_receives_what_the_delivery_table_says(
    library: str, spawn_pool: Executor, store_factory: Any
) -> None:
    _, args = case_arguments(FIRST_CASE[library])
    ex = ProxyExecutor(spawn_pool, store=store_factory("file"), threshold=THRESHOLD)
    got = ex.submit(received, args[0]).result(timeout=120)
    wait_until_released(ex)
    assert got == [(type(args[0]).__name__, AS_PROXY[library])]


@pytest.mark.parametrize("workers", ["thread", "spawn"])
def test_a_resolver_in_deliver_as_runs_on_the_worker(
    workers: str, spawn_pool: Executor, store_factory: Any
) -> None:
    torch = pytest.importorskip("torch")
    x = tensor()
    store = store_factory("file")
    policy = {"deliver_as": {torch.Tensor: to_numpy}}
    if workers == "thread":
        with ThreadPoolExecutor(1) as pool:
            plain, proxied = run_futures(pool, store, numpy_type_and_sum, (x,), **policy)
    else:
        plain, proxied = run_futures(spawn_pool, store, numpy_type_and_sum, (x,), **policy)
    assert plain[0] == "Tensor" and proxied == ("ndarray", pytest.approx(plain[1], rel=1e-5))
    # ... and deliver_as="proxy" still hands the proxy, which now works with torch too.
    with ThreadPoolExecutor(1) as pool:
        plain, proxied = run_futures(pool, store, torch_sum, (x,), deliver_as="proxy")
    assert same(proxied, plain)


def test_a_registered_resolver_reaches_dask_and_parsl_tasks(
    dask_client: Any, parsl_threads: Any, store_factory: Any
) -> None:
    pytest.importorskip("torch")
    from parsl import python_app

    from proxystore.integrations.dask import ProxyClient
    from proxystore.integrations.parsl import proxy_app

    x = tensor()
    store = store_factory("file")
    register_delivery("torch.Tensor", to_numpy)
    try:
        pclient = ProxyClient(dask_client, store=store, threshold=THRESHOLD)
        got = pclient.submit(numpy_type_and_sum, x, pure=False).result(timeout=120)
        assert got == ("ndarray", pytest.approx(float(x.sum()), rel=1e-5))
        wait_until_released(pclient)
        app = proxy_app(store=store, threshold=THRESHOLD)(
            python_app(numpy_type_and_sum, executors=["threads"])
        )
        assert app(x).result(timeout=120)[0] == "ndarray"
        wait_until_released(app)
    finally:
        register_delivery("torch.Tensor", "object")  # back to OBJECT_ONLY's entry


def test_a_worker_process_survives_every_torch_body_on_a_proxy(
    spawn_pool: Executor, store_factory: Any
) -> None:
    """deliver_as="proxy" forces proxies of tensors into the bodies: no crash, same results."""
    pytest.importorskip("torch")
    store = store_factory("file")
    for name in ("torch.sum", "F.relu", "nn.Linear", "torch.cat", "torch.as_tensor"):
        body, args = case_arguments(name)
        plain, proxied = run_futures(spawn_pool, store, body, args, deliver_as="proxy")
        assert same(proxied, plain), name
    assert spawn_pool.submit(os.getpid).result(timeout=60) != os.getpid()  # the pool lives
