"""Start a private Redis Cluster on loopback for the tests (3 masters, optionally replicas).

Every node is a throw-away ``redis-server --cluster-enabled yes`` on 127.0.0.1 with nothing on
disk but its cluster file in a private directory. Cluster ports are at most 55535: a node
also listens on its port + 10000 (the cluster bus), so both must be free.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.redis_server import replies

MAX_CLUSTER_PORT = 55535
HOST = "127.0.0.1"


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` ports at most 55535 whose bus ports (+10000) are free too."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < count:
        port = rng.randint(20000, MAX_CLUSTER_PORT)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


def cli(*args: str, timeout: float = 60) -> str:
    """Run ``redis-cli`` with ``args``; return its output (raise if it fails)."""
    binary = shutil.which("redis-cli")
    if binary is None:
        raise RuntimeError("redis-cli is not installed (Debian package redis-tools)")
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


@dataclass
class Node:
    """One node of the cluster: its port and process."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    password: str | None = None
    tls: tuple[Path, Path, Path] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def ask(self, *args: str) -> str:
        """Run one command on this node with ``redis-cli``."""
        auth: tuple[str, ...] = ()
        if self.password:
            auth += ("-a", self.password, "--no-auth-warning")
        if self.tls:
            auth += ("--tls", "--cacert", str(self.tls[0]))
        return cli("-h", HOST, "-p", str(self.port), *auth, *args, timeout=20)

    def kill(self) -> None:
        """Kill the node's process (no goodbye to the cluster)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@dataclass
class Cluster:
    """A running private cluster."""

    nodes: list[Node]
    replicas: int
    killed: list[Node] = field(default_factory=list)

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.process.poll() is None]

    def node(self, address: str) -> Node:
        for node in self.nodes:
            if node.address == address:
                return node
        raise KeyError(address)

    def role(self, node: Node) -> str:
        return node.ask("ROLE").split("\n", 1)[0].strip()

    def masters(self) -> list[Node]:
        return [node for node in self.live() if self.role(node) == "master"]

    def node_id(self, node: Node) -> str:
        return node.ask("CLUSTER", "MYID").strip()

    def wait_ok(self, timeout: float = 60) -> None:
        """Wait until every live node says ``cluster_state:ok`` and agrees on the masters."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = [node.ask("CLUSTER", "INFO") for node in self.live()]
                ok = all("cluster_state:ok" in state for state in states)
                if ok:
                    views = {
                        tuple(sorted(line.split()[1] for line in self._master_lines(node)))
                        for node in self.live()
                    }
                    if len(views) == 1:
                        return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the private Redis Cluster did not become ready")
            time.sleep(0.1)

    def replica_of(self, master: str) -> str:
        """The address of a live replica of ``master`` (from ``CLUSTER NODES``)."""
        master_id = self.node_id(self.node(master))
        for line in self.live()[0].ask("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3] == master_id and "fail" not in fields[2]:
                return fields[1].split("@")[0]
        raise KeyError(f"{master} has no replica")

    def wait_failover(self, dead: str, timeout: float = 60) -> None:
        """Wait until no live node sees ``dead`` serve a slot (a replica took them over)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                serving = [
                    line
                    for node in self.live()
                    for line in node.ask("CLUSTER", "NODES").splitlines()
                    if line.split()[1].split("@")[0] == dead and len(line.split()) > 8
                ]
                if not serving:
                    self.wait_ok(timeout=max(deadline - time.monotonic(), 1))
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica of {dead} was promoted")
            time.sleep(0.1)

    def _master_lines(self, node: Node) -> list[str]:
        lines = node.ask("CLUSTER", "NODES").splitlines()
        return [
            line
            for line in lines
            if " master " in f" {line.split()[2].replace(',', ' ')} "
            and "fail" not in line.split()[2]
            and len(line.split()) > 8
        ]


def _tls_replies(node: Node) -> bool:
    try:
        return "PONG" in node.ask("PING")
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


def _start(
    port: int,
    workdir: Path,
    node_timeout: int,
    password: str | None,
    tls: tuple[Path, Path, Path] | None,
) -> Node:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    directory = workdir / str(port)
    directory.mkdir()
    listen = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
    command = [binary, *listen, "--bind", HOST, "--save", "", "--appendonly", "no"]
    command += ["--dir", str(directory), "--cluster-enabled", "yes"]
    command += ["--cluster-config-file", str(directory / "nodes.conf")]
    command += ["--cluster-node-timeout", str(node_timeout)]
    if password:
        command += ["--requirepass", password, "--masterauth", password]
    if tls:  # the certificate names localhost: nodes announce that name, not their address
        ca, cert, key = tls
        command += ["--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no"]
        command += ["--tls-ca-cert-file", str(ca), "--tls-cert-file", str(cert)]
        command += ["--tls-key-file", str(key), "--cluster-announce-hostname", "localhost"]
        command += ["--cluster-preferred-endpoint-type", "hostname"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return Node(port, process, directory, password, tls)


@contextmanager
def private_cluster(
    masters: int = 3,
    replicas: int = 0,
    *,
    node_timeout: int = 1000,
    password: str | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> Iterator[Cluster]:
    """Start a private cluster of ``masters`` masters with ``replicas`` replicas each.

    With ``password``, every node requires it (``requirepass``, and ``masterauth`` for
    replicas). With ``tls`` (``(ca, cert, key)``: a certificate for ``localhost`` that also
    authenticates clients, for the cluster bus), nodes speak TLS only, to clients and to each
    other, and announce themselves as ``localhost``.
    """
    count = masters * (1 + replicas)
    with tempfile.TemporaryDirectory(prefix="proxystore-cluster-") as workdir:
        nodes: list[Node] = []
        try:
            for port in cluster_ports(count):
                nodes.append(_start(port, Path(workdir), node_timeout, password, tls))
            deadline = time.monotonic() + 20
            for node in nodes:
                while not (_tls_replies(node) if node.tls else replies(HOST, node.port)):
                    if node.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on {node.address}")
                    time.sleep(0.05)
            auth: tuple[str, ...] = ("-a", password, "--no-auth-warning") if password else ()
            if tls:
                auth += ("--tls", "--cacert", str(tls[0]))
            cli(
                *auth,
                "--cluster",
                "create",
                *(node.address for node in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            )
            cluster = Cluster(nodes, replicas)
            cluster.wait_ok()
            yield cluster
        finally:
            for node in nodes:
                if node.process.poll() is None:
                    node.process.terminate()
            for node in nodes:
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
