"""Start a private redis-server for the test session (or use REDIS_HOST/REDIS_PORT)."""

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


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """Yield ``(host, port)`` of a Redis server that answers PING."""
    host, port = os.environ.get("REDIS_HOST"), os.environ.get("REDIS_PORT")
    if host and port:
        if not _answers(host, int(port)):
            raise RuntimeError(
                f"REDIS_HOST/REDIS_PORT point at {host}:{port}, which does not answer"
            )
        yield host, int(port)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run scripts/test.sh (it installs the Debian "
            "package redis-server) or set REDIS_HOST/REDIS_PORT to a server"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="proxystore-redis-") as workdir:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while not _answers("127.0.0.1", port):
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
