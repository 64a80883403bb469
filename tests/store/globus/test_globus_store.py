"""GlobusStore against the local simulation of Globus Transfer (tests/support/globus_sim.py).

Real files move between two directories standing for two sites; the transfer service is the
simulation. A "site" of a store is chosen with its ``hostname`` argument or, for stores that
proxies re-create, the ``PROXYSTORE_GLOBUS_HOSTNAME`` environment variable.
"""

from __future__ import annotations

import pickle
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import globus_sdk
import numpy as np
import pytest

from proxystore.cli.globus_login import TOKENS_ENV, save_tokens
from proxystore.exceptions import (
    InvalidKeyError,
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
)
from proxystore.proxy import extract, get_factory, get_key, is_resolved, resolve_async
from proxystore.store import STORES, get_store, init_store, unregister_store
from proxystore.store.globus import (
    HOSTNAME_ENV,
    GlobusEndpoint,
    GlobusEndpoints,
    GlobusFactory,
    GlobusSettings,
    GlobusStore,
)
from tests.support.globus_sim import (
    SITE_A,
    SITE_B,
    SimulatedTransferClient,
    Sites,
    close_all,
    make_two_sites,
)

MakeStore = Callable[..., GlobusStore]


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    sites = make_two_sites(tmp_path / "globus", delay=0.05)
    yield sites
    close_all()


@pytest.fixture
def make_store(sites: Sites) -> Iterator[MakeStore]:
    """Make registered GlobusStores on the simulated sites; unregistered afterwards."""
    names: list[str] = []

    def _make(host: str = SITE_A, *, name: str | None = None, **kwargs: Any) -> GlobusStore:
        options: dict[str, Any] = {
            "endpoints": sites.endpoints,
            "transfer_client": sites.client,
            "hostname": host,
            "polling_interval": 0.01,
            "timeout": 5,
            **kwargs,
        }
        name = name or f"globus-{uuid.uuid4().hex[:8]}"
        names.append(name)
        store = init_store(STORES.GLOBUS, name, **options)
        assert isinstance(store, GlobusStore)
        return store

    yield _make
    for name in names:
        unregister_store(name)


def other_site(store: GlobusStore, host: str = SITE_B, **kwargs: Any) -> GlobusStore:
    """A second, unregistered store object with the same endpoints and client, at ``host``."""
    options = {**store.factory_kwargs(), "transfer_client": store.transfer_client, **kwargs}
    return GlobusStore(store.name, hostname=host, **options)


def file_at(sites: Sites, endpoint: GlobusEndpoint, key: str) -> Path:
    return sites.path_at(endpoint, key[:32] if len(key) >= 64 else key)


# -- the round trip ---------------------------------------------------------------------------


def test_proxy_made_at_site_a_resolves_at_site_b(
    make_store: MakeStore, sites: Sites, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(SITE_A)
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)
    proxy = store.proxy(array)
    key = get_key(proxy)
    assert key is not None
    assert file_at(sites, sites.a, key).exists()  # written locally, at once
    payload = pickle.dumps(proxy)

    # "Another process at site B": no store registered, and the environment names site B.
    unregister_store(store.name)
    monkeypatch.setenv(HOSTNAME_ENV, SITE_B)
    remote = pickle.loads(payload)
    assert not is_resolved(remote)
    assert np.array_equal(remote, array)
    recreated = get_store(remote)
    assert isinstance(recreated, GlobusStore) and recreated is not store
    assert recreated.local_endpoint == sites.b
    assert recreated.transfer_client is sites.client  # the picklable client travelled
    assert file_at(sites, sites.b, key).read_bytes() == file_at(sites, sites.a, key).read_bytes()


def test_key_carries_one_task_id_per_destination(make_store: MakeStore, sites: Sites) -> None:
    store = make_store(SITE_A)
    key = store.set("x")
    [task] = sites.client.tasks()
    object_id, task_hex = key[:32], key[32:]
    assert len(key) == 64 and set(key) <= set("0123456789abcdef"), key
    assert task_hex == uuid.UUID(task["task_id"]).hex
    # The object id names the file at the source, and the transfer brings it to site B.
    assert file_at(sites, sites.a, key).name == object_id and file_at(sites, sites.a, key).exists()
    assert other_site(store, SITE_B).get(key) == "x"
    assert file_at(sites, sites.b, key).read_bytes() == file_at(sites, sites.a, key).read_bytes()
    assert task["source_endpoint_id"] == sites.a.uuid
    assert task["destination_endpoint_id"] == sites.b.uuid


def test_three_sites_three_transfers_in_the_key(tmp_path: Path, make_store: MakeStore) -> None:
    roots = {str(uuid.uuid4()): tmp_path / f"site-{i}" for i in range(3)}
    endpoints = GlobusEndpoints(
        GlobusEndpoint(e, "/~/ps", str(root / "ps"), f"h{i}")
        for i, (e, root) in enumerate(roots.items())
    )
    client = SimulatedTransferClient(roots, state_dir=tmp_path / "service", delay=0.01)
    store = make_store("h0", endpoints=endpoints, transfer_client=client)
    key = store.set({"three": 3})
    assert len(key) == 96
    for host in ("h1", "h2"):
        assert other_site(store, host).get(key) == {"three": 3}
    destinations = {t["destination_endpoint_id"] for t in client.tasks()}
    assert destinations == set(list(roots)[1:])


def test_set_batch_submits_one_transfer_for_all(make_store: MakeStore, sites: Sites) -> None:
    store = make_store(SITE_A)
    keys = store.set_batch([1, "two", [3]])
    assert sites.client.calls.count("submit_transfer") == 1
    assert len({key[32:] for key in keys}) == 1  # the same task id in every key
    at_b = other_site(store)
    assert [at_b.get(key) for key in keys] == [1, "two", [3]]


# -- waiting ----------------------------------------------------------------------------------


def test_site_b_waits_for_a_slow_transfer(make_store: MakeStore, sites: Sites) -> None:
    sites.client.delay = 0.3
    store = make_store(SITE_A)
    key = store.set(np.ones(100_000))
    at_b = other_site(store)
    assert float(at_b.get(key).sum()) == 100_000.0
    assert sites.client.tasks()[0]["status"] == "SUCCEEDED"


def test_resolution_blocks_until_the_transfer_ends(
    make_store: MakeStore, sites: Sites, monkeypatch: pytest.MonkeyPatch
) -> None:
    sites.client.stall_next_transfers()
    store = make_store(SITE_A, timeout=30)
    proxy = store.proxy({"big": "object"})
    key = get_key(proxy)
    assert key is not None
    payload = pickle.dumps(proxy)
    unregister_store(store.name)
    monkeypatch.setenv(HOSTNAME_ENV, SITE_B)
    proxy_at_b = pickle.loads(payload)
    resolve_async(proxy_at_b)  # waits for the transfer in a background thread
    [task] = sites.client.tasks()
    assert task["status"] == "ACTIVE"
    assert not file_at(sites, sites.b, key).exists()
    assert not is_resolved(proxy_at_b)
    sites.client.release_stalled_transfers()
    assert proxy_at_b == {"big": "object"}
    assert file_at(sites, sites.b, key).exists()
    assert get_store(proxy_at_b).local_endpoint == sites.b  # type: ignore[union-attr]


def test_source_site_never_waits_for_its_own_transfers(make_store: MakeStore, sites: Sites) -> None:
    sites.client.stall_next_transfers()
    store = make_store(SITE_A, timeout=0.2)
    key = store.set("here already")
    assert store.get(key) == "here already"  # the same store object: no call at all
    assert "get_task" not in sites.client.calls
    # Another store object at site A asks once, sees the task goes elsewhere, reads the file.
    again = other_site(store, SITE_A, timeout=0.2)
    assert again.exists(key) and again.get(key) == "here already"
    assert sites.client.calls.count("get_task") == 1


def test_custom_key_set_waits_and_can_be_overwritten(make_store: MakeStore, sites: Sites) -> None:
    store = make_store(SITE_A)
    assert store.set("v1", key="results-7") == "results-7"
    assert sites.client.tasks()[0]["status"] == "SUCCEEDED"  # set returned after the transfer
    assert file_at(sites, sites.b, "results-7").exists()
    at_b = other_site(store)
    assert at_b.get("results-7") == "v1"
    store.set("v2", key="results-7")
    assert at_b.get("results-7") == "v1"  # cached at B
    assert not at_b.is_cached("results-7", strict=True)
    assert at_b.get("results-7", strict=True) == "v2"


def test_store_made_keys_are_immutable(make_store: MakeStore) -> None:
    store = make_store(SITE_A)
    key = store.set("first")
    with pytest.raises(InvalidKeyError, match="immutable"):
        store.set("second", key=key)
    with pytest.raises(InvalidKeyError, match="immutable"):
        store.set(b"raw", key=key, serialize=False)
    assert store.get(key) == "first"


def test_bad_custom_keys_are_refused(make_store: MakeStore) -> None:
    store = make_store(SITE_A)
    for key in ("", ".hidden", "a/b", "nul\x00"):
        with pytest.raises(InvalidKeyError, match="GlobusStore"):
            store.set(1, key=key)


# -- failures ---------------------------------------------------------------------------------


def test_failed_transfer_error_names_task_and_endpoints(
    make_store: MakeStore, sites: Sites
) -> None:
    sites.client.fail_next_transfers(reason="quota exceeded on destination")
    store = make_store(SITE_A)
    proxy = store.proxy([1, 2, 3])
    key = get_key(proxy)
    assert key is not None
    at_b = other_site(store)
    with pytest.raises(StoreError) as info:
        at_b.get(key)
    [task] = sites.client.tasks()
    message = str(info.value)
    for word in (task["task_id"], sites.a.uuid, sites.b.uuid, "FAILED", "quota exceeded", key):
        assert word in message
    assert info.value.store_name == store.name
    with pytest.raises(StoreError, match=task["task_id"]):
        at_b.exists(key)
    assert store.get(key) == [1, 2, 3]  # site A has its own file


def test_failed_transfer_of_a_custom_key_fails_the_set(make_store: MakeStore, sites: Sites) -> None:
    sites.client.fail_next_transfers()
    store = make_store(SITE_A)
    with pytest.raises(StoreError, match="FAILED.*did not reach endpoint " + sites.b.uuid):
        store.set("x", key="custom")


def test_timeout_names_task_and_endpoints(make_store: MakeStore, sites: Sites) -> None:
    sites.client.stall_next_transfers()
    store = make_store(SITE_A)
    key = store.set("never arrives")
    at_b = other_site(store, timeout=0.1)
    with pytest.raises(StoreTimeoutError) as info:
        at_b.get(key)
    assert isinstance(info.value, TimeoutError)
    [task] = sites.client.tasks()
    for word in (task["task_id"], sites.a.uuid, sites.b.uuid, "ACTIVE", "0.1 s"):
        assert word in str(info.value)


def test_unauthorized_means_log_in_again(make_store: MakeStore, sites: Sites) -> None:
    store = make_store(SITE_A)
    key = store.set(1)
    at_b = other_site(store)
    sites.client.fail_next_calls(401, methods={"get_task"})
    with pytest.raises(StoreAuthError, match="proxystore-globus-auth login") as info:
        at_b.get(key)
    assert isinstance(info.value.__cause__, globus_sdk.TransferAPIError)
    assert info.value.__cause__.http_status == 401
    sites.client.fail_next_calls(403, methods={"submit_transfer"})
    with pytest.raises(StoreAuthError, match=r"403.*data_access"):
        store.set(2)


def test_revoked_refresh_token_means_log_in_again(make_store: MakeStore, sites: Sites) -> None:
    store = make_store(SITE_A)
    sites.client.revoke_refresh_token()
    with pytest.raises(StoreAuthError, match=r"revoked.*proxystore-globus-auth login") as info:
        store.set(1)
    assert isinstance(info.value.__cause__, globus_sdk.AuthAPIError)


def test_unknown_task_or_endpoint_is_named(
    make_store: MakeStore, sites: Sites, tmp_path: Path
) -> None:
    store = make_store(SITE_A)
    ghost = uuid.uuid4()
    key = "0" * 32 + ghost.hex
    with pytest.raises(StoreError, match=f"knows no task {ghost}") as info:
        other_site(store).get(key)
    assert info.value.__cause__.http_status == 404  # type: ignore[union-attr]
    unknown = GlobusEndpoint(uuid.uuid4(), "/~/x", str(tmp_path / "x"), "nowhere")
    lost = make_store(SITE_A, endpoints=[sites.a, unknown])
    with pytest.raises(StoreError, match=f"knows no endpoint {sites.a.uuid} or {unknown.uuid}"):
        lost.set(1)


def test_network_failure_is_a_connection_error(make_store: MakeStore, sites: Sites) -> None:
    store = make_store(SITE_A)
    sites.client.disconnect_next_calls()
    with pytest.raises(StoreConnectionError, match="cannot reach Globus Transfer") as info:
        store.set(1)
    assert isinstance(info.value.__cause__, globus_sdk.NetworkError)
    sites.client.fail_next_calls(503)
    with pytest.raises(StoreError, match="503"):
        store.set(1)


# -- evict, strict, cleanup -------------------------------------------------------------------


def test_evict_deletes_on_every_site(make_store: MakeStore, sites: Sites) -> None:
    store = make_store(SITE_A)
    key = store.set("doomed")
    at_b = other_site(store)
    assert at_b.get(key) == "doomed"
    assert file_at(sites, sites.b, key).exists()
    store.evict(key)
    assert not file_at(sites, sites.a, key).exists()
    assert sites.client.wait_until_idle()
    assert not file_at(sites, sites.b, key).exists()
    assert not store.exists(key) and not at_b.exists(key)
    [delete] = [t for t in sites.client.tasks() if t["type"] == "DELETE"]
    assert delete["source_endpoint_id"] == sites.b.uuid and delete["status"] == "SUCCEEDED"


def test_evict_waits_for_a_transfer_in_flight(make_store: MakeStore, sites: Sites) -> None:
    sites.client.stall_next_transfers()
    store = make_store(SITE_A, timeout=0.1)
    key = store.set("short-lived")
    # A delete submitted now could run before the copy lands at B: evict waits instead.
    with pytest.raises(StoreTimeoutError, match="still ACTIVE"):
        store.evict(key)
    assert "submit_delete" not in sites.client.calls
    sites.client.release_stalled_transfers()
    store.timeout = 30
    store.evict(key)
    assert sites.client.wait_until_idle()
    assert not file_at(sites, sites.a, key).exists()
    assert not file_at(sites, sites.b, key).exists()


def test_proxy_with_evict_at_site_b_removes_both_copies(
    make_store: MakeStore, sites: Sites, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(SITE_A)
    proxy = store.proxy({"once": True}, evict=True)
    key = get_key(proxy)
    assert key is not None
    payload = pickle.dumps(proxy)
    unregister_store(store.name)
    monkeypatch.setenv(HOSTNAME_ENV, SITE_B)
    assert extract(pickle.loads(payload)) == {"once": True}
    assert sites.client.wait_until_idle()
    assert not file_at(sites, sites.a, key).exists()
    assert not file_at(sites, sites.b, key).exists()


def test_custom_key_set_after_evict_does_not_race_the_delete(
    make_store: MakeStore, sites: Sites
) -> None:
    store = make_store(SITE_A)
    store.set("old", key="reused")
    store.evict("reused")
    store.set("new", key="reused")  # waits for the pending delete at B first
    assert sites.client.wait_until_idle()
    assert other_site(store).get("reused") == "new"


def test_strict_warns_for_store_made_keys(make_store: MakeStore) -> None:
    store = make_store(SITE_A)
    key = store.set("fixed")
    with pytest.warns(UserWarning, match="immutable"):
        assert store.get(key, strict=True) == "fixed"
    with pytest.warns(UserWarning, match="immutable"):
        proxy = store.proxy("new", strict=True)
    assert get_factory(proxy).strict is False  # type: ignore[attr-defined]
    with pytest.warns(UserWarning, match="immutable"):
        store.proxy(key=key, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.set("mutable", key="named")
        assert store.get("named", strict=True) == "mutable"
        assert store.proxy(key="named", strict=True) == "mutable"
        assert store.is_cached(key, strict=True)


def test_cleanup_keeps_objects(make_store: MakeStore, sites: Sites) -> None:
    store = make_store(SITE_A)
    key = store.set("kept")
    store.cleanup()
    store.cleanup()
    assert not store.is_cached(key)
    assert store.get(key) == "kept"


# -- construction -----------------------------------------------------------------------------


def test_endpoints_as_list_dict_or_object(make_store: MakeStore, sites: Sites) -> None:
    for endpoints in (sites.endpoints, list(sites.endpoints), sites.endpoints.to_dict()):
        assert make_store(SITE_A, endpoints=endpoints).endpoints == sites.endpoints


def test_local_endpoint_from_argument_environment_or_host_name(
    sites: Sites, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options: dict[str, Any] = {"endpoints": sites.endpoints, "transfer_client": sites.client}
    monkeypatch.setenv(HOSTNAME_ENV, SITE_B)
    assert GlobusStore("s", **options).local_endpoint == sites.b
    assert GlobusStore("s", hostname=SITE_A, **options).local_endpoint == sites.a
    monkeypatch.delenv(HOSTNAME_ENV)
    monkeypatch.setattr("socket.gethostname", lambda: SITE_B)
    assert GlobusStore("s", **options).local_endpoint == sites.b
    monkeypatch.setattr("socket.gethostname", lambda: "laptop")
    with pytest.raises(ValueError, match=r"'laptop'.*PROXYSTORE_GLOBUS_HOSTNAME"):
        GlobusStore("s", **options)


def test_factory_kwargs_are_a_plain_picklable_description(
    make_store: MakeStore, sites: Sites
) -> None:
    store = make_store(SITE_A, polling_interval=0.5, timeout=9, cache_size=3, sync_level="checksum")
    kwargs = store.factory_kwargs()
    assert "hostname" not in kwargs
    assert kwargs["endpoints"] == sites.endpoints.to_dict()
    assert (kwargs["polling_interval"], kwargs["timeout"], kwargs["cache_size"]) == (0.5, 9, 3)
    assert kwargs["sync_level"] == "checksum"
    assert kwargs["transfer_client"] is sites.client
    assert pickle.loads(pickle.dumps(kwargs))["endpoints"] == kwargs["endpoints"]


def test_unpicklable_client_stays_and_the_worker_logs_in_itself(
    tmp_path: Path, make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sites = make_two_sites(tmp_path / "private", delay=0.01, picklable=False)
    store = make_store(SITE_A, endpoints=sites.endpoints, transfer_client=sites.client)
    assert "transfer_client" not in store.factory_kwargs()
    payload = pickle.dumps(store.proxy("x"))
    unregister_store(store.name)
    monkeypatch.setenv(HOSTNAME_ENV, SITE_B)
    monkeypatch.setenv(TOKENS_ENV, str(tmp_path / "no-tokens.json"))
    with pytest.raises(StoreAuthError, match="proxystore-globus-auth login"):
        extract(pickle.loads(payload))


def test_without_client_the_store_logs_in_from_saved_tokens(
    sites: Sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = tmp_path / "tokens.json"
    monkeypatch.setenv(TOKENS_ENV, str(tokens))
    with pytest.raises(
        StoreAuthError, match=r"no Globus tokens.*proxystore-globus-auth login"
    ) as info:
        GlobusStore("s", endpoints=sites.endpoints, hostname=SITE_A)
    assert info.value.store_name == "s"
    save_tokens(
        "client-id",
        {
            "transfer.api.globus.org": {
                "refresh_token": "RT",
                "access_token": "AT",
                "expires_at_seconds": 2**40,
            }
        },
    )
    store = GlobusStore("s", endpoints=sites.endpoints, hostname=SITE_A)  # no network needed
    assert isinstance(store.transfer_client, globus_sdk.TransferClient)
    assert "transfer_client" not in store.factory_kwargs()  # never ship the user's tokens


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"polling_interval": 0}, ValueError, "polling_interval must be positive"),
        ({"timeout": -1}, ValueError, "timeout must be positive"),
        ({"timeout": "60"}, TypeError, "timeout must be a number"),
        ({"polling_interval": True}, TypeError, "polling_interval must be a number"),
        ({"sync_level": "fast"}, ValueError, "sync_level must be one of"),
        ({"hostname": 5}, TypeError, "hostname must be a str"),
        ({"endpoints": "endpoints.json"}, TypeError, "from_json"),
        ({"endpoints": []}, ValueError, "at least one endpoint"),
        ({"cache_size": -1}, ValueError, "cache size"),
    ],
)
def test_invalid_arguments(sites: Sites, kwargs: dict[str, Any], error: type, match: str) -> None:
    options: dict[str, Any] = {"endpoints": sites.endpoints, "transfer_client": sites.client}
    options["hostname"] = SITE_A
    options.update(kwargs)
    with pytest.raises(error, match=match):
        GlobusStore("s", **options)


def test_repr_names_the_local_endpoint(make_store: MakeStore, sites: Sites) -> None:
    assert sites.a.uuid in repr(make_store(SITE_A))


# -- settings, description, factory (issue 18) ---------------------------------------------


def test_a_description_re_creates_an_equal_store_at_either_site(
    make_store: MakeStore, tmp_path: Path
) -> None:
    key = bytearray(b"k" * 32)
    store = make_store(
        SITE_A,
        polling_interval=0.5,
        timeout=9,
        cache_size=3,
        sync_level="checksum",
        signing_key=key,
    )
    assert isinstance(store.settings, GlobusSettings)
    kwargs = store.description.kwargs
    assert kwargs["signing_key"] == bytes(key) and type(kwargs["signing_key"]) is bytes
    for host in (SITE_A, SITE_B):
        again = GlobusStore(store.name, hostname=host, **kwargs)
        assert again.settings == store.settings
        assert again.description == store.description
        assert again.local_endpoint.host_regex == host


def test_proxies_carry_the_globus_factory(make_store: MakeStore) -> None:
    store = make_store(SITE_A)
    assert GlobusStore.factory_class is GlobusFactory
    factory = get_factory(store.proxy([1, 2]))
    assert type(factory) is GlobusFactory
    assert factory() == [1, 2]


def test_timeout_set_later_is_validated_and_travels(make_store: MakeStore) -> None:
    store = make_store(SITE_A, timeout=5)
    before = store.description
    for bad, error in ((-1, ValueError), ("30", TypeError)):
        with pytest.raises(error, match="timeout must be"):
            store.timeout = bad  # type: ignore[assignment]
        assert store.timeout == 5 and store.description == before  # nothing changed
    store.timeout = 30
    assert store.timeout == store.tasks.timeout == store.settings.timeout == 30
    assert store.description.kwargs["timeout"] == 30
    factory = get_factory(store.proxy("x"))
    assert factory.description.kwargs["timeout"] == 30


def test_a_transfer_client_without_its_methods_is_refused_at_once(sites: Sites) -> None:
    class Half:
        def submit_transfer(self, data: Any) -> Any:
            raise AssertionError("never called")

    with pytest.raises(TypeError, match=r"'s': transfer_client .*submit_delete, get_task"):
        GlobusStore("s", endpoints=sites.endpoints, transfer_client=Half(), hostname=SITE_A)


def test_settings_repr_hides_the_client_and_the_key(make_store: MakeStore) -> None:
    store = make_store(SITE_A, signing_key=b"secret-signing-key-0123456789abcdef")
    shown = repr(store.settings)
    assert "transfer_client=***" in shown and "SimulatedTransferClient" not in shown
    assert "secret-signing-key" not in shown and "GlobusSettings(" in shown
