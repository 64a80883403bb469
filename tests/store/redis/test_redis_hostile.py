"""A hostile (or broken) Redis server: every malformed reply is our error naming the server.

:class:`FakeRedis` is a real TCP server on 127.0.0.1, in a thread: it answers the handshake
(``PING``, ``CLIENT ...``, ``SELECT``, ``AUTH``; ``HELLO`` as a Redis before 6 does) and any
other command with the reply under test: a bad type byte, a length that is not a number or is
negative, a declared 8 GB bulk string, 100,000 nested arrays, a 200 MB line without CRLF
(streamed lazily, 1 MiB at a time, until the client hangs up), a truncated reply, an error
reply, or a reply of the wrong type for the command. Each must reach the user as a
``ProxyStoreError`` naming the server, within the socket timeout, and the client's memory must
not grow with what the server declares or sends (measured in a child process, by
``ru_maxrss``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Union

import pytest

from proxystore.exceptions import ProxyStoreError, StoreConnectionError, StoreError
from proxystore.store.redis import RedisStore

ROOT = Path(__file__).resolve().parent.parent.parent.parent
TIMEOUT = 2.0  # the stores' socket_timeout
LINE_BYTES = 200 * 2**20  # the line without CRLF
MIB = 2**20

Reply = Union[bytes, Callable[[socket.socket], None]]


def stream_line(peer: socket.socket) -> None:
    """Send ``+`` and 200 MB without CRLF, 1 MiB at a time, until the client hangs up."""
    block = memoryview(b"x" * MIB)
    peer.sendall(b"+")
    for _ in range(LINE_BYTES // MIB):
        peer.sendall(block)


def truncated(peer: socket.socket) -> None:
    """Announce 100 bytes, send 3, hang up."""
    peer.sendall(b"$100\r\nabc")
    peer.shutdown(socket.SHUT_RDWR)


HOSTILE: dict[str, Reply] = {
    "bad type byte": b"?what\r\n",
    "length not a number": b"$abc\r\n",
    "length with trailing junk": b"$3x\r\nabc\r\n",
    "negative length": b"$-5\r\n",
    "negative array length": b"*-7\r\n",
    "declared 8 GB bulk": b"$8589934592\r\n" + b"\0" * 1000,
    "declared 1e30 bulk": b"$1000000000000000000000000000000\r\n",
    "100k nested arrays": b"*1\r\n" * 100_000 + b":1\r\n",
    "200 MB line without CRLF": stream_line,
    "integer not a number": b":12abc\r\n",
    "wrong type: integer for GET": b":5\r\n",
    "wrong type: array for GET": b"*2\r\n$1\r\na\r\n$1\r\nb\r\n",
    "empty line": b"\r\n",
}
"""Replies the client must call malformed (the wire client: at once, well within the timeout)."""


class FakeRedis:
    """A RESP server on 127.0.0.1 that answers the handshake, and everything else with ``reply``.

    Each connection is served by its own thread; :meth:`stop` closes everything and joins
    the threads (bounded).
    """

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.peers: list[socket.socket] = []
        self.commands: list[list[bytes]] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                peer, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            peer.settimeout(30)  # a slow reader (the old client scanned its buffer: O(n²))
            self.peers.append(peer)
            thread = threading.Thread(target=self._serve, args=(peer,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, peer: socket.socket) -> None:
        buffer = bytearray()
        try:
            while not self.stopping.is_set():
                command = self._read_command(peer, buffer)
                if command is None:
                    return
                self.commands.append(command)
                name = command[0].upper() if command else b""
                if name == b"PING":
                    peer.sendall(b"+PONG\r\n")
                elif name in (b"CLIENT", b"SELECT", b"AUTH"):
                    peer.sendall(b"+OK\r\n")
                elif name == b"HELLO":  # as a Redis before 6: redis-py falls back to RESP2
                    peer.sendall(b"-ERR unknown command 'HELLO'\r\n")
                elif callable(self.reply):
                    self.reply(peer)
                    return
                else:
                    peer.sendall(self.reply)
        except OSError:  # the client hung up (as it should, on a malformed reply)
            return
        finally:
            peer.close()

    @staticmethod
    def _read_command(peer: socket.socket, buffer: bytearray) -> list[bytes] | None:
        """One RESP array of bulk strings from the client, or ``None`` at end of stream."""

        def need(count: int) -> bool:
            while len(buffer) < count:
                data = peer.recv(65536)
                if not data:
                    return False
                buffer.extend(data)
            return True

        def line() -> bytes | None:
            while b"\r\n" not in buffer:
                if not need(len(buffer) + 1):
                    return None
            index = buffer.index(b"\r\n")
            text = bytes(buffer[:index])
            del buffer[: index + 2]
            return text

        header = line()
        if header is None or not header.startswith(b"*"):
            return None
        args = []
        for _ in range(int(header[1:])):
            length = line()
            if length is None or not need(int(length[1:]) + 2):
                return None
            size = int(length[1:])
            args.append(bytes(buffer[:size]))
            del buffer[: size + 2]
        return args

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        for peer in list(self.peers):
            peer.close()
        self.acceptor.join(5)
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def fake() -> Iterator[Callable[[Reply], FakeRedis]]:
    servers: list[FakeRedis] = []

    def start(reply: Reply) -> FakeRedis:
        server = FakeRedis(reply)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


CLIENT_OPTIONS = {"wire": {}, "redis-py": {"max_connections": 4}}


def open_store(server: FakeRedis, client: str) -> RedisStore:
    return RedisStore(
        f"hostile-{uuid.uuid4().hex[:8]}",
        hostname="127.0.0.1",
        port=server.port,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        cache_size=0,
        **CLIENT_OPTIONS[client],
    )


def failure(call: Callable[[], Any]) -> tuple[BaseException, float]:
    """The exception ``call`` raises and how long it took (it must raise)."""
    start = time.monotonic()
    try:
        call()
    except BaseException as exc:  # any escape is what the test inspects
        return exc, time.monotonic() - start
    raise AssertionError("the call returned instead of raising")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_wire_client_calls_every_malformed_reply_malformed(
    fake: Callable[[Reply], FakeRedis], case: str
) -> None:
    server = fake(HOSTILE[case])
    store = open_store(server, "wire")
    try:
        exc, elapsed = failure(lambda: store.get("some-key"))
        assert isinstance(exc, StoreError), f"{case}: {type(exc).__name__}: {exc}"
        message = str(exc)
        assert server.address in message and "'some-key'" in message
        assert "malformed reply" in message, message
        assert elapsed < TIMEOUT / 2, f"{case}: {elapsed:.2f} s"  # no wait for the timeout
        assert len(message) < 1000
        # The connection was dropped, not reused out of step: the next call fails the same way.
        again, _ = failure(lambda: store.get("some-key"))
        assert isinstance(again, StoreError) and "malformed reply" in str(again)
    finally:
        store.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(set(HOSTILE) - {"200 MB line without CRLF"}))
def test_redis_py_client_never_leaks_a_raw_error(
    fake: Callable[[Reply], FakeRedis], case: str
) -> None:
    server = fake(HOSTILE[case])
    store = open_store(server, "redis-py")
    try:
        exc, elapsed = failure(lambda: store.get("some-key"))
        assert isinstance(exc, ProxyStoreError), f"{case}: {type(exc).__name__}: {exc}"
        assert server.address in str(exc)
        assert elapsed < TIMEOUT + 1.5, f"{case}: {elapsed:.2f} s"  # at most one timeout
    finally:
        store.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", sorted(CLIENT_OPTIONS))
def test_truncated_reply_and_error_reply(fake: Callable[[Reply], FakeRedis], client: str) -> None:
    cut = fake(truncated)
    store = open_store(cut, client)
    try:
        exc, elapsed = failure(lambda: store.get("some-key"))
        assert isinstance(exc, StoreConnectionError), f"{type(exc).__name__}: {exc}"
        assert cut.address in str(exc) and elapsed < TIMEOUT + 1.5
    finally:
        store.close()
    refusing = fake(b"-ERR no such thing here\r\n")
    store = open_store(refusing, client)
    try:
        exc, elapsed = failure(lambda: store.get("some-key"))
        assert type(exc) is StoreError
        assert refusing.address in str(exc) and "no such thing here" in str(exc)
        assert elapsed < TIMEOUT
    finally:
        store.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", sorted(CLIENT_OPTIONS))
def test_wrong_reply_types_for_exists_and_timestamp(
    fake: Callable[[Reply], FakeRedis], client: str
) -> None:
    server = fake(b"*1\r\n:1\r\n")  # an array where GETRANGE and LLEN answer a string, a number
    store = open_store(server, client)
    try:
        for call in (lambda: store.exists("k"), lambda: store.get_timestamp("k")):
            exc, _ = failure(call)
            assert isinstance(exc, StoreError), f"{type(exc).__name__}: {exc}"
            assert server.address in str(exc) and "malformed reply" in str(exc)
    finally:
        store.close()


# -- memory: measured in a child process ---------------------------------------------------------

CHILD = """
import json, resource, sys, time
from proxystore.exceptions import ProxyStoreError
from proxystore.store.redis import RedisStore

port = int(sys.argv[1])
store = RedisStore("hostile-memory", hostname="127.0.0.1", port=port, socket_timeout=2.0,
                   cache_size=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
try:
    store.get("some-key")
    outcome = "returned"
except ProxyStoreError as exc:
    outcome = "error: " + str(exc)
except BaseException as exc:
    outcome = "raw " + type(exc).__name__ + ": " + str(exc)[:200]
elapsed = time.monotonic() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kib": after - before, "elapsed": elapsed, "outcome": outcome}))
"""

MEMORY_CASES = ["200 MB line without CRLF", "declared 8 GB bulk", "100k nested arrays"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", MEMORY_CASES)
def test_client_memory_does_not_grow_with_the_reply(
    fake: Callable[[Reply], FakeRedis], case: str
) -> None:
    server = fake(HOSTILE[case])
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(server.port)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"{case}: peak RSS grew by {report['grew_kib'] / 1024:.1f} MiB in {report['elapsed']:.2f} s"
    )
    assert report["outcome"].startswith("error: ") and server.address in report["outcome"], report
    assert report["grew_kib"] < 16 * 1024, report  # the line alone is 200 MiB
    assert report["elapsed"] < TIMEOUT, report


# -- the command-line tool against such a server ---------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "case", ["100k nested arrays", "wrong type: integer for GET", "bad type byte", "empty line"]
)
def test_the_cli_reports_a_malformed_scan_reply_in_one_line(
    fake: Callable[[Reply], FakeRedis], case: str
) -> None:
    import io

    from proxystore.cli import main

    server = fake(HOSTILE[case])
    out, err = io.StringIO(), io.StringIO()
    status = main(["ls", f"redis://127.0.0.1:{server.port}"], stdout=out, stderr=err)
    assert status == 1, err.getvalue()
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("proxystore: error: "), lines
    assert server.address in lines[0] and "malformed reply" in lines[0]
    assert any(command[:1] == [b"SCAN"] for command in server.commands)
