"""The multi-host test bed itself: reachability, private /dev/shm and /tmp per host, interface
counters, link cuts and rate limits, and a teardown that leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.multihost.conftest import require_testbed
from tests.multihost.testbed import (
    REPO_ROOT,
    TestBed,
    TestBedError,
    remove_leftovers,
    unavailable_reason,
)

MB = 2**20

pytestmark = pytest.mark.timeout(120)


def ping(address: str, port: int, timeout: float = 2.0) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


def test_every_host_and_the_client_reach_redis_on_a(testbed: TestBed) -> None:
    host, port = testbed.redis_address
    assert host == testbed["a"].address
    assert ping(host, port) == b"+PONG\r\n"
    code = (
        "import redis; r = redis.Redis(host=%r, port=%d, socket_timeout=5); "
        "r.set('from-' + %r, b'1'); print(r.ping())"
    )
    for name in ("b", "c"):
        out = testbed[name].python(code % (host, port, name))
        assert out.strip() == "True"
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=5)
    try:
        assert client.get("from-b") == b"1" and client.get("from-c") == b"1"
        client.delete("from-b", "from-c")
    finally:
        client.close()


def test_each_host_has_its_own_network_identity(testbed: TestBed) -> None:
    addresses = {name: host.address for name, host in testbed.hosts.items()}
    assert len(set(addresses.values())) == len(testbed.hosts) >= 3
    for name, host in testbed.hosts.items():
        out = host.run(["ip", "-4", "-o", "addr", "show"]).stdout.decode()
        assert addresses[name] in out
        assert not any(other in out for n, other in addresses.items() if n != name)


def test_dev_shm_and_tmp_are_private_per_host_and_shared_within_one(testbed: TestBed) -> None:
    name = f"testbed-{uuid.uuid4().hex}"
    b, c = testbed["b"], testbed["c"]
    b.run(["sh", "-c", f"echo b > /dev/shm/{name} && echo b > /tmp/{name}"])
    try:
        # Another process on b sees both files ...
        seen = b.run(["cat", f"/dev/shm/{name}", f"/tmp/{name}"]).stdout.decode()
        assert seen == "b\nb\n"
        # ... c and the root namespace see neither.
        on_c = c.run(["ls", f"/dev/shm/{name}", f"/tmp/{name}"], check=False)
        assert on_c.returncode != 0
        assert not os.path.exists(f"/dev/shm/{name}") and not os.path.exists(f"/tmp/{name}")
        # The shared directory is the same on every host.
        shared = os.path.join(testbed.shared, name)
        b.run(["sh", "-c", f"echo b > {shared}"])
        assert c.run(["cat", shared]).stdout == b"b\n"
        assert Path(shared).read_text() == "b\n"
    finally:
        b.run(["rm", "-f", f"/dev/shm/{name}", f"/tmp/{name}"])
        with_shared = os.path.join(testbed.shared, name)
        if os.path.exists(with_shared):
            os.unlink(with_shared)


def test_counters_count_the_bytes_a_host_receives(testbed: TestBed) -> None:
    import redis

    host, port = testbed.redis_address
    client = redis.Redis(host=host, port=port, socket_timeout=10)
    key = f"testbed-{uuid.uuid4().hex}"
    size = 20 * MB
    try:
        with testbed.traffic() as written:
            client.set(key, os.urandom(size))
        assert written.rx["a"] >= size
        code = (
            f"import redis; r = redis.Redis(host={host!r}, port={port}, socket_timeout=10); "
            f"print(len(r.get({key!r})))"
        )
        with testbed.traffic() as read:
            assert testbed["b"].python(code).strip() == str(size)
    finally:
        client.delete(key)
        client.close()
    assert read.rx["b"] >= size
    assert read.tx["a"] >= size
    assert read.rx["b"] < 1.1 * size + MB  # headers, the Dask heartbeats: little else
    assert read.rx["c"] < 0.1 * size  # c took no part


@pytest.fixture
def small_bed() -> Iterator[TestBed]:
    """A bed of its own (with only Redis) for tests that cut links or check teardown."""
    require_testbed()
    with TestBed() as bed:
        yield bed


def test_link_down_stalls_a_connection_within_its_timeout_and_link_up_restores(
    small_bed: TestBed,
) -> None:
    bed = small_bed
    address, port = bed.start_redis()
    sock = socket.create_connection((address, port), timeout=2.0)
    try:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64) == b"+PONG\r\n"
        bed["a"].link_down()
        started = time.monotonic()
        sock.sendall(b"PING\r\n")
        with pytest.raises(socket.timeout):
            sock.recv(64)
        stalled = time.monotonic() - started
        assert 1.5 < stalled < 4.0  # the socket's own 2 s timeout, not a hang or a reset
        with pytest.raises(OSError):
            ping(address, port, timeout=1.0)
    finally:
        sock.close()
    bed["a"].link_up()
    deadline = time.monotonic() + 15
    while True:  # the bridge forwards again once the port is up: bounded wait
        try:
            assert ping(address, port, timeout=1.0) == b"+PONG\r\n"
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_limit_rate_bounds_the_throughput_into_a_host(small_bed: TestBed) -> None:
    bed = small_bed
    address, port = bed.start_redis()
    import redis

    client = redis.Redis(host=address, port=port, socket_timeout=10)
    size = 10 * MB
    try:
        client.set("limited", os.urandom(size))
        code = (
            "import time, redis; "
            f"r = redis.Redis(host={address!r}, port={port}, socket_timeout=30); "
            "s = time.perf_counter(); v = r.get('limited'); "
            "print(time.perf_counter() - s, len(v))"
        )
        bed["b"].python(code)  # warm: connection set-up and imports do not count below
        bed["b"].limit_rate("200mbit")
        limited, got = bed["b"].python(code).split()
        bed["b"].clear_rate()
        free, _ = bed["b"].python(code).split()
    finally:
        client.close()
    assert int(got) == size
    at_rate = size * 8 / 200e6  # 0.42 s
    assert float(limited) > 0.8 * at_rate, (limited, free)
    assert float(free) < float(limited)


def test_teardown_leaves_nothing(small_bed: TestBed) -> None:
    bed = small_bed
    bed.start_redis()
    worker = bed["b"].popen(["sleep", "600"])
    bed["c"].limit_rate("1gbit")
    assert bed.leftovers()  # something to remove
    shared = bed.shared
    bed.close()
    assert worker.poll() is not None
    assert bed.leftovers() == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    assert bed.prefix not in netns.stdout
    assert not os.path.exists(shared)
    bed.close()  # idempotent


def test_a_build_that_fails_half_way_removes_what_it_made() -> None:
    require_testbed()
    bed = TestBed(hosts=("a", "b", "a"))  # the second "a" namespace cannot be created
    with pytest.raises(TestBedError, match="netns add"):
        bed.build()
    assert bed.leftovers() == []


def test_leftovers_of_dead_runs_are_removed() -> None:
    require_testbed()
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"pstb{dead.pid}q-a"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        assert f"netns {name}" in remove_leftovers()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert name not in listed.stdout
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)


def test_without_root_the_bed_is_unavailable_with_the_reason() -> None:
    if os.geteuid() != 0:
        reason = unavailable_reason()
        assert reason is not None and "root" in reason
        return
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop root for this check")
    code = "from tests.multihost.testbed import unavailable_reason; print(unavailable_reason())"
    done = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 and "Permission denied" in done.stderr:
        pytest.skip(f"user nobody cannot run this interpreter: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    assert "needs root" in done.stdout


def test_two_beds_at_once_use_their_own_names_and_networks(small_bed: TestBed) -> None:
    with TestBed() as other:
        assert other.prefix != small_bed.prefix
        assert other.subnet is not None and small_bed.subnet is not None
        assert not other.subnet.overlaps(small_bed.subnet)
        address, port = other.start_redis()
        assert ping(address, port) == b"+PONG\r\n"
        small_bed.start_redis()
        # A host of one bed reaches its own bed's Redis, not the other bed's (no route).
        code = (
            "import socket\n"
            f"for address in ({address!r}, {small_bed['a'].address!r}):\n"
            "    try:\n"
            f"        socket.create_connection((address, {port}), timeout=2).close()\n"
            "        print('reached')\n"
            "    except OSError:\n"
            "        print('failed')\n"
        )
        assert other["b"].python(code).split() == ["reached", "failed"]
    assert other.leftovers() == []
    assert small_bed.leftovers()  # closing one bed leaves the other alone
