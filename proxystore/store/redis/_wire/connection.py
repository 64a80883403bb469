r"""A minimal Redis client (RESP2 over a raw socket) for the data path of ``RedisStore``.

redis-py copies a large value several times on its way in (socket chunks into a buffer, then
out of the buffer into a ``bytes``) and needs one contiguous ``bytes`` on its way out. This
module moves large values without those copies:

* **Sending**: a command is a list of buffers handed to ``socket.sendmsg``. An argument may be
  a *list* of buffers (the pieces of one value, as :func:`~proxystore.serialize.serialize_parts`
  returns them); pieces of :data:`SMALL_ARGUMENT` bytes or more go to the kernel straight from
  the caller's memory (numpy arrays included), never joined.
* **Receiving**: a bulk reply larger than the read buffer is read with ``recv_into`` straight
  into one fresh buffer from :func:`~proxystore.buffers.aligned_buffer`, with the payload
  behind the value's header on a 64-byte boundary (from :data:`LARGE_REPLY` bytes on, anonymous
  memory backed by transparent huge pages where the system offers them, which makes the page
  faults of a fresh 100 MB buffer about six times cheaper). The buffer is writable, so the
  deserializer rebuilds arrays on it without another copy.

Only what ``RedisStore`` needs is here: TCP or unix-socket connections, TLS (an
:class:`ssl.SSLContext`; on TLS sockets the pieces go out with ``sendall``, ``recv_into``
still fills the one buffer), optional ``AUTH`` (password, or ACL user and password),
``CLIENT SETNAME`` and ``SELECT``; pipelines; ``MULTI``/``EXEC`` transactions; and streaming
reads of array replies (:meth:`Connection.read_array_length`,
:meth:`Connection.read_bulk_into`) so that the chunks of a large value land in one buffer.
RESP3 and Sentinel/Cluster are out of scope: ``RedisStore`` falls back to redis-py for them.

Every socket wait is bounded by the connection's timeouts, with no retry multiplying them. A
timeout in the middle of a value is a ``StoreTimeoutError`` that says how many bytes arrived.

A reply is trusted for nothing: a line (simple string, error, integer, or the header of a bulk
string or array) longer than :data:`MAX_LINE` bytes, a declared length that is not a plain
decimal number, negative other than the nil ``-1``, or beyond :data:`MAX_BULK` (Redis'
``proto-max-bulk-len``), arrays nested deeper than :data:`MAX_DEPTH`, an unknown type byte or a
reply of the wrong type for the command are all a ``MalformedReply`` naming the server,
raised before any memory is set aside for them; memory grows only with the bytes that actually
arrive, and every wait for them is bounded by the socket timeout. Errors are this project's
(:class:`~proxystore.exceptions.StoreConnectionError`, ``StoreTimeoutError``, ``StoreAuthError``,
``StoreError``), made once where the failure is seen by the connection's
:class:`~proxystore.store.redis._wire.errors.Where` (the store, the key of the operation, the
server's address). Passwords are :class:`~proxystore.secret.Secret` until the ``AUTH``
is encoded; none appears in a ``repr``, an error message or a traceback's locals.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from proxystore.buffers import LARGE_BUFFER, aligned_buffer, byte_view
from proxystore.exceptions import StoreError
from proxystore.secret import Secret, reveal
from proxystore.serialize import Buffer
from proxystore.store.redis._wire.errors import MalformedReply, Where
from proxystore.store.redis._wire.resp import CRLF, SMALL_ARGUMENT, Argument, encode

__all__ = [
    "LARGE_REPLY",
    "MAX_BULK",
    "MAX_DEPTH",
    "MAX_LINE",
    "SMALL_ARGUMENT",
    "Argument",
    "Connection",
    "Reply",
    "encode",
    "open_socket",
    "ssl_context",
]

Reply = Any
"""A decoded reply: ``bytes``/``bytearray``/``memoryview`` (bulk), ``bytes`` (simple string),
``int``, ``None`` (nil), a ``list`` of replies, or a :class:`~proxystore.exceptions.StoreError`
instance (an error inside an array; a top-level error is raised)."""

LARGE_REPLY = LARGE_BUFFER
"""Bulk replies of at least this many bytes are read into a buffer from
:func:`~proxystore.buffers.alloc_buffer`."""

MAX_LINE = 64 * 1024
"""Longest line a reply may have, CRLF included (Redis' own lines are a few hundred bytes)."""

MAX_BULK = 512 * 2**20
"""Largest bulk string accepted: Redis' default ``proto-max-bulk-len`` (512 MB), which is also
the most the store writes as one value."""

MAX_DEPTH = 8
"""Deepest nesting of arrays accepted (the store's replies nest two deep)."""

_MAX_ARRAY = 2**32
"""Most elements an array may declare (a Redis list holds at most 2**32 - 1)."""

_READ_BUFFER = MAX_LINE  # replies up to about this size are read through the connection buffer
_ALIGN = 64
_IOV_MAX = min(getattr(os, "sysconf", lambda _: 1024)("SC_IOV_MAX"), 1024)


def _number(text: bytes) -> bool:
    """Whether ``text`` is a plain decimal integer (``-`` allowed), at most 20 characters."""
    digits = text[1:] if text[:1] == b"-" else text
    return 0 < len(digits) <= 19 and digits.isdigit()


def _show(data: bytes) -> str:
    """A short, escaped rendering of reply bytes for a message."""
    text = repr(data[:40])
    return text + ("..." if len(data) > 40 else "")


class Connection:
    """One connection to a Redis server, speaking RESP2.

    Not thread-safe: use one connection per thread
    (:class:`~proxystore.store.redis._wire.pool.ConnectionPool` hands them out).

    Args:
        host: Server host name or address (for TLS, the name checked in its certificate).
        port: Server port.
        connect_timeout: Seconds to wait for the connection and the TLS handshake.
        timeout: Seconds any later send or receive may wait (``None``: no limit).
        password: Sends ``AUTH`` on connect when given.
        username: ACL user name for ``AUTH`` (with ``password``).
        db: Database number, selected on connect when not 0.
        client_name: Name set with ``CLIENT SETNAME`` on connect.
        keepalive: Enable TCP keep-alive probes.
        unix_socket_path: Connect to this unix socket instead of ``host:port``.
        ssl_context: Speak TLS with this context.

        where: What its errors name (the store, the server); by default only the address.
        key: The key of the operation the connection is opened for (its errors name it).

    Attributes:
        key: The key of the current operation (set by the pool that lends the connection).

    Raises:
        StoreConnectionError: If the server cannot be reached.
        StoreTimeoutError: If connecting or the handshake timed out.
        StoreAuthError: If the server refused the credentials.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float | None = 5.0,
        timeout: float | None = 60.0,
        password: Secret | str | None = None,
        username: str | None = None,
        db: int = 0,
        client_name: str | None = None,
        keepalive: bool = False,
        unix_socket_path: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        where: Where | None = None,
        key: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"unix:{unix_socket_path}" if unix_socket_path else f"{host}:{port}"
        self.where = where or Where(self.address, host=host, timeout=timeout)
        self.key = key
        self.pid = os.getpid()
        self.timeout = timeout
        self._buffer = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        try:
            self._sock = open_socket(
                host,
                port,
                unix_socket_path=unix_socket_path,
                connect_timeout=connect_timeout,
                timeout=timeout,
                context=ssl_context,
                keepalive=keepalive,
            )
        except OSError as exc:
            raise self._socket_error("connecting to", exc) from exc
        self._tls = isinstance(self._sock, ssl.SSLSocket)
        try:
            self._handshake(password, username, db, client_name)
        except BaseException:
            self.close()
            raise

    def _handshake(
        self, password: Secret | str | None, username: str | None, db: int, client_name: str | None
    ) -> None:
        commands: list[list[Argument | Secret]] = []
        if password is not None or username:
            # As redis-py: AUTH [username] password; a username alone authenticates with "".
            # The password stays a Secret until encoded (tracebacks show these locals).
            auth: list[Argument | Secret] = ["AUTH"]
            if username:
                auth.append(username)
            auth.append(password if isinstance(password, Secret) else Secret(password or ""))
            commands.append(auth)
        if client_name:
            commands.append(["CLIENT", "SETNAME", client_name])
        if db:
            commands.append(["SELECT", db])
        if commands:
            self.pipeline(commands)  # type: ignore[arg-type]  # encode() takes Secrets too

    # -- errors -------------------------------------------------------------------------------

    def _socket_error(self, action: str, exc: OSError) -> StoreError:
        where, key = self.where, self.key
        if isinstance(exc, (TimeoutError, socket.timeout)):  # distinct classes before 3.10
            return where.timed_out(f"Timeout {action} {self.address}", key)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return where.unreachable(
                f"TLS certificate verify failed for {self.address} ({exc.verify_message}): "
                "is ssl_ca_certs the CA that signed the server's certificate, and does the "
                f"certificate name the host {self.host!r}",
                key,
            )
        if isinstance(exc, ssl.SSLError):
            return where.unreachable(
                f"TLS with {self.address} failed {action} it ({exc.reason or exc}): is that "
                "the server's TLS port (tls-port), and do ssl_* settings match the server's",
                key,
            )
        reason = exc.strerror or str(exc) or type(exc).__name__
        number = f"Error {exc.errno} " if exc.errno else "Error "
        return where.unreachable(f"{number}{action} {self.address}: {reason}", key)

    def _closed(self, detail: str = "") -> StoreError:
        return self.where.unreachable(
            f"Connection closed by server at {self.address}{detail}", self.key
        )

    def _reply_error(self, rest: bytes) -> StoreError:
        return self.where.reply_error(rest.decode("utf-8", "replace"), self.key)

    # -- sending ------------------------------------------------------------------------------

    def send(self, commands: Sequence[Sequence[Argument]]) -> None:
        """Send ``commands`` (a pipeline) without reading any reply.

        Raises:
            StoreConnectionError: If the connection broke.
            StoreTimeoutError: If the server stopped reading for ``timeout``.
        """
        pieces = encode(commands)
        try:
            if len(pieces) == 1:
                self._sock.sendall(pieces[0])
            elif self._tls:  # no sendmsg on TLS sockets (and no piece bound to a local)
                for index in range(len(pieces)):
                    self._sock.sendall(pieces[index])
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
            else:  # a line as long as the buffer with no end: refuse, never grow
                raise self.malformed(f"a line longer than {MAX_LINE} bytes without CRLF")
        try:
            count = self._sock.recv_into(self._view[self._end :])
        except OSError as exc:
            raise self._socket_error("reading from", exc) from exc
        if not count:
            raise self._closed()
        self._end += count

    def malformed(self, problem: str) -> MalformedReply:
        """The error for a reply that is not one the current command can have."""
        return self.where.malformed(problem, self.key)

    def _readline(self) -> bytes:
        searched = self._start
        while True:
            index = self._buffer.find(CRLF, searched, self._end)
            if index >= 0:
                line = bytes(self._view[self._start : index])
                self._start = index + 2
                return line
            searched = max(self._start, self._end - 1)  # CR may be the last byte so far
            offset = searched - self._start
            self._fill()  # compacts the buffer: the line starts at self._start again
            searched = self._start + offset

    def _read_small(self, count: int) -> bytes:
        while self._end - self._start < count:
            self._fill()
        data = bytes(self._view[self._start : self._start + count])
        self._start += count
        return data

    def _read_into(self, view: memoryview, before: int = 0, total: int = 0) -> None:
        """Fill ``view`` from the stream: buffered bytes first, then ``recv_into`` directly.

        ``before`` bytes of a value of ``total`` (``0``: just this view) arrived earlier: a
        stall says how many of the whole value did.

        Raises:
            StoreTimeoutError: If no byte arrived for ``timeout`` seconds (with how many did).
        """
        wanted = view.nbytes
        done = min(self._end - self._start, wanted)
        if done:
            view[:done] = self._view[self._start : self._start + done]
            self._start += done
        try:
            while done < wanted:
                count = self._sock.recv_into(view[done:])
                if not count:
                    raise self._closed(f" after {done} of {wanted} bytes")
                done += count
        except (TimeoutError, socket.timeout) as exc:
            raise self.where.stalled(before + done, total or wanted, self.key) from exc
        except OSError as exc:
            raise self._socket_error("reading from", exc) from exc

    def _skip_crlf(self) -> None:
        if self._read_small(2) != CRLF:
            raise self.malformed("a bulk string not followed by CRLF")

    def _read_bulk(self, length: int, prefix: int) -> Buffer:
        if length + 2 <= _READ_BUFFER:
            data = self._read_small(length + 2)
            if data[-2:] != CRLF:
                raise self.malformed("a bulk string not followed by CRLF")
            return data[:-2]
        # Byte ``prefix`` of the value on a 64-byte boundary, so that a payload behind a
        # ``prefix``-byte header is aligned as the serializer laid it out.
        view = aligned_buffer(length, prefix, _ALIGN)
        self._read_into(view)
        self._skip_crlf()
        return view

    def _header(self) -> tuple[int, bytes]:
        line = self._readline()
        if not line:
            raise self.malformed("an empty line")
        return line[0], line[1:]

    def _length(self, kind: int, rest: bytes, limit: int) -> int:
        """The declared length of a bulk string or array: ``-1`` (nil) or ``0..limit``."""
        what = "bulk string" if kind == 0x24 else "array"
        if not _number(rest):
            raise self.malformed(f"{what} length {_show(rest)} is not a number")
        length = int(rest)
        if length < -1:
            raise self.malformed(f"{what} length {length} is negative")
        if length > limit:
            unit = "bytes" if kind == 0x24 else "elements"
            raise self.malformed(f"{what} of {length} {unit} declared, more than {limit}")
        return length

    def _unexpected(self, kind: int, expected: str) -> MalformedReply:
        return self.malformed(f"expected {expected}, got a reply of type {_show(bytes([kind]))}")

    def read_reply(self, *, prefix: int = 0) -> Reply:
        """Read one reply. Large bulk strings come back as writable buffers, not copies.

        Args:
            prefix: For bulk replies of :data:`LARGE_REPLY` bytes or more: place byte
                ``prefix`` of the value at a 64-byte aligned address.

        Raises:
            StoreError: If the reply is an error (``StoreAuthError`` for the credentials).
        """
        reply = self._read_value(prefix)
        if isinstance(reply, StoreError):
            raise reply
        return reply

    def _read_value(self, prefix: int, depth: int = 0) -> Reply:
        kind, rest = self._header()
        if kind == 0x24:  # $ bulk string
            length = self._length(kind, rest, MAX_BULK)
            return None if length < 0 else self._read_bulk(length, prefix)
        if kind == 0x2B:  # + simple string
            return rest
        if kind == 0x3A:  # : integer
            if not _number(rest):
                raise self.malformed(f"integer {_show(rest)} is not a number")
            return int(rest)
        if kind == 0x2A:  # * array
            count = self._length(kind, rest, _MAX_ARRAY)
            if count > 0 and depth >= MAX_DEPTH:
                raise self.malformed(f"arrays nested more than {MAX_DEPTH} deep")
            if count < 0:
                return None
            return [self._read_value(prefix, depth + 1) for _ in range(count)]
        if kind == 0x2D:  # - error
            return self._reply_error(rest)
        raise self.malformed(f"unknown reply type {_show(bytes([kind]))}")

    def read_array_length(self) -> int | None:
        """Read the start of an array reply; return its length (``None`` for a nil array).

        Raises:
            StoreError: If the reply is an error.
            MalformedReply: If the reply is not an array (or is malformed).
        """
        kind, rest = self._header()
        if kind == 0x2A:
            count = self._length(kind, rest, _MAX_ARRAY)
            return None if count < 0 else count
        if kind == 0x2D:
            raise self._reply_error(rest)
        raise self._unexpected(kind, "an array")

    def read_bulk_into(self, view: memoryview, *, before: int = 0, total: int = 0) -> int:
        """Read a bulk string reply into the start of ``view``; return its length.

        Returns ``-1`` for a nil reply. ``before`` and ``total``: the string is a chunk of a
        value of ``total`` bytes, of which ``before`` arrived earlier (a stall counts them).

        Raises:
            Overflow: If the string is longer than ``view`` (the connection is then out of
                step with the server and must be closed).
            MalformedReply: If the reply is not a bulk string (or is malformed).
            StoreError: If the reply is an error.
        """
        kind, rest = self._header()
        if kind == 0x2D:
            raise self._reply_error(rest)
        if kind != 0x24:
            raise self._unexpected(kind, "a bulk string")
        length = self._length(kind, rest, MAX_BULK)
        if length < 0:
            return -1
        if length > view.nbytes:
            raise self.where.overflow(
                f"a bulk string of {length} bytes does not fit in the {view.nbytes} left",
                self.key,
            )
        self._read_into(view[:length], before, total)
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
            if isinstance(reply, StoreError):
                raise reply
        return replies

    def transaction(self, commands: Sequence[Sequence[Argument]]) -> list[Reply]:
        """Run ``commands`` in one ``MULTI``/``EXEC`` transaction; return their results.

        Raises:
            StoreError: The first error: a command refused while queued
                (the transaction is then discarded) or failed while executed.
        """
        self.send([("MULTI",), *commands, ("EXEC",)])
        queued = [self._read_value(0) for _ in range(len(commands) + 1)]
        results = self._read_value(0)
        for reply in queued:
            if isinstance(reply, StoreError):
                raise reply
        if isinstance(results, StoreError):
            raise results
        if not isinstance(results, list):
            raise self.where.rejected("the transaction was aborted (EXEC answered nil)", self.key)
        for reply in results:
            if isinstance(reply, StoreError):
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


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def ssl_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    """Build the TLS context of ``options`` (``None`` when ``ssl`` is off), as redis-py does.

    Raises:
        ValueError: If ``ssl_cert_reqs`` is not ``none``, ``optional`` or ``required``.
        OSError: If a certificate or key file cannot be read.
    """
    if not options.get("ssl"):
        return None
    reqs = options.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str):
        if reqs.lower() not in _CERT_REQS:
            raise ValueError(
                f"ssl_cert_reqs must be 'none', 'optional' or 'required', got {reqs!r}"
            )
        mode = _CERT_REQS[reqs.lower()]
    else:
        mode = ssl.VerifyMode(reqs)
    context = ssl.create_default_context()
    context.check_hostname = bool(options.get("ssl_check_hostname", mode != ssl.CERT_NONE))
    context.verify_mode = mode
    certfile = options.get("ssl_certfile")
    if certfile:
        password = options.get("ssl_password")
        context.load_cert_chain(
            certfile,
            options.get("ssl_keyfile"),
            password=(lambda: reveal(password) or "") if password is not None else None,
        )
    cafile, capath, cadata = (options.get(f"ssl_ca_{kind}") for kind in ("certs", "path", "data"))
    if cafile or capath or cadata:
        context.load_verify_locations(cafile, capath, cadata)
    if options.get("ssl_min_version") is not None:
        context.minimum_version = options["ssl_min_version"]
    if options.get("ssl_ciphers"):
        context.set_ciphers(options["ssl_ciphers"])
    return context


def open_socket(
    host: str,
    port: int,
    *,
    unix_socket_path: str | None = None,
    connect_timeout: float | None = None,
    timeout: float | None = None,
    context: ssl.SSLContext | None = None,
    keepalive: bool = False,
) -> socket.socket:
    """Connect to a Redis server; every wait is bounded.

    Connecting and the TLS handshake wait at most ``connect_timeout``; the socket returned
    has ``timeout`` set for every later send and receive.

    Raises:
        OSError: If connecting or the handshake failed or timed out (``ssl.SSLError`` for TLS).
    """
    sock: socket.socket
    if unix_socket_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(unix_socket_path)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    try:
        if unix_socket_path is None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host or None)
        sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return sock
