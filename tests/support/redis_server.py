"""Start private redis-servers for the tests (or use REDIS_HOST/REDIS_PORT)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replies(host: str, port: int, *, pong_only: bool = False) -> bool:
    """Whether a server answers PING: +PONG, or (unless ``pong_only``) an error like NOAUTH."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG") or (not pong_only and reply[:1] == b"-")


@dataclass(frozen=True)
class Server:
    """A private redis-server: its plain port, and its TLS port and unix socket if asked."""

    host: str
    port: int
    pid: int
    tls_port: int | None = None
    unix_socket: str | None = None


@contextmanager
def private_server(
    *args: str, tls: tuple[Path, Path, Path] | None = None, unix: bool = False
) -> Iterator[Server]:
    """Start a throw-away redis-server on free ports with extra ``args``; stop it afterwards.

    It keeps nothing on disk and listens on 127.0.0.1 only (and, with ``unix``, on a unix
    socket in its own private directory). ``tls`` is ``(ca, cert, key)``: the server then also
    listens for TLS on a second free port (clients need no certificate).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run scripts/test.sh (it installs the Debian "
            "package redis-server) or set REDIS_HOST/REDIS_PORT to a server"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="proxystore-redis-") as workdir:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", workdir]
        tls_port = unix_socket = None
        if tls is not None:
            tls_port = free_port()
            ca, cert, key = tls
            command += ["--tls-port", str(tls_port), "--tls-ca-cert-file", str(ca)]
            command += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            command += ["--tls-auth-clients", "no"]
        if unix:
            unix_socket = os.path.join(workdir, "redis.sock")
            command += ["--unixsocket", unix_socket, "--unixsocketperm", "700"]
        command += list(args)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while not replies("127.0.0.1", port, pong_only=False):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}")
                time.sleep(0.05)
            yield Server("127.0.0.1", port, process.pid, tls_port, unix_socket)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def private_redis(*args: str) -> Iterator[tuple[str, int]]:
    """Start a throw-away redis-server on a free port with extra ``args``; yield its address."""
    with private_server(*args) as server:
        yield server.host, server.port


def tls_unsupported() -> str | None:
    """Return why this redis-server cannot serve TLS, or ``None`` if it can.

    Runs ``redis-server --tls-port 0 --proxystore-probe x``: the configuration parser stops at
    the first unknown directive, which is ``tls-port`` on a server built without TLS.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        return "redis-server is not installed"
    try:
        result = subprocess.run(
            [binary, "--tls-port", "0", "--proxystore-probe", "x"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"redis-server could not be run: {exc}"
    output = (result.stdout + result.stderr).decode(errors="replace")
    if "proxystore-probe" not in output:
        return "this redis-server is built without TLS support (--tls-port is unknown to it)"
    return None


@contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """Yield ``(host, port)`` of the session's Redis: REDIS_HOST/REDIS_PORT, or a private one."""
    host, port = os.environ.get("REDIS_HOST"), os.environ.get("REDIS_PORT")
    if host and port:
        if not replies(host, int(port), pong_only=True):
            raise RuntimeError(
                f"REDIS_HOST/REDIS_PORT point at {host}:{port}, which does not answer PING"
            )
        yield host, int(port)
        return
    with private_redis() as address:
        yield address
