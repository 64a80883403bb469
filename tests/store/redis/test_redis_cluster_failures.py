"""RedisStore on a Redis Cluster whose topology changes: a killed master, a promoted replica,
a resharding (``MOVED``/``ASK`` while slots migrate).

Each test starts its own private loopback cluster (3 masters; with 3 replicas for failover).
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import StoreConnectionError, StoreError, StoreTimeoutError
from proxystore.store import unregister_store
from proxystore.store.redis import RedisClusterBackend, RedisStore
from proxystore.store.redis._wire.connection import Connection
from tests.support.redis_cluster import Cluster, cli, private_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def made() -> Iterator[list[RedisStore]]:
    stores: list[RedisStore] = []
    yield stores
    for store in stores:
        store.close()
        unregister_store(store.name)


def cluster_store(cluster: Cluster, made: list[RedisStore], **kwargs: Any) -> RedisStore:
    kwargs.setdefault("chunk_size", 4096)
    kwargs.setdefault("cache_size", 0)
    store = RedisStore(
        f"cluster-fail-{uuid.uuid4().hex[:8]}",
        hostname=cluster.host,
        port=cluster.port,
        cluster=True,
        **kwargs,
    )
    made.append(store)
    return store


def backend_of(store: RedisStore) -> RedisClusterBackend:
    backend = store._redis
    assert isinstance(backend, RedisClusterBackend)
    return backend


def key_on(backend: RedisClusterBackend, address: str) -> str:
    """A fresh key whose slot ``address`` serves."""
    while True:
        key = f"on-{uuid.uuid4().hex}"
        if backend.node_of(key) == address:
            return key


def wait_replicated(cluster: Cluster, master: str) -> None:
    """Wait until every replica of ``master`` has its whole replication stream (bounded)."""
    conn = Connection(*master.split(":")[:1], int(master.rsplit(":", 1)[1]), timeout=10)
    try:
        reply = conn.command("WAIT", cluster.replicas, 10_000)
        assert reply >= cluster.replicas, f"replicas of {master} did not catch up"
    finally:
        conn.close()


def test_a_killed_master_is_an_error_naming_the_node_and_the_key(
    made: list[RedisStore],
) -> None:
    with private_cluster(3) as cluster:
        store = cluster_store(cluster, made, socket_timeout=3)
        backend = backend_of(store)
        victim = backend.client.masters()[1]
        small = key_on(backend, victim)
        store.set("small", key=small)
        striped = store.set(np.arange(20_000))  # chunks on every master, the victim's too
        other = key_on(backend, backend.client.masters()[0])
        store.set("elsewhere", key=other)
        cluster.node(victim).kill()
        with pytest.raises(StoreConnectionError) as info:
            store.get(small)
        assert victim in str(info.value) and repr(small) in str(info.value)
        with pytest.raises((StoreConnectionError, StoreTimeoutError)) as info:
            store.get(striped)
        assert victim in str(info.value) and repr(striped) in str(info.value)
        with pytest.raises(StoreConnectionError, match=victim):
            store.set(np.arange(20_000))  # a striped write needs every master
        # The other masters serve their keys until the cluster marks the node failed (then
        # it refuses everything: CLUSTERDOWN), an error that names the way out.
        try:
            assert store.get(other) == "elsewhere"
        except StoreConnectionError as exc:
            assert "CLUSTERDOWN" in str(exc) and "Restart the failed node" in str(exc)


def test_a_stopped_master_times_out_naming_the_node_and_the_key(made: list[RedisStore]) -> None:
    with private_cluster(3) as cluster:
        store = cluster_store(cluster, made, socket_timeout=1)
        backend = backend_of(store)
        victim = backend.client.masters()[2]
        key = key_on(backend, victim)
        store.set("x", key=key)
        node = cluster.node(victim)
        node.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(StoreTimeoutError) as info:
                store.get(key)
            assert victim in str(info.value) and repr(key) in str(info.value)
        finally:
            node.process.send_signal(signal.SIGCONT)


def test_after_a_replica_is_promoted_operations_go_on(made: list[RedisStore]) -> None:
    with private_cluster(3, replicas=1) as cluster:
        store = cluster_store(cluster, made, socket_timeout=5)
        backend = backend_of(store)
        victim = backend.client.masters()[0]
        small = key_on(backend, victim)
        store.set({"small": 1}, key=small)
        data = np.arange(50_000)
        striped = store.set(data)
        for master in backend.client.masters():
            wait_replicated(cluster, master)
        cluster.node(victim).kill()
        cluster.wait_failover(victim)  # a replica took the victim's slots over
        # The first operation may meet the dead node: the client reads the map again and
        # goes to the promoted replica.
        assert store.get(small) == {"small": 1}
        assert np.array_equal(store.get(striped), data)
        assert backend.node_of(small) != victim
        key = store.set(np.arange(30_000))  # striped over the new set of masters
        assert np.array_equal(store.get(key), np.arange(30_000))
        assert backend.client.redirections["failover"] >= 1
        store.evict(key)
        assert not store.exists(key)


def test_a_manual_failover_is_followed_through_moved(made: list[RedisStore]) -> None:
    with private_cluster(3, replicas=1) as cluster:
        store = cluster_store(cluster, made)
        backend = backend_of(store)
        old = backend.client.masters()[1]
        key = key_on(backend, old)
        store.set("before", key=key)
        wait_replicated(cluster, old)
        replica = cluster.replica_of(old)
        cluster.node(replica).ask("CLUSTER", "FAILOVER")
        cluster.wait_ok()
        for _ in range(200):  # the promotion is announced asynchronously (bounded)
            if cluster.role(cluster.node(replica)) == "master":
                break
            threading.Event().wait(0.05)
        assert store.get(key) == "before"  # the old map sends it to the old master: MOVED
        store.set("after", key=key)
        assert store.get(key) == "after"
        assert backend.node_of(key) == replica
        assert backend.client.redirections["MOVED"] >= 1


def test_moved_and_ask_during_a_resharding(made: list[RedisStore]) -> None:
    with private_cluster(3) as cluster:
        store = cluster_store(cluster, made)
        backend = backend_of(store)
        source, target = backend.client.masters()[0], backend.client.masters()[1]
        values = {}
        for i in range(60):
            value = np.full(3000 if i % 2 else 10, i)  # striped and small ones
            key = key_on(backend, source) if i % 3 == 0 else f"r-{i}-{uuid.uuid4().hex}"
            store.set(value, key=key)
            values[key] = value
        failures: list[BaseException] = []
        stop = threading.Event()

        def churn() -> None:
            try:
                while not stop.is_set():
                    for key, value in values.items():
                        assert np.array_equal(store.get(key), value), key
                    written = store.set(np.arange(5000))
                    assert np.array_equal(store.get(written), np.arange(5000))
                    store.evict(written)
            except BaseException as exc:
                failures.append(exc)

        worker = threading.Thread(target=churn)
        worker.start()
        try:
            cli(
                "--cluster",
                "reshard",
                cluster.nodes[0].address,
                "--cluster-from",
                cluster.node_id(cluster.node(source)),
                "--cluster-to",
                cluster.node_id(cluster.node(target)),
                "--cluster-slots",
                "3000",
                "--cluster-yes",
                timeout=240,
            )
        finally:
            stop.set()
            worker.join(60)
        assert not failures, failures
        cluster.wait_ok()
        for key, value in values.items():
            assert np.array_equal(store.get(key), value), key
        moved = [key for key in values if key.startswith("on-") and backend.node_of(key) == target]
        assert moved, "the resharding moved some of the source's keys"
        assert backend.client.redirections["MOVED"] + backend.client.redirections["ASK"] >= 1


def test_a_store_refuses_an_unknown_node_clearly(made: list[RedisStore]) -> None:
    with private_cluster(3) as cluster:
        port = cluster.port
    with pytest.raises(StoreError, match=str(port)):
        RedisStore("gone", hostname="127.0.0.1", port=port, cluster=True)


def test_passwords_and_acl_users_on_every_node(made: list[RedisStore]) -> None:
    from proxystore.exceptions import StoreAuthError

    with private_cluster(3, password="cluster-secret") as cluster:
        for node in cluster.nodes:
            node.ask("ACL", "SETUSER", "alice", "on", ">alice-secret", "~*", "+@all")
        by_password = cluster_store(cluster, made, password="cluster-secret")
        by_user = cluster_store(cluster, made, username="alice", password="alice-secret")
        data = np.arange(40_000)  # striped: every node is reached with the credentials
        key = by_password.set(data)
        assert np.array_equal(by_user.get(key), data)
        assert "cluster-secret" not in repr(by_password.settings)
        by_user.evict(key)
        assert not by_password.exists(key)
        with pytest.raises(StoreAuthError, match=str(cluster.port)):
            cluster_store(cluster, made, password="wrong")


def test_tls_on_every_node(made: list[RedisStore], tmp_path: Any) -> None:
    from tests.support.redis_server import tls_unsupported
    from tests.support.tls_certs import make_ca, make_server_cert

    if tls_unsupported() is not None:
        pytest.skip(str(tls_unsupported()))
    ca, ca_key = make_ca(tmp_path)
    cert, key = make_server_cert(tmp_path, ca, ca_key, client_auth=True)
    with private_cluster(3, tls=(ca, cert, key)) as cluster:
        store = RedisStore(
            f"cluster-tls-{uuid.uuid4().hex[:8]}",
            url=f"rediss://localhost:{cluster.port}",
            cluster=True,
            ssl_ca_certs=str(ca),
            chunk_size=4096,
            cache_size=0,
        )
        made.append(store)
        backend = backend_of(store)
        masters = backend.client.masters()
        assert all(master.startswith("localhost:") for master in masters)  # names the cert has
        data = np.arange(200_000)  # striped: TLS to every master, checked against the CA
        stored = store.set(data)
        assert np.array_equal(store.get(stored), data)
        assert set(backend.nodes_of(stored)) == set(masters)
        store.evict(stored)
        assert not store.exists(stored)
