"""``ConnectionPool``: lends :mod:`~proxystore.store.redis._wire.connection` connections to threads.

One pool per process and server; see :class:`ConnectionPool`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any, Callable

from proxystore.store.redis._wire.connection import Argument, Connection, Reply

__all__ = ["ConnectionPool"]


class ConnectionPool:
    """Per-process pool of :class:`Connection` objects to one server.

    A thread takes a connection for the duration of one operation and gives it back; a
    connection whose operation failed in any way is closed rather than reused, since it may be
    out of step with the server. After ``fork`` the child starts with an empty pool and never
    touches the parent's sockets.

    Args:
        host: Server host name or address.
        port: Server port.
        max_idle: Most idle connections kept open.
        options: Passed to :class:`Connection` (credentials included, never shown; ``where``:
            what the errors of its connections name).
    """

    def __init__(self, host: str, port: int, *, max_idle: int = 16, **options: Any) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self._options = options
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle: list[Connection] = []

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            # The lock may have been held by a parent thread at fork time: start afresh. The
            # inherited sockets are dropped, not closed with a goodbye to the server.
            self._lock = threading.Lock()
            self._idle = []
            self._pid = os.getpid()

    @contextlib.contextmanager
    def connection(self, key: str | None = None) -> Iterator[Connection]:
        """Lend a connection for one operation (opening one if none is idle).

        Args:
            key: The key of the operation, which its errors name.
        """
        self._check_fork()
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = Connection(self.host, self.port, key=key, **self._options)
        else:
            conn.key = key
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        with self._lock:
            keep = conn.pid == os.getpid() and len(self._idle) < self.max_idle
            if keep:
                self._idle.append(conn)
        if not keep:
            conn.close()

    def run(self, operation: Callable[[Connection], Any]) -> Any:
        """Run ``operation`` on a pooled connection and return its result."""
        with self.connection() as conn:
            return operation(conn)

    def command(self, *args: Argument) -> Reply:
        """Run one command on a pooled connection."""
        with self.connection() as conn:
            return conn.command(*args)

    def client_id(self) -> int:
        """Return the server's ``CLIENT ID`` of the connection this thread would use next."""
        with self.connection() as conn:
            reply = conn.command("CLIENT", "ID")
            if not isinstance(reply, int):
                raise conn.malformed(f"CLIENT ID answered with a {type(reply).__name__}")
        return reply

    def close(self) -> None:
        """Close this process's idle connections (the pool stays usable)."""
        self._check_fork()
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __repr__(self) -> str:
        path = self._options.get("unix_socket_path")
        return f"ConnectionPool({f'unix:{path}' if path else f'{self.host}:{self.port}'})"
