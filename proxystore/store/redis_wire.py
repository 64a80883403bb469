r"""A minimal Redis client (RESP2 over a raw socket) for the data path of ``RedisStore``.

redis-py copies a large value several times on its way in (socket chunks into a buffer, then
out of the buffer into a ``bytes``) and needs one contiguous ``bytes`` on its way out. This
module moves large values without those copies:

* **Sending**: a command is a list of buffers handed to ``socket.sendmsg``. An argument may be
  a *list* of buffers (the pieces of one value, as :func:`~proxystore.serialize.serialize_parts`
  returns them); pieces of :data:`SMALL_ARGUMENT` bytes or more go to the kernel straight from
  the caller's memory (numpy arrays included), never joined.
* **Receiving**: a bulk reply of :data:`LARGE_REPLY` bytes or more is read with ``recv_into``
  straight into one fresh buffer from :func:`~proxystore.buffers.alloc_buffer` (anonymous
  memory backed by transparent huge pages where the system offers them, which makes the page
  faults of a fresh 100 MB buffer about six times cheaper). The buffer is writable, so the
  deserializer rebuilds arrays on it without another copy.

Only what ``RedisStore`` needs is here: TCP connections with optional ``AUTH`` (password,
or username and password), ``CLIENT SETNAME`` and ``SELECT``; pipelines; ``MULTI``/``EXEC``
transactions; and streaming reads of array replies (:meth:`Connection.read_array_length`,
:meth:`Connection.read_bulk_into`) so that the chunks of a large value land in one buffer.
TLS, unix sockets, RESP3 and Sentinel/Cluster are out of scope: ``RedisStore`` falls back to
redis-py when asked for them.

Every socket wait is bounded by the connection's timeouts. Errors are redis-py's exception
classes (``redis.exceptions.ConnectionError``, ``TimeoutError``, ``AuthenticationError``,
``ResponseError``), so a caller translates one family of errors whichever client it uses.
Neither a password nor any other credential appears in a ``repr`` or an error message.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Callable

from redis import exceptions

from proxystore.buffers import LARGE_BUFFER, alloc_buffer, byte_view
from proxystore.serialize import Buffer
from proxystore.store.redis_resp import CRLF, SMALL_ARGUMENT, Argument, encode, server_error

__all__ = [
    "LARGE_REPLY",
    "SMALL_ARGUMENT",
    "Argument",
    "Connection",
    "ConnectionPool",
    "Reply",
    "encode",
]

Reply = Any
"""A decoded reply: ``bytes``/``bytearray``/``memoryview`` (bulk), ``bytes`` (simple string),
``int``, ``None`` (nil), a ``list`` of replies, or a ``redis.exceptions.ResponseError``
instance (an error inside an array; a top-level error is raised)."""

LARGE_REPLY = LARGE_BUFFER
"""Bulk replies of at least this many bytes are read into a buffer from
:func:`~proxystore.buffers.alloc_buffer`."""

_READ_BUFFER = 64 * 1024  # replies up to about this size are read through the connection buffer
_ALIGN = 64
_IOV_MAX = min(getattr(os, "sysconf", lambda _: 1024)("SC_IOV_MAX"), 1024)


class Connection:
    """One connection to a Redis server, speaking RESP2.

    Not thread-safe: use one connection per thread (:class:`ConnectionPool` hands them out).

    Args:
        host: Server host name or address.
        port: Server port.
        connect_timeout: Seconds to wait for the TCP connection (``None``: the OS default).
        timeout: Seconds any later send or receive may wait (``None``: no limit).
        password: Sends ``AUTH`` on connect when given.
        username: ACL user name for ``AUTH`` (with ``password``).
        db: Database number, selected on connect when not 0.
        client_name: Name set with ``CLIENT SETNAME`` on connect.
        keepalive: Enable TCP keep-alive probes.

    Raises:
        redis.exceptions.ConnectionError: If the server cannot be reached.
        redis.exceptions.TimeoutError: If connecting or the handshake timed out.
        redis.exceptions.AuthenticationError: If the server refused the credentials.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float | None = 5.0,
        timeout: float | None = 60.0,
        password: str | None = None,
        username: str | None = None,
        db: int = 0,
        client_name: str | None = None,
        keepalive: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.pid = os.getpid()
        self._buffer = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise self._socket_error("connecting to", exc) from exc
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if keepalive:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._sock.settimeout(timeout)
            self._handshake(password, username, db, client_name)
        except BaseException:
            self.close()
            raise

    def _handshake(
        self, password: str | None, username: str | None, db: int, client_name: str | None
    ) -> None:
        commands: list[list[Argument]] = []
        if password is not None or username:
            # As redis-py: AUTH [username] password; a username alone authenticates with "".
            auth: list[Argument] = ["AUTH"]
            if username:
                auth.append(username)
            auth.append(password or "")
            commands.append(auth)
        if client_name:
            commands.append(["CLIENT", "SETNAME", client_name])
        if db:
            commands.append(["SELECT", db])
        if commands:
            self.pipeline(commands)

    # -- errors -------------------------------------------------------------------------------

    def _socket_error(
        self, action: str, exc: OSError
    ) -> exceptions.ConnectionError | exceptions.TimeoutError:
        if isinstance(exc, (TimeoutError, socket.timeout)):  # distinct classes before 3.10
            return exceptions.TimeoutError(f"Timeout {action} {self.address}")
        reason = exc.strerror or str(exc) or type(exc).__name__
        number = f"Error {exc.errno} " if exc.errno else "Error "
        return exceptions.ConnectionError(f"{number}{action} {self.address}: {reason}")

    # -- sending ------------------------------------------------------------------------------

    def send(self, commands: Sequence[Sequence[Argument]]) -> None:
        """Send ``commands`` (a pipeline) without reading any reply.

        Raises:
            redis.exceptions.ConnectionError: If the connection broke.
            redis.exceptions.TimeoutError: If the server stopped reading for ``timeout``.
        """
        pieces = encode(commands)
        try:
            if len(pieces) == 1:
                self._sock.sendall(pieces[0])
            else:
                self._send_pieces([byte_view(piece) for piece in pieces])
        except OSError as exc:
            raise self._socket_error("writing to", exc) from exc

    def _send_pieces(self, views: list[memoryview]) -> None:
        index = 0
        while index < len(views):
            sent = self._sock.sendmsg(views[index : index + _IOV_MAX])
            while sent:
                head = views[index]
                if sent >= head.nbytes:
                    sent -= head.nbytes
                    index += 1
                else:
                    views[index] = head[sent:]
                    sent = 0
            while index < len(views) and not views[index].nbytes:
                index += 1

    # -- receiving ----------------------------------------------------------------------------

    def _fill(self) -> None:
        """Read more bytes into the connection buffer (at least one)."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buffer):
            if self._start:
                pending = self._end - self._start
                self._buffer[:pending] = self._view[self._start : self._end]
                self._start, self._end = 0, pending
            else:  # a line longer than the buffer: grow it
                self._view.release()
                self._buffer.extend(bytes(len(self._buffer)))
                self._view = memoryview(self._buffer)
        try:
            count = self._sock.recv_into(self._view[self._end :])
        except OSError as exc:
            raise self._socket_error("reading from", exc) from exc
        if not count:
            raise exceptions.ConnectionError(f"Connection closed by server at {self.address}")
        self._end += count

    def _readline(self) -> bytes:
        while True:
            index = self._buffer.find(CRLF, self._start, self._end)
            if index >= 0:
                line = bytes(self._view[self._start : index])
                self._start = index + 2
                return line
            self._fill()

    def _read_small(self, count: int) -> bytes:
        while self._end - self._start < count:
            self._fill()
        data = bytes(self._view[self._start : self._start + count])
        self._start += count
        return data

    def _read_into(self, view: memoryview) -> None:
        """Fill ``view`` from the stream: buffered bytes first, then ``recv_into`` directly."""
        wanted = view.nbytes
        done = min(self._end - self._start, wanted)
        if done:
            view[:done] = self._view[self._start : self._start + done]
            self._start += done
        try:
            while done < wanted:
                count = self._sock.recv_into(view[done:])
                if not count:
                    raise exceptions.ConnectionError(
                        f"Connection closed by server at {self.address}"
                    )
                done += count
        except OSError as exc:
            raise self._socket_error("reading from", exc) from exc

    def _skip_crlf(self) -> None:
        if self._read_small(2) != CRLF:
            raise exceptions.InvalidResponse(f"Protocol error from {self.address}: missing CRLF")

    def _read_bulk(self, length: int, prefix: int) -> Buffer:
        if length + 2 <= _READ_BUFFER:
            data = self._read_small(length + 2)
            if data[-2:] != CRLF:
                raise exceptions.InvalidResponse(
                    f"Protocol error from {self.address}: missing CRLF"
                )
            return data[:-2]
        if length >= LARGE_REPLY:
            # Place byte ``prefix`` of the value on a 64-byte boundary of the page-aligned
            # buffer, so that a payload behind a ``prefix``-byte header is aligned.
            pad = -prefix % _ALIGN
            view = alloc_buffer(pad + length)[pad:]
        else:
            view = memoryview(bytearray(length))
        self._read_into(view)
        self._skip_crlf()
        return view

    def _header(self) -> tuple[int, bytes]:
        line = self._readline()
        if not line:
            raise exceptions.InvalidResponse(f"Protocol error from {self.address}: empty line")
        return line[0], line[1:]

    def read_reply(self, *, prefix: int = 0) -> Reply:
        """Read one reply. Large bulk strings come back as writable buffers, not copies.

        Args:
            prefix: For bulk replies of :data:`LARGE_REPLY` bytes or more: place byte
                ``prefix`` of the value at a 64-byte aligned address.

        Raises:
            redis.exceptions.ResponseError: If the reply is an error (or a subclass, such as
                ``AuthenticationError``).
        """
        reply = self._read_value(prefix)
        if isinstance(reply, exceptions.RedisError):
            raise reply
        return reply

    def _read_value(self, prefix: int) -> Reply:
        kind, rest = self._header()
        if kind == 0x24:  # $ bulk string
            length = int(rest)
            return None if length < 0 else self._read_bulk(length, prefix)
        if kind == 0x2B:  # + simple string
            return rest
        if kind == 0x3A:  # : integer
            return int(rest)
        if kind == 0x2A:  # * array
            count = int(rest)
            return None if count < 0 else [self._read_value(prefix) for _ in range(count)]
        if kind == 0x2D:  # - error
            return server_error(rest.decode("utf-8", "replace"))
        raise exceptions.InvalidResponse(
            f"Protocol error from {self.address}: unexpected reply type {chr(kind)!r}"
        )

    def read_array_length(self) -> int | None:
        """Read the start of an array reply; return its length (``None`` for a nil array).

        Raises:
            redis.exceptions.ResponseError: If the reply is an error.
            redis.exceptions.InvalidResponse: If the reply is not an array.
        """
        kind, rest = self._header()
        if kind == 0x2A:
            count = int(rest)
            return None if count < 0 else count
        if kind == 0x2D:
            raise server_error(rest.decode("utf-8", "replace"))
        raise exceptions.InvalidResponse(
            f"Protocol error from {self.address}: expected an array, got {chr(kind)!r}"
        )

    def read_bulk_into(self, view: memoryview) -> int:
        """Read a bulk string reply into the start of ``view``; return its length.

        Returns ``-1`` for a nil reply.

        Raises:
            ValueError: If the string is longer than ``view`` (the connection is then out of
                step with the server and must be closed).
            redis.exceptions.ResponseError: If the reply is an error.
        """
        kind, rest = self._header()
        if kind == 0x2D:
            raise server_error(rest.decode("utf-8", "replace"))
        if kind != 0x24:
            raise exceptions.InvalidResponse(
                f"Protocol error from {self.address}: expected a bulk string, got {chr(kind)!r}"
            )
        length = int(rest)
        if length < 0:
            return -1
        if length > view.nbytes:
            raise ValueError(f"bulk reply of {length} bytes does not fit in {view.nbytes}")
        self._read_into(view[:length])
        self._skip_crlf()
        return length

    # -- commands -----------------------------------------------------------------------------

    def command(self, *args: Argument, prefix: int = 0) -> Reply:
        """Send one command and return its reply (see :meth:`read_reply`)."""
        self.send((args,))
        return self.read_reply(prefix=prefix)

    def pipeline(self, commands: Sequence[Sequence[Argument]]) -> list[Reply]:
        """Send ``commands`` at once and return their replies.

        Every reply is read before the first error among them is raised, so the connection
        stays usable.
        """
        self.send(commands)
        replies = [self._read_value(0) for _ in commands]
        for reply in replies:
            if isinstance(reply, exceptions.RedisError):
                raise reply
        return replies

    def transaction(self, commands: Sequence[Sequence[Argument]]) -> list[Reply]:
        """Run ``commands`` in one ``MULTI``/``EXEC`` transaction; return their results.

        Raises:
            redis.exceptions.ResponseError: The first error: a command refused while queued
                (the transaction is then discarded) or failed while executed.
        """
        self.send([("MULTI",), *commands, ("EXEC",)])
        queued = [self._read_value(0) for _ in range(len(commands) + 1)]
        results = self._read_value(0)
        for reply in queued:
            if isinstance(reply, exceptions.RedisError):
                raise reply
        if isinstance(results, exceptions.RedisError):
            raise results
        if not isinstance(results, list):
            raise exceptions.ResponseError(f"transaction at {self.address} was aborted")
        for reply in results:
            if isinstance(reply, exceptions.RedisError):
                raise reply
        return results

    def close(self) -> None:
        """Close the socket (in a forked child, only this process's copy of it)."""
        with contextlib.suppress(OSError):
            self._sock.close()

    def __del__(self) -> None:
        # A dropped connection (a store never cleaned up, or the parent's sockets in a forked
        # child) closes its file descriptor quietly, like redis-py's connections do.
        sock = getattr(self, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def __repr__(self) -> str:
        return f"Connection({self.address})"


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
        options: Passed to :class:`Connection` (credentials included; never shown).
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
    def connection(self) -> Iterator[Connection]:
        """Lend a connection for one operation (opening one if none is idle)."""
        self._check_fork()
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = Connection(self.host, self.port, **self._options)
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
        reply = self.command("CLIENT", "ID")
        assert isinstance(reply, int)
        return reply

    def close(self) -> None:
        """Close this process's idle connections (the pool stays usable)."""
        self._check_fork()
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __repr__(self) -> str:
        return f"ConnectionPool({self.host}:{self.port})"
