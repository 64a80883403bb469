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


@contextmanager
def private_redis(*args: str) -> Iterator[tuple[str, int]]:
    """Start a throw-away redis-server on a free port with extra ``args``; stop it afterwards.

    It keeps nothing on disk and listens on 127.0.0.1 only.
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
        command += ["--appendonly", "no", "--dir", workdir, *args]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while not replies("127.0.0.1", port, pong_only=False):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}")
                time.sleep(0.05)
            yield "127.0.0.1", port
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
