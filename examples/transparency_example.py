"""Transparency: a proxied argument computes what the object computes.

Part 1 shows the proxy itself under numpy and the standard library: a proxy of a list of arrays,
of a scalar or of a dict gives what the plain object gives. Part 2 shows what a task body
receives from ``ProxyExecutor``: a lazy proxy only for types registered proxy-safe (numpy
arrays, polars and xarray objects), the object itself for everything else (built-in kinds,
where C code checks exact types, torch, Arrow, pandas, user classes); how
``ProxyPolicy(deliver_as=...)`` changes that per type; and how ``register_delivery`` declares a
type proxy-safe or gives it a resolver, for every adapter at once.

Run from the repository root: ``python examples/transparency_example.py`` (needs numpy).
"""

from __future__ import annotations

import copy
import json
import tempfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np

from proxystore.factory import SimpleFactory
from proxystore.integrations.futures import ProxyExecutor
from proxystore.integrations.policy import ProxyPolicy, register_delivery, unregister_delivery
from proxystore.proxy import Proxy
from proxystore.store import init_store, unregister_store


def body(config: dict[str, Any], rows: list[np.ndarray], table: np.ndarray) -> dict[str, Any]:
    """A task body that would notice a proxy: exact types, json, numpy over a list."""
    return {
        "config": type(config).__name__,
        "json": len(json.dumps(config)),
        "column_sums": np.sum(rows, axis=0).tolist(),
        "table": type(table).__name__,  # 'Proxy' by default: arrays stay lazy
        "table_sum": float(table.sum()),
    }


def kinds(config: dict[str, Any], table: np.ndarray) -> tuple[str, bool, str]:
    """What a body sees of its arguments' types."""
    return type(config).__name__, isinstance(config, dict), type(table).__name__


class Grid:
    """A user class: delivered as the object unless someone registers it."""

    def __init__(self, n: int) -> None:
        self.cells = np.arange(float(n))

    def total(self) -> float:
        return float(self.cells.sum())


def grid_cells(grid: Grid) -> np.ndarray:
    """A resolver: the task body receives the grid's cells instead of the grid."""
    return grid.cells


def received(grid: Any) -> tuple[str, float]:
    """The type a body received and what it computes from it."""
    value = grid.total() if hasattr(grid, "total") else float(grid.sum())
    return type(grid).__name__, value


def main() -> None:
    # -- 1. the proxy under numpy and the standard library ------------------------------------
    rows = [np.array([1, 2, 3]), np.array([2, 3, 4])]
    p = Proxy(SimpleFactory(rows))
    assert np.array_equal(np.sum(p, axis=0), [3, 5, 7])  # element-wise, like the list
    assert np.asarray(p).shape == (2, 3)
    assert np.array_equal(np.concatenate(p), np.concatenate(rows))
    assert np.sum(Proxy(SimpleFactory(7))) == 7
    assert np.add(np.int8(3), Proxy(SimpleFactory(7))).dtype == np.int8  # numpy's own promotion
    settings = {"alpha": [1, 2]}
    clone = copy.deepcopy(Proxy(SimpleFactory(settings)))
    assert type(clone) is dict and clone == settings and clone["alpha"] is not settings["alpha"]
    print("proxy: numpy and copy give what the plain objects give")

    # -- 2. what a task body receives ---------------------------------------------------------
    store_dir = tempfile.mkdtemp(prefix="proxystore-transparency-")
    store = init_store("file", "transparency-example", store_dir=store_dir)
    try:
        config = {f"param{i}": i for i in range(20_000)}  # large enough to go by proxy
        many_rows = [np.full(3, float(i)) for i in range(5_000)]
        table = np.arange(200_000, dtype=np.float64)
        expected = body(config, many_rows, table)
        expected["table"] = "Proxy"
        for pool in (ThreadPoolExecutor(2), ProcessPoolExecutor(2)):
            with ProxyExecutor(pool, store=store, threshold=100_000) as ex:
                got = ex.submit(body, config, many_rows, table).result()
            assert got == expected, (got, expected)
            print(f"{type(pool).__name__}: dict and list arrive as objects, the array as a proxy")

        # deliver_as chooses per type: here arrays arrive as arrays, dicts as lazy proxies
        # (which pass isinstance, but not type() or the C json encoder).
        policy = ProxyPolicy(threshold=100_000, deliver_as={np.ndarray: "object", dict: "proxy"})
        with ProxyExecutor(ProcessPoolExecutor(2), store=store, policy=policy) as ex:
            assert ex.submit(kinds, config, table).result() == ("Proxy", True, "ndarray")
        print("deliver_as: arrays as objects, dicts as proxies")

        # -- 3. the registry: declare a type proxy-safe, or give it a resolver ------------------
        grid = Grid(200_000)
        with ProxyExecutor(ProcessPoolExecutor(2), store=store, threshold=100_000) as ex:
            assert ex.submit(received, grid).result() == ("Grid", grid.total())
            register_delivery(Grid, "proxy")  # only once its operations are proven on proxies
            assert ex.submit(received, grid).result() == ("Proxy", grid.total())
            register_delivery(Grid, grid_cells)  # by type or f"{Grid.__module__}.Grid"
            assert ex.submit(received, grid).result() == ("ndarray", grid.total())
            unregister_delivery(Grid)
        print("register_delivery: a user class as the object, as a proxy, through a resolver")
    finally:
        store.cleanup()
        unregister_store("transparency-example")


if __name__ == "__main__":
    main()
