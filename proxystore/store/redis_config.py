"""Connection settings of ``RedisStore``: ``url=``, TLS (``ssl_*``), sockets, which client.

* :func:`parse_url` reads ``redis://[[user]:password@]host[:port][/db]``,
  ``rediss://...`` (TLS) and ``unix:///path/to/socket[?db=N]``, as redis-py's ``from_url``.
* :func:`ssl_context` builds an :class:`ssl.SSLContext` from redis-py's own ``ssl_*`` keywords
  (:data:`SSL_OPTIONS`), so TLS runs on the store's fast client
  (:mod:`proxystore.store.redis_wire`); an ``ssl_*`` keyword it does not know is an error,
  never silently ignored.
* :func:`open_socket` opens a TCP or unix socket, wraps it in TLS, and bounds every wait: the
  connection and the TLS handshake by the connect timeout, every later send and receive by
  the socket timeout.

Passwords arrive as :class:`~proxystore.secret.Secret` and are unwrapped only here and in the
handshake of :mod:`~proxystore.store.redis_wire`.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from proxystore.secret import Secret, reveal

__all__ = [
    "SSL_OPTIONS",
    "WIRE_OPTIONS",
    "check_ssl_options",
    "open_socket",
    "parse_url",
    "ssl_context",
    "uses_wire",
]

SSL_OPTIONS = frozenset(
    {
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
    }
)
"""The ``ssl_*`` keywords (redis-py's names and meanings) that the store understands."""

WIRE_OPTIONS = frozenset(
    {
        "password",
        "username",
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "client_name",
        "ssl",
        "unix_socket_path",
        *SSL_OPTIONS,
    }
)
"""The ``redis_kwargs`` the built-in RESP client honours. Any other option makes the store use
redis-py instead."""

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def uses_wire(redis_kwargs: dict[str, Any]) -> bool:
    """Return whether the built-in RESP client can honour every one of ``redis_kwargs``."""
    return all(name in WIRE_OPTIONS for name in redis_kwargs)


def parse_url(url: str) -> dict[str, Any]:
    """Return the settings in a Redis URL, as ``RedisStore`` keywords.

    Keys: ``hostname`` and ``port`` (or ``unix_socket_path``), and where the URL gives them
    ``username``, ``password`` (a :class:`~proxystore.secret.Secret`), ``db`` and ``ssl``.

    Raises:
        ValueError: If the scheme is not ``redis``, ``rediss`` or ``unix``, or a part is
            malformed (the message never repeats the URL, which may hold a password).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"RedisStore url= must start with redis://, rediss:// or unix://, got {scheme!r}://"
        )
    settings: dict[str, Any] = {}
    if parts.username:
        settings["username"] = unquote(parts.username)
    if parts.password is not None:
        settings["password"] = Secret(unquote(parts.password))
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    db: str | None = query.get("db")
    try:
        if scheme == "unix":
            if not parts.path:
                raise ValueError("RedisStore url= unix:// needs a socket path (unix:///path)")
            settings["unix_socket_path"] = unquote(parts.path)
        else:
            if not parts.hostname:
                raise ValueError(f"RedisStore url= {scheme}:// needs a host")
            settings["hostname"] = unquote(parts.hostname)
            settings["port"] = parts.port or 6379
            path = parts.path.strip("/")
            if path:
                db = path
            if scheme == "rediss":
                settings["ssl"] = True
        if db is not None:
            settings["db"] = int(db)
    except ValueError as exc:
        if "RedisStore" in str(exc):
            raise
        raise ValueError(
            f"RedisStore url= has a malformed port or database ({scheme}://)"
        ) from None
    return settings


def check_ssl_options(options: dict[str, Any]) -> None:
    """Reject ``ssl_*`` keywords the store does not know (instead of ignoring them).

    Raises:
        ValueError: If an unknown ``ssl_*`` keyword is present.
    """
    unknown = sorted(n for n in options if n.startswith("ssl_") and n not in SSL_OPTIONS)
    if unknown:
        raise ValueError(
            f"RedisStore does not support {', '.join(unknown)}; the TLS keywords it honours "
            f"are ssl=True and {', '.join(sorted(SSL_OPTIONS))}"
        )


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
