"""GlobusStore: a proxy made at site A resolves at site B once a Globus transfer brought it there.

By default the whole example runs on this machine, against the local simulation of the Globus
Transfer service that the tests use (``tests/support/globus_sim.py``): two temporary directories
stand for the two endpoints, the main process is site A and a worker process is site B. Files are
really copied between the directories, but no Globus service is involved:

    python examples/globus_example.py

With ``--real`` the store talks to Globus Transfer, with the tokens saved by
``proxystore-globus-auth login`` and your own endpoints (a JSON file, or ``--endpoint`` given
once per endpoint). Run ``put`` at site A and ``get`` at site B:

    # at site A: store an array, start its transfers, write the (tiny) pickled proxy
    python examples/globus_example.py --real --endpoints endpoints.json put proxy.pkl
    # copy proxy.pkl to site B, then there: wait for the transfer and use the array
    python examples/globus_example.py --real get proxy.pkl --evict

The endpoints file maps each endpoint UUID to ``endpoint_path`` (the directory as Globus sees
it), ``local_path`` (the same directory on that site's file system) and ``host_regex`` (matches
that site's host names; or set ``PROXYSTORE_GLOBUS_HOSTNAME``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

import proxystore as ps
from proxystore.exceptions import StoreAuthError, StoreError
from proxystore.proxy import Proxy, extract, get_key, is_resolved
from proxystore.store.globus import HOSTNAME_ENV, GlobusEndpoint, GlobusEndpoints, GlobusStore

# The simulation lives with the tests (it is a test double, not part of the package); the
# repository root on sys.path makes ``tests.support.globus_sim`` importable here and in the worker.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STORE_NAME = "globus-example"


def become_site(hostname: str) -> None:
    """Worker initializer: this process is at the site whose host_regex matches ``hostname``."""
    os.environ[HOSTNAME_ENV] = hostname


def column_means(data: np.ndarray) -> tuple[np.ndarray, str]:
    """A task at site B: the proxy resolves on first use (waiting for the transfer)."""
    means = np.asarray(data.mean(axis=0))
    store = ps.store.get_store(data)  # re-created here from the proxy's description
    assert isinstance(store, GlobusStore)
    return means, store.local_endpoint.local_path


def first_element(data: Any) -> float:
    return float(data.flat[0])


def simulate() -> None:
    from tests.support.globus_sim import SITE_A, SITE_B, make_two_sites

    with tempfile.TemporaryDirectory(prefix="proxystore-globus-example-") as base:
        sites = make_two_sites(base, delay=0.5)  # every transfer takes half a second
        store = ps.store.init_store(
            ps.store.STORES.GLOBUS,
            STORE_NAME,
            endpoints=sites.endpoints,
            transfer_client=sites.client,
            hostname=SITE_A,  # this process is site A
            polling_interval=0.05,
            timeout=30,
        )
        assert isinstance(store, GlobusStore)
        print(f"site A endpoint {sites.a.uuid} -> {sites.a.local_path}")
        print(f"site B endpoint {sites.b.uuid} -> {sites.b.local_path}")

        data = np.random.default_rng(0).random((1_000, 500))  # 4 MB
        proxy = store.proxy(data)
        key = get_key(proxy)
        assert key is not None
        [task] = sites.client.tasks()
        print(f"stored under key {key}: object id {key[:32]} + transfer task {task['task_id']}")
        print(
            f"the transfer to site B is {task['status']}; the pickled proxy is "
            f"{len(pickle.dumps(proxy))} bytes"
        )

        # Site B is a separate process ("spawn": it shares nothing with this one).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            1, mp_context=context, initializer=become_site, initargs=(SITE_B,)
        ) as pool:
            means, where = pool.submit(column_means, proxy).result()
            assert np.allclose(means, data.mean(axis=0))
            print(f"site B waited for the transfer and read the array from {where}")

            # A failed transfer: resolving at site B raises an error naming task and endpoints.
            sites.client.fail_next_transfers(reason="simulated: destination disk full")
            doomed = store.proxy(np.zeros(3))
            try:
                pool.submit(first_element, doomed).result()
            except StoreError as exc:
                print(f"a failed transfer, as site B sees it:\n  {exc}")
            else:
                raise AssertionError("the failed transfer went unnoticed")

        # At site A the proxy never waits: the file is here.
        assert isinstance(proxy, np.ndarray) and np.array_equal(extract(proxy), data)
        assert is_resolved(proxy)

        # Evict removes the file here and submits a Globus delete task at site B.
        store.evict(key)
        sites.client.wait_until_idle()
        assert not (Path(sites.a.local_path) / key[:32]).exists()
        assert not (Path(sites.b.local_path) / key[:32]).exists()
        print("evicted: the file is gone from both sites")

        sites.client.close()
        ps.store.unregister_store(STORE_NAME)
    print("globus example (simulated Transfer service) OK")


def real_put(endpoints: GlobusEndpoints, out: Path) -> None:
    store = ps.store.init_store(ps.store.STORES.GLOBUS, STORE_NAME, endpoints=endpoints)
    assert isinstance(store, GlobusStore)
    data = np.arange(1_000_000, dtype=np.float64)
    proxy = store.proxy(data)
    out.write_bytes(pickle.dumps(proxy))
    print(f"stored {data.nbytes / 1e6:.0f} MB at endpoint {store.local_endpoint.uuid} under key")
    print(f"  {get_key(proxy)}")
    print(f"wrote the proxy to {out}; copy it to another site and run 'get' there")


def real_get(source: Path, evict: bool) -> None:
    proxy: Proxy = pickle.loads(source.read_bytes())
    print(f"resolving key {get_key(proxy)} (waits for the transfer) ...")
    total = float(proxy.sum())  # first use: the store is re-created here and waits
    assert total == float(np.arange(1_000_000, dtype=np.float64).sum())
    store = ps.store.get_store(proxy)
    assert isinstance(store, GlobusStore)
    print(f"read the array at endpoint {store.local_endpoint.uuid}: sum = {total}")
    if evict:
        key = get_key(proxy)
        assert key is not None
        store.evict(key)
        print("evicted it here and submitted Globus delete tasks for the other endpoints")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--real", action="store_true", help="use Globus Transfer and your endpoints"
    )
    parser.add_argument("--endpoints", type=Path, help="JSON file of the endpoints (with --real)")
    parser.add_argument(
        "--endpoint",
        nargs=4,
        action="append",
        default=[],
        metavar=("UUID", "ENDPOINT_PATH", "LOCAL_PATH", "HOST_REGEX"),
        help="one endpoint (repeat; with --real, instead of --endpoints)",
    )
    parser.add_argument("action", nargs="?", choices=["put", "get"], help="with --real")
    parser.add_argument("proxy_file", nargs="?", type=Path, help="where the pickled proxy goes")
    parser.add_argument("--evict", action="store_true", help="with get: evict afterwards")
    args = parser.parse_args(argv)
    if args.real:
        if args.action is None or args.proxy_file is None:
            parser.error(
                "--real needs an action and a file: put FILE (site A) or get FILE (site B)"
            )
        if args.action == "put" and (args.endpoints is None) == (not args.endpoint):
            parser.error("put needs either --endpoints FILE or --endpoint ... (repeated)")
    elif args.action is not None:
        parser.error("put/get need --real; without it the example simulates both sites")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.real:
        simulate()
        return
    try:
        if args.action == "get":  # the proxy carries the endpoints
            real_get(args.proxy_file, args.evict)
        elif args.endpoints is not None:
            real_put(GlobusEndpoints.from_json(args.endpoints), args.proxy_file)
        else:
            real_put(GlobusEndpoints(GlobusEndpoint(*f) for f in args.endpoint), args.proxy_file)
    except StoreAuthError as exc:
        sys.exit(f"globus_example: {exc}")


if __name__ == "__main__":
    main()
