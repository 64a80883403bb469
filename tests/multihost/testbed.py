"""A multi-host test bed on one machine: three hosts made of Linux namespaces (issue 10).

::

                          root namespace (the client: pytest, the benchmarks)
                          bridge <prefix>0, 10.213.X.1/24
               +--------------------+--------------------+
               | veth <prefix>a     | veth <prefix>b     | veth <prefix>c
        +------+------+      +------+------+      +------+------+
        | host a      |      | host b      |      | host c      |
        | eth0 X.11   |      | eth0 X.12   |      | eth0 X.13   |
        | redis-server|      | dask worker |      | dask worker |
        | dask sched. |      |  x2 procs   |      |  x2 procs   |
        |             |      | parsl pool  |      | parsl pool  |
        +-------------+      +-------------+      +-------------+
         each host: own network namespace, own /dev/shm and /tmp (tmpfs in a
         private mount namespace); /var/tmp/proxystore-testbed-* is shared

A *host* is a network namespace joined to a bridge in the root namespace by a veth pair, and
a mount namespace of its own where fresh tmpfs are mounted on ``/dev/shm`` and ``/tmp``. A
small *anchor* process (``sleep``) keeps the host's mount namespace alive; every process
started "on a host" joins both namespaces with ``nsenter``. So the processes of one host share
its ``/dev/shm`` and ``/tmp`` (as on a real machine), while hosts share neither memory-mapped
files nor temporary files, only the *shared directory* (a stand-in for a shared file system). The
process that builds the bed (pytest, a benchmark) stays in the root namespace and reaches the
hosts through the bridge's address, like a client machine on the same network.

Traffic only ever goes to loopback or to the addresses the bed creates. Every wait is bounded
and fails with a message naming the host, the service and the address. :meth:`TestBed.close`
(also run by ``with``, on errors half-way through :meth:`TestBed.build`, and at exit as a
backstop) kills every process started on the hosts with its process group, then every
process left in the namespaces, deletes the namespaces (their veths go with them), the
bridge and the shared directory. Beds of processes that died without cleaning up (same
naming scheme, creating pid gone) are removed when a new bed is built.

Needs root, ``ip`` (iproute2) with ``ip netns``, ``unshare`` and ``nsenter`` (util-linux) and
``tc`` for rate limits; :func:`unavailable_reason` says why a bed cannot be built here.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "REPO_ROOT",
    "Host",
    "TestBed",
    "TestBedError",
    "Traffic",
    "remove_leftovers",
    "unavailable_reason",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout: processes on the hosts import ``proxystore`` and ``tests`` from it."""

PREFIX = "pstb"
"""Every name the bed creates starts with this (namespaces, links, directories)."""

SHARED_PARENT = "/var/tmp"
"""Parent of the shared directory (not under ``/tmp`` or ``/dev/shm``, which hosts hide)."""

REDIS_PORT = 6379
CLUSTER_PORT = 7000
SCHEDULER_PORT = 8786
"""Fixed ports: every host has its own network namespace, so they cannot collide."""

_NAME = re.compile(rf"^{PREFIX}(\d+)([a-z])")
_SHARED_NAME = re.compile(rf"^proxystore-testbed-{PREFIX}(\d+)([a-z])-")
_SEQUENCE = iter("abcdefghijklmnopqrstuvwxyz")
_SEQUENCE_LOCK = threading.Lock()
_HOST_LETTERS = ("a", "b", "c")
_COMMAND_TIMEOUT = 30.0


class TestBedError(RuntimeError):
    """Building, using or tearing down the bed failed (the message says where)."""

    __test__ = False  # not a test class, whatever pytest thinks of the name


def _run(argv: Sequence[str], timeout: float = _COMMAND_TIMEOUT) -> str:
    """Run a set-up command in the root namespace; return its stdout or raise TestBedError."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise TestBedError(f"{shlex.join(argv)} did not finish within {timeout} s") from exc
    except OSError as exc:
        raise TestBedError(f"cannot run {shlex.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise TestBedError(
            f"{shlex.join(argv)} failed with exit code {done.returncode}: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def _quiet(argv: Sequence[str], timeout: float = _COMMAND_TIMEOUT) -> None:
    """Run a tear-down command, ignoring failure (the object may already be gone)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False)


def _no_ipv6(link: str) -> None:
    """Turn IPv6 off on a root-namespace link of the bed (best effort)."""
    with (
        contextlib.suppress(OSError),
        open(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6", "w") as f,
    ):
        f.write("1")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unavailable_reason() -> str | None:
    """Why a bed cannot be built on this machine, or ``None`` when it can.

    Checks root, ``ip``, ``unshare`` and ``tc`` on PATH, redis-server, and that a network
    namespace can be created with a private tmpfs mounted in it (then removes it).
    """
    if sys.platform != "linux":
        return f"the multi-host test bed needs Linux namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the multi-host test bed needs root (network namespaces, mounts, tc)"
    tools = [("ip", "iproute2"), ("tc", "iproute2"), ("sleep", "coreutils")]
    tools += [("unshare", "util-linux"), ("nsenter", "util-linux")]
    for tool, package in tools:
        if shutil.which(tool) is None:
            return f"the multi-host test bed needs `{tool}` (package {package}) on PATH"
    if shutil.which("redis-server") is None:
        return "the multi-host test bed needs redis-server on PATH (Debian package redis-server)"
    probe = f"{PREFIX}{os.getpid()}z-probe"
    try:
        _run(["ip", "netns", "add", probe])
    except TestBedError as exc:
        return f"`ip netns add` does not work here: {exc}"
    try:
        _run(
            ["ip", "netns", "exec", probe, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", "mount -t tmpfs tmpfs /dev/shm && ip link set lo up"]
        )  # fmt: skip
    except TestBedError as exc:
        return f"cannot mount a private tmpfs inside a network namespace: {exc}"
    finally:
        _quiet(["ip", "netns", "delete", probe])
    return None


def _netns_names() -> list[str]:
    out = _run(["ip", "-j", "netns", "list"]).strip()
    return [entry["name"] for entry in json.loads(out or "[]")]


def _link_names() -> list[str]:
    out = _run(["ip", "-j", "link", "show"]).strip()
    return [entry["ifname"] for entry in json.loads(out or "[]")]


def _kill_namespace_processes(netns: str) -> None:
    """SIGKILL every process that is still in ``netns`` (bounded: a few rounds)."""
    for _ in range(5):
        try:
            out = _run(["ip", "netns", "pids", netns], timeout=10)
        except TestBedError:
            return
        pids = [int(p) for p in out.split() if p.isdigit()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_leftovers() -> list[str]:
    """Remove namespaces, bridges and shared directories of beds whose creator has died.

    Only names of this module's scheme (:data:`PREFIX` followed by the creating pid) whose pid
    is no longer running are touched. Returns what was removed.
    """
    removed: list[str] = []
    for netns in _netns_names():
        match = _NAME.match(netns)
        if match and not _pid_alive(int(match.group(1))):
            _kill_namespace_processes(netns)
            _quiet(["ip", "netns", "delete", netns])
            removed.append(f"netns {netns}")
    for link in _link_names():
        match = _NAME.match(link)
        if match and not _pid_alive(int(match.group(1))):
            _quiet(["ip", "link", "delete", link])
            removed.append(f"link {link}")
    with contextlib.suppress(OSError):
        for entry in os.listdir(SHARED_PARENT):
            match = _SHARED_NAME.match(entry)
            if match and not _pid_alive(int(match.group(1))):
                shutil.rmtree(os.path.join(SHARED_PARENT, entry), ignore_errors=True)
                removed.append(f"directory {entry}")
    return removed


def _used_subnets(ignore: str = "") -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this machine's addresses and routes (except on link ``ignore``)."""
    used: list[ipaddress.IPv4Network] = []
    for entry in json.loads(_run(["ip", "-j", "-4", "addr", "show"]).strip() or "[]"):
        if entry.get("ifname") == ignore:
            continue
        for info in entry.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for entry in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        dst = entry.get("dst", "")
        if entry.get("dev") == ignore:
            continue
        if dst and dst != "default" and entry.get("type", "unicast") == "unicast":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(dst, strict=False))
    return used


def _pick_subnet(start: int) -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no address or route of this machine overlaps."""
    used = _used_subnets()
    for step in range(250):
        candidate = ipaddress.IPv4Network(f"10.213.{(start + step) % 250 + 1}.0/24")
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise TestBedError("no free /24 in 10.213.0.0/16 for the test bed")


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    failed: Callable[[], str | None] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``condition`` until it holds; raise TestBedError naming ``what`` after ``timeout``.

    Args:
        condition: Returns whether the wait is over.
        timeout: Seconds to wait at most.
        what: Describes the wait for the error message (host, service, address).
        failed: Returns a reason to stop early (e.g. the service exited), or ``None``.
        interval: Seconds between polls.

    Raises:
        TestBedError: On timeout or when ``failed`` gives a reason.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        reason = failed() if failed is not None else None
        if reason is not None:
            raise TestBedError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise TestBedError(f"{what}: not ready after {timeout} s")
        time.sleep(interval)


def _tcp_answers(address: str, port: int, payload: bytes | None, expect: bytes | None) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            if payload is None:
                return True
            sock.sendall(payload)
            reply = sock.recv(64)
    except OSError:
        return False
    return expect is None or reply.startswith(expect)


@dataclass
class Traffic:
    """Bytes each host received and sent between :meth:`TestBed.traffic`'s start and end.

    Attributes:
        rx: Bytes received per host name (``"a"``, ``"b"``, ``"c"``).
        tx: Bytes sent per host name.
        seconds: Wall time of the measured block.
    """

    rx: dict[str, int] = field(default_factory=dict)
    tx: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def rx_mb(self, host: str) -> float:
        """Megabytes (2**20 bytes) ``host`` received."""
        return self.rx[host] / 2**20

    def tx_mb(self, host: str) -> float:
        """Megabytes (2**20 bytes) ``host`` sent."""
        return self.tx[host] / 2**20


class Host:
    """One host of the bed: a network namespace with its own ``/dev/shm`` and ``/tmp``.

    Attributes:
        name: ``"a"``, ``"b"`` or ``"c"``.
        netns: The network namespace's name.
        address: The host's IPv4 address on the bed's network.
        veth: The root-namespace end of the host's link (a port of the bridge).
    """

    def __init__(
        self, bed: TestBed, name: str, netns: str, address: str, veth: str, anchor: int
    ) -> None:
        self.bed = bed
        self.name = name
        self.netns = netns
        self.address = address
        self.veth = veth
        self.anchor = anchor

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r}, address={self.address!r})"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` on this host.

        ``nsenter`` joins the network, mount and UTS namespaces of the host's anchor process, then
        executes ``argv`` in place (no extra parent process), in the checkout's directory.
        """
        return [
            "nsenter", f"--target={self.anchor}", "--net", "--mount", "--uts", f"--wd={REPO_ROOT}",
            "--", *argv,
        ]  # fmt: skip

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment of processes on the host: this one, with the checkout importable."""
        env = dict(os.environ)
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
        python_path = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(":"))]
        env["PYTHONPATH"] = os.pathsep.join(python_path)
        for variable in ("REDIS_HOST", "REDIS_PORT"):
            env.pop(variable, None)
        env.update(extra or {})
        return env

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on the host in a new process group (killed when the bed closes).

        Args:
            argv: The command.
            env: Extra environment variables (on top of :meth:`env`).
            log: Name of a file in the bed's log directory for stdout and stderr (default:
                discarded).
        """
        return self.bed.start(self, argv, env=env, log=log)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = _COMMAND_TIMEOUT,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` on the host and wait at most ``timeout`` seconds.

        Raises:
            TestBedError: On timeout (the process group is killed), or when ``check`` and the
                command fails.
        """
        process = subprocess.Popen(
            self.wrap(argv),
            env=self.env(env),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TestBedError(
                f"host {self.name}: {shlex.join(argv)} did not finish within {timeout} s"
            ) from exc
        done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        if check and done.returncode != 0:
            raise TestBedError(
                f"host {self.name}: {shlex.join(argv)} failed with exit code {done.returncode}: "
                f"{stderr.decode(errors='replace').strip()[-2000:]}"
            )
        return done

    def python(self, code: str, *, timeout: float = 60.0, check: bool = True) -> str:
        """Run Python ``code`` on the host (this interpreter); return its stdout."""
        done = self.run([sys.executable, "-c", code], timeout=timeout, check=check)
        return done.stdout.decode()

    def counters(self) -> tuple[int, int]:
        """``(rx_bytes, tx_bytes)`` of the host's interface, read inside its namespace."""
        out = _run(
            ["ip", "netns", "exec", self.netns, "cat",
             "/sys/class/net/eth0/statistics/rx_bytes",
             "/sys/class/net/eth0/statistics/tx_bytes"]
        )  # fmt: skip
        rx, tx = (int(value) for value in out.split())
        return rx, tx

    def rx_bytes(self) -> int:
        """Bytes the host's interface has received since the bed was built."""
        return self.counters()[0]

    def tx_bytes(self) -> int:
        """Bytes the host's interface has sent since the bed was built."""
        return self.counters()[1]

    def link_down(self) -> None:
        """Cut the host's link: its end on the bridge goes down (packets are dropped)."""
        _run(["ip", "link", "set", self.veth, "down"])

    def link_up(self) -> None:
        """Restore the host's link (waits, bounded, until the host's side has carrier)."""
        _run(["ip", "link", "set", self.veth, "up"])

        def carrier() -> bool:
            out = _run(["ip", "-n", self.netns, "-j", "link", "show", "dev", "eth0"])
            return "LOWER_UP" in json.loads(out)[0].get("flags", [])

        wait_for(carrier, timeout=10, what=f"host {self.name}: link eth0 back up")

    def limit_rate(self, rate: str = "1gbit") -> None:
        """Limit the host's link to ``rate`` in both directions (``tc`` token bucket filters).

        Args:
            rate: A ``tc`` rate, e.g. ``"1gbit"``, ``"100mbit"``.
        """
        tbf = ["root", "tbf", "rate", rate, "burst", "1mb", "latency", "100ms"]
        _run(["tc", "qdisc", "replace", "dev", self.veth, *tbf])  # into the host
        _run(["ip", "netns", "exec", self.netns, "tc", "qdisc", "replace", "dev", "eth0", *tbf])

    def clear_rate(self) -> None:
        """Remove the rate limits of :meth:`limit_rate` (no-op without them)."""
        _quiet(["tc", "qdisc", "del", "dev", self.veth, "root"])
        _quiet(["ip", "netns", "exec", self.netns, "tc", "qdisc", "del", "dev", "eth0", "root"])


class TestBed:
    """Three hosts (``a``, ``b``, ``c``) on a bridge, and the services the tests need.

    ::

        with TestBed() as bed:           # builds the network (raises TestBedError on failure)
            bed.start_redis()            # redis-server on host a
            bed.start_dask()             # scheduler on a, 2 worker processes on b and c
            client = bed.dask_client()
            with bed.traffic() as seen:
                ...
            print(seen.rx_mb("b"))

    Args:
        hosts: Names of the hosts to create.
        shared_parent: Where the shared directory is created.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self, hosts: Sequence[str] = _HOST_LETTERS, shared_parent: str = SHARED_PARENT
    ) -> None:
        with _SEQUENCE_LOCK:
            sequence = next(_SEQUENCE, None)
        if sequence is None:
            raise TestBedError("too many test beds built by this process")
        self.prefix = f"{PREFIX}{os.getpid()}{sequence}"
        self._host_names = tuple(hosts)
        self._shared_parent = shared_parent
        self.hosts: dict[str, Host] = {}
        self.subnet: ipaddress.IPv4Network | None = None
        self.bridge = f"{self.prefix}0"
        self.bridge_address = ""
        self.shared = ""
        self.logs = ""
        self.prelude = ""
        self.redis_port: int | None = None
        self.cluster_nodes: list[tuple[str, int]] = []
        self.scheduler_address: str | None = None
        self._processes: list[tuple[Host, list[str], subprocess.Popen[bytes]]] = []
        self._anchors: list[subprocess.Popen[bytes]] = []
        self._cleanups: list[Callable[[], None]] = []
        self._created_netns: list[str] = []
        self._created_links: list[str] = []
        self._bridge_created = False
        self._closed = False
        self._lock = threading.Lock()

    # -- building --------------------------------------------------------------------------------

    def __enter__(self) -> TestBed:
        self.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def build(self) -> None:
        """Create the shared directory, the bridge, the namespaces and their links.

        On any failure everything created so far is removed before the error propagates.

        Raises:
            TestBedError: If a step fails (the message names the command).
        """
        atexit.register(self.close)
        try:
            remove_leftovers()
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        self.shared = tempfile.mkdtemp(
            prefix=f"proxystore-testbed-{self.prefix}-", dir=self._shared_parent
        )
        os.chmod(self.shared, 0o755)
        self.logs = os.path.join(self.shared, "logs")
        os.makedirs(self.logs)
        self.prelude = self._make_prelude()
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._bridge_created = True
        _no_ipv6(self.bridge)
        # Another bed built at the same moment may pick the same /24: check after taking it,
        # and move on (bounded) if someone else holds it too.
        start = os.getpid() % 250
        for attempt in range(5):
            self.subnet = _pick_subnet(start + 37 * attempt)
            addresses = list(self.subnet.hosts())
            self.bridge_address = str(addresses[0])
            _run(["ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge])
            subnet = self.subnet
            if not any(subnet.overlaps(net) for net in _used_subnets(ignore=self.bridge)):
                break
            _run(["ip", "addr", "del", f"{self.bridge_address}/24", "dev", self.bridge])
        else:
            raise TestBedError("no /24 in 10.213.0.0/16 stayed free for the test bed")
        addresses = list(self.subnet.hosts())
        _run(["ip", "link", "set", self.bridge, "up"])
        for index, name in enumerate(self._host_names):
            netns = f"{self.prefix}-{name}"
            veth, peer = f"{self.prefix}{name}", f"{self.prefix}{name}p"
            address = str(addresses[10 + index])
            _run(["ip", "netns", "add", netns])
            self._created_netns.append(netns)
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", peer])
            self._created_links.append(veth)
            _run(["ip", "link", "set", peer, "netns", netns])
            _no_ipv6(veth)
            # IPv4 only: no IPv6 router solicitations or multicast reports on the bed's links.
            _quiet(
                ["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]
            )
            _run(["ip", "link", "set", veth, "master", self.bridge])
            _run(["ip", "link", "set", veth, "up"])
            inside = ["ip", "-n", netns]
            _run([*inside, "link", "set", peer, "name", "eth0"])
            _run([*inside, "addr", "add", f"{address}/24", "dev", "eth0"])
            _run([*inside, "link", "set", "eth0", "up"])
            _run([*inside, "link", "set", "lo", "up"])
            anchor = self._start_anchor(name, netns)
            self.hosts[name] = Host(self, name, netns, address, veth, anchor.pid)
        for host in self.hosts.values():
            wait_for(
                lambda host=host: self._carrier(host),  # type: ignore[misc]
                timeout=10,
                what=f"host {host.name}: link eth0 ({host.address}) up",
            )

    def _start_anchor(self, name: str, netns: str) -> subprocess.Popen[bytes]:
        """Start the process that holds host ``name``'s mount namespace (private tmpfs).

        It also holds the host's UTS namespace: the host's name is its network namespace's, so
        errors that name the resolving host say which one.
        """
        log = f"anchor-{name}.log"
        with open(os.path.join(self.logs, log), "ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", netns, "unshare", "--mount", "--uts", "--propagation",
                 "private", "sh", "-c", f"echo {netns} > /proc/sys/kernel/hostname; {self.prelude}",
                 "sh", "sleep", "infinity"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._anchors.append(process)

        def ready() -> bool:
            # The prelude ends by exec-ing sleep once its mounts are done.
            try:
                with open(f"/proc/{process.pid}/cmdline", "rb") as f:
                    return f.read().startswith(b"sleep\0")
            except OSError:
                return False

        wait_for(
            ready,
            timeout=10,
            what=f"host {name}: private /dev/shm and /tmp (namespace {netns})",
            failed=self._exited(process, log),
            interval=0.01,
        )
        return process

    @staticmethod
    def _carrier(host: Host) -> bool:
        out = _run(["ip", "-n", host.netns, "-j", "link", "show", "dev", "eth0"])
        return "LOWER_UP" in json.loads(out)[0].get("flags", [])

    def _make_prelude(self) -> str:
        """The shell script that gives a host process its private ``/dev/shm`` and ``/tmp``."""
        needed = {
            str(REPO_ROOT),
            sys.prefix,
            sys.base_prefix,
            os.path.dirname(os.path.realpath(sys.executable)),
        }
        real = {os.path.realpath(path) for path in needed}
        keep = sorted(os.path.relpath(p, "/tmp") for p in real if p.startswith("/tmp/"))
        lines = ["set -e", "mount -t tmpfs -o mode=1777 tmpfs /dev/shm"]
        if keep:
            original = os.path.join(self.shared, ".root-tmp")
            os.makedirs(original)
            lines.append(f"mount --bind /tmp {shlex.quote(original)}")
        lines.append("mount -t tmpfs -o mode=1777 tmpfs /tmp")
        for relative in keep:
            source = shlex.quote(os.path.join(self.shared, ".root-tmp", relative))
            target = shlex.quote(os.path.join("/tmp", relative))
            lines.append(f"mkdir -p {target} && mount --bind {source} {target}")
        lines.append('exec "$@"')
        return "\n".join(lines)

    # -- processes -------------------------------------------------------------------------------

    def start(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on ``host`` (see :meth:`Host.popen`)."""
        if self._closed:
            raise TestBedError("the test bed is closed")
        out: Any = subprocess.DEVNULL
        if log is not None:
            out = open(os.path.join(self.logs, log), "ab")  # noqa: SIM115 - closed below
        try:
            process = subprocess.Popen(
                host.wrap(argv),
                env=host.env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None:
                out.close()
        with self._lock:
            self._processes.append((host, list(argv), process))
        return process

    def log_tail(self, log: str, size: int = 3000) -> str:
        """The end of a log file of :meth:`start` (empty if there is none)."""
        try:
            with open(os.path.join(self.logs, log), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - size))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _exited(self, process: subprocess.Popen[bytes], log: str) -> Callable[[], str | None]:
        def reason() -> str | None:
            code = process.poll()
            if code is None:
                return None
            return f"exited with code {code}; log:\n{self.log_tail(log)}"

        return reason

    @staticmethod
    def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM ``process``'s group, then SIGKILL it if it has not exited after ``timeout``."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Members of the group may outlive its leader: make sure none is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    # -- services --------------------------------------------------------------------------------

    def start_redis(self, host: str = "a", *, timeout: float = 20.0) -> tuple[str, int]:
        """Start a private redis-server on ``host`` (no persistence); return its address.

        It listens on the host's address and port :data:`REDIS_PORT` only, with protected mode
        off (only the bed's network reaches it).

        Raises:
            TestBedError: If it does not answer PING within ``timeout`` seconds.
        """
        server = self.hosts[host]
        workdir = os.path.join(self.shared, f"redis-{host}")
        os.makedirs(workdir, exist_ok=True)
        binary = shutil.which("redis-server") or "redis-server"
        process = server.popen(
            [binary, "--bind", server.address, "--port", str(REDIS_PORT), "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--dir", workdir],
            log=f"redis-{host}.log",
        )  # fmt: skip
        wait_for(
            lambda: _tcp_answers(server.address, REDIS_PORT, b"PING\r\n", b"+PONG"),
            timeout=timeout,
            what=f"host {host}: redis-server at {server.address}:{REDIS_PORT}",
            failed=self._exited(process, f"redis-{host}.log"),
        )
        self.redis_port = REDIS_PORT
        return server.address, REDIS_PORT

    def start_redis_cluster(
        self,
        hosts: Sequence[str] = ("a", "b", "c"),
        *,
        port: int = CLUSTER_PORT,
        timeout: float = 60.0,
    ) -> tuple[str, int]:
        """Start a Redis Cluster with one master (shard) on each of ``hosts``.

        Each node is a ``redis-server --cluster-enabled yes`` on the host's address and
        ``port`` (its cluster bus on ``port + 10000``), no persistence, protected mode off;
        ``redis-cli --cluster create`` (run here, in the root namespace, which reaches every
        host) joins them and gives each a third of the slots. Can run beside
        :meth:`start_redis` (another port).

        Returns:
            ``(host, port)`` of the node on ``hosts[0]`` (a store needs any one node).

        Raises:
            TestBedError: If a node does not answer, the cluster cannot be created, or it is
                not ``cluster_state:ok`` on every node within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        binary = shutil.which("redis-server") or "redis-server"
        nodes: list[tuple[str, int]] = []
        for name in hosts:
            server = self.hosts[name]
            workdir = os.path.join(self.shared, f"redis-cluster-{name}")
            os.makedirs(workdir, exist_ok=True)
            log = f"redis-cluster-{name}.log"
            process = server.popen(
                [binary, "--bind", server.address, "--port", str(port), "--save", "",
                 "--appendonly", "no", "--protected-mode", "no", "--dir", workdir,
                 "--cluster-enabled", "yes", "--cluster-node-timeout", "5000",
                 "--cluster-config-file", os.path.join(workdir, "nodes.conf")],
                log=log,
            )  # fmt: skip
            wait_for(
                functools.partial(_tcp_answers, server.address, port, b"PING\r\n", b"+PONG"),
                timeout=max(1.0, deadline - time.monotonic()),
                what=f"host {name}: redis-server (cluster node) at {server.address}:{port}",
                failed=self._exited(process, log),
            )
            nodes.append((server.address, port))
        cli = shutil.which("redis-cli")
        if cli is None:
            raise TestBedError("a Redis Cluster needs redis-cli on PATH (Debian redis-tools)")
        _run(
            [cli, "--cluster", "create", *(f"{h}:{p}" for h, p in nodes), "--cluster-yes"],
            timeout=max(1.0, deadline - time.monotonic()),
        )

        def ready() -> bool:
            for host, node_port in nodes:
                try:
                    info = _run([cli, "-h", host, "-p", str(node_port), "CLUSTER", "INFO"], 5)
                except TestBedError:
                    return False
                if "cluster_state:ok" not in info:
                    return False
            return True

        wait_for(
            ready,
            timeout=max(1.0, deadline - time.monotonic()),
            what=f"Redis Cluster on hosts {', '.join(hosts)} (port {port}) reaching state ok",
            interval=0.2,
        )
        self.cluster_nodes = nodes
        return nodes[0]

    @property
    def redis_address(self) -> tuple[str, int]:
        """``(host, port)`` of the Redis server of :meth:`start_redis`."""
        if self.redis_port is None:
            raise TestBedError("start_redis() has not been called")
        return self.hosts["a"].address, self.redis_port

    def start_dask(
        self,
        scheduler: str = "a",
        workers: Sequence[str] = ("b", "c"),
        *,
        nworkers: int = 2,
        timeout: float = 90.0,
    ) -> str:
        """Start a Dask scheduler on ``scheduler`` and ``nworkers`` worker processes on each of
        ``workers`` (one thread each, no dashboard, no memory limit).

        Returns:
            The scheduler's address (``tcp://host:port``).

        Raises:
            TestBedError: If the scheduler does not listen, or not every worker has joined,
                within ``timeout`` seconds.
        """
        server = self.hosts[scheduler]
        deadline = time.monotonic() + timeout
        env = {"DASK_DISTRIBUTED__ADMIN__LARGE_GRAPH_WARNING_THRESHOLD": "10GB"}
        log = f"dask-scheduler-{scheduler}.log"
        process = server.popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", server.address,
             "--port", str(SCHEDULER_PORT), "--no-dashboard"],
            env=env,
            log=log,
        )  # fmt: skip
        address = f"tcp://{server.address}:{SCHEDULER_PORT}"
        wait_for(
            lambda: _tcp_answers(server.address, SCHEDULER_PORT, None, None),
            timeout=max(1.0, deadline - time.monotonic()),
            what=f"host {scheduler}: dask scheduler at {address}",
            failed=self._exited(process, log),
        )
        started = []
        for name in workers:
            host = self.hosts[name]
            log = f"dask-workers-{name}.log"
            started.append(
                (
                    name,
                    log,
                    host.popen(
                        [sys.executable, "-m", "distributed.cli.dask_worker", address,
                         "--host", host.address, "--nworkers", str(nworkers), "--nthreads", "1",
                         "--no-dashboard", "--memory-limit", "0", "--name", f"worker-{name}",
                         "--death-timeout", "60"],
                        env=env,
                        log=log,
                    ),
                )
            )  # fmt: skip
        self.scheduler_address = address
        client = self.dask_client(timeout=max(1.0, deadline - time.monotonic()))
        try:
            expected = {self.hosts[n].address: nworkers for n in workers}

            def joined() -> bool:
                seen: dict[str, int] = {}
                for worker in client.scheduler_info(n_workers=-1)["workers"].values():
                    seen[worker["host"]] = seen.get(worker["host"], 0) + 1
                return seen == expected

            def failed() -> str | None:
                for name, log, proc in started:
                    if proc.poll() is not None:
                        return f"workers on host {name} exited; log:\n{self.log_tail(log)}"
                return None

            wait_for(
                joined,
                timeout=max(1.0, deadline - time.monotonic()),
                what=f"dask workers on hosts {', '.join(workers)} joining {address}",
                failed=failed,
                interval=0.2,
            )
        finally:
            client.close()
        return address

    def dask_client(self, *, timeout: float = 30.0) -> Any:
        """A ``distributed.Client`` in this process connected to the bed's scheduler.

        The caller closes it. Raises TestBedError if it cannot connect within ``timeout``.
        """
        import distributed

        if self.scheduler_address is None:
            raise TestBedError("start_dask() has not been called")
        try:
            return distributed.Client(self.scheduler_address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise TestBedError(
                f"host a: cannot connect to the dask scheduler at {self.scheduler_address} "
                f"within {timeout} s: {exc}"
            ) from exc

    def parsl_config(
        self,
        hosts: Sequence[str] = ("b", "c"),
        *,
        workers_per_host: int = 2,
        label: str = "htex",
    ) -> Any:
        """A Parsl ``Config`` whose HighThroughputExecutor runs one worker pool per host.

        The interchange runs in this process's namespace and listens on the bridge address,
        which the pools on ``hosts`` connect to. The provider is a ``LocalProvider`` with one
        block per host; its launcher starts block *i* on ``hosts[i]`` (in the host's
        namespaces). The run directory is in the shared directory so that pools see it.
        Load it with ``parsl.load(config)``; ``dfk.cleanup()`` stops the pools (and closing
        the bed kills whatever is left).
        """
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.launchers.base import Launcher
        from parsl.providers import LocalProvider

        bed_hosts = [self.hosts[name] for name in hosts]

        class HostLauncher(Launcher):  # type: ignore[misc]
            """Starts each new block on the next host of the bed (round robin)."""

            def __init__(self, host_names: Sequence[str], debug: bool = True) -> None:
                super().__init__(debug=debug)
                self.host_names = list(host_names)
                self.launched = 0

            def __call__(
                self,
                command: str,
                tasks_per_node: int,
                nodes_per_block: int,
                script_dir: str = "",
            ) -> str:
                host = bed_hosts[self.launched % len(bed_hosts)]
                self.launched += 1
                return shlex.join(host.wrap(["/bin/sh", "-c", command]))

        bindir = os.path.dirname(sys.executable)
        worker_init = (
            f"export PATH={shlex.quote(bindir)}:$PATH; "
            f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}:${{PYTHONPATH:-}}"
        )
        run_dir = tempfile.mkdtemp(prefix="parsl-", dir=self.shared)
        os.chmod(run_dir, 0o755)
        return Config(
            executors=[
                HighThroughputExecutor(
                    label=label,
                    address=self.bridge_address,
                    loopback_address="127.0.0.1",
                    max_workers_per_node=workers_per_host,
                    worker_logdir_root=os.path.join(run_dir, "workers"),
                    provider=LocalProvider(
                        init_blocks=len(bed_hosts),
                        min_blocks=len(bed_hosts),
                        max_blocks=len(bed_hosts),
                        launcher=HostLauncher(list(hosts)),
                        worker_init=worker_init,
                    ),
                )
            ],
            run_dir=run_dir,
            strategy="none",
            initialize_logging=False,
        )

    # -- measuring -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def traffic(self) -> Iterator[Traffic]:
        """Measure the bytes each host receives and sends during the ``with`` block."""
        before = {name: host.counters() for name, host in self.hosts.items()}
        start = time.perf_counter()
        seen = Traffic()
        yield seen
        seen.seconds = time.perf_counter() - start
        for name, host in self.hosts.items():
            rx, tx = host.counters()
            seen.rx[name] = rx - before[name][0]
            seen.tx[name] = tx - before[name][1]

    # -- tearing down ----------------------------------------------------------------------------

    def add_cleanup(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` first when the bed closes (e.g. closing a client of its services)."""
        self._cleanups.append(callback)

    def close(self) -> None:
        """Tear everything down (idempotent; never raises for what is already gone)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        for callback in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                callback()
        for _, _, process in reversed(self._processes):
            self.stop(process, timeout=5.0)
        for process in self._anchors:
            self.stop(process, timeout=1.0)
        for host in self.hosts.values():
            host.clear_rate()
        for netns in self._created_netns:
            _kill_namespace_processes(netns)
        # Deleting a veth deletes its pair at once; a namespace's own links go asynchronously.
        for link in self._created_links:
            _quiet(["ip", "link", "delete", link])
        for netns in self._created_netns:
            _quiet(["ip", "netns", "delete", netns])
        if self._bridge_created:
            _quiet(["ip", "link", "delete", self.bridge])
        if self.shared:
            for _ in range(5):
                shutil.rmtree(self.shared, ignore_errors=True)
                if not os.path.exists(self.shared):
                    break
                time.sleep(0.2)

    def leftovers(self) -> list[str]:
        """What of this bed still exists (namespaces, links, the shared directory)."""
        found = [f"netns {n}" for n in _netns_names() if n.startswith(self.prefix)]
        found += [f"link {n}" for n in _link_names() if n.startswith(self.prefix)]
        if self.shared and os.path.exists(self.shared):
            found.append(f"directory {self.shared}")
        return found
