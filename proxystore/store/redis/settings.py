"""Connection settings of ``RedisStore``: ``url=``, TLS (``ssl_*``), sockets, which client.

* :func:`check_options` checks every numeric setting (finite, in range, the right type) and
  :func:`check_ttl` the expiry, before anything connects: errors name the setting and the store.
* :func:`parse_url` reads ``redis://[[user]:password@]host[:port][/db]``,
  ``rediss://...`` (TLS) and ``unix:///path/to/socket[?db=N]``, as redis-py's ``from_url``.
* TLS takes redis-py's own ``ssl_*`` keywords (:data:`SSL_OPTIONS`) and runs on the store's
  fast client; an ``ssl_*`` keyword it does not know is an error, never silently ignored.

Passwords arrive as :class:`~proxystore.secret.Secret` and are unwrapped only here and in the
handshake of :mod:`~proxystore.store.redis._wire.connection`.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from proxystore.secret import Secret

__all__ = [
    "MAX_TIMEOUT",
    "MAX_TTL",
    "SSL_OPTIONS",
    "WIRE_OPTIONS",
    "check_options",
    "check_port",
    "check_ssl_options",
    "check_ttl",
    "parse_url",
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

MAX_TTL = 10**12
"""Longest ``ttl`` in seconds (about 31,700 years; Redis takes the expiry in milliseconds as a
64-bit number): ``None`` means never."""

MAX_TIMEOUT = 10**9
"""Longest socket timeout in seconds (about 31 years; ``None`` means no limit)."""


def uses_wire(redis_kwargs: dict[str, Any]) -> bool:
    """Return whether the built-in RESP client can honour every one of ``redis_kwargs``."""
    return all(name in WIRE_OPTIONS for name in redis_kwargs)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_ttl(ttl: object, where: str) -> None:
    """Check a ``ttl``: ``None``, or a finite number of seconds in ``(0, MAX_TTL]``.

    Raises:
        ValueError: If ``ttl`` is not a number (``bool`` included), not finite or out of range.
    """
    if ttl is None:
        return
    if not _is_number(ttl):
        raise ValueError(
            f"{where}: ttl must be a number of seconds or None, got {type(ttl).__name__}"
        )
    assert isinstance(ttl, (int, float))
    if not (math.isfinite(ttl) and 0 < ttl <= MAX_TTL):
        raise ValueError(
            f"{where}: ttl must be a finite number of seconds in (0, {MAX_TTL}], got {ttl!r} "
            "(None: objects never expire)"
        )


def check_port(port: object, where: str) -> None:
    """Check a TCP port: an ``int`` in ``1..65535``.

    Raises:
        TypeError: If ``port`` is not an ``int``.
        ValueError: If it is out of range.
    """
    if not _is_int(port):
        raise TypeError(f"{where}: port must be an int, got {type(port).__name__}")
    assert isinstance(port, int)
    if not 1 <= port <= 65535:
        raise ValueError(f"{where}: port must be in 1..65535, got {port}")


def _check_timeout(name: str, value: object, where: str) -> None:
    if value is None:
        return
    if not _is_number(value):
        raise TypeError(
            f"{where}: {name} must be a number of seconds or None, got {type(value).__name__}"
        )
    assert isinstance(value, (int, float))
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise ValueError(
            f"{where}: {name} must be a finite number of seconds in (0, {MAX_TIMEOUT}], got "
            f"{value!r} (None: no limit)"
        )


def _check_int(name: str, value: object, where: str, low: int, high: int | None) -> None:
    if not _is_int(value):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__}")
    assert isinstance(value, int)
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{where}: {name} must be {bound}, got {value}")


def check_options(options: dict[str, Any], where: str) -> None:
    """Check the numeric connection settings in ``options`` before anything connects.

    ``socket_timeout``, ``socket_connect_timeout``: ``None`` or a finite number of seconds in
    ``(0, MAX_TIMEOUT]``; ``db``: an ``int >= 0`` (the server's ``databases`` setting bounds it
    from above; the error for a database it lacks says so); ``max_connections`` (redis-py):
    an ``int >= 1``; ``health_check_interval`` (redis-py): a finite number ``>= 0``;
    ``socket_keepalive`` and ``ssl``: ``bool``. ``decode_responses=True`` is refused (values
    are bytes).

    Raises:
        TypeError: If a setting has the wrong type (the message names it and ``where``).
        ValueError: If a setting is not finite or out of range.
    """
    for name in ("socket_timeout", "socket_connect_timeout"):
        if name in options:
            _check_timeout(name, options[name], where)
    if "db" in options:
        _check_int("db", options["db"], where, 0, 2**31 - 1)
    if options.get("max_connections") is not None:
        _check_int("max_connections", options["max_connections"], where, 1, None)
    interval = options.get("health_check_interval")
    if interval is not None and not (
        _is_number(interval) and math.isfinite(interval) and interval >= 0
    ):
        raise ValueError(
            f"{where}: health_check_interval must be a finite number of seconds >= 0, got "
            f"{interval!r}"
        )
    for name in ("socket_keepalive", "ssl"):
        if name in options and not isinstance(options[name], bool):
            raise TypeError(f"{where}: {name} must be True or False, got {options[name]!r}")
    if options.get("decode_responses"):
        raise ValueError(
            f"{where}: decode_responses=True cannot be used: the store reads values as bytes"
        )


def parse_url(url: str) -> dict[str, Any]:
    """Return the settings in a Redis URL, as ``RedisStore`` keywords.

    Keys: ``hostname`` and ``port`` (or ``unix_socket_path``), and where the URL gives them
    ``username``, ``password`` (a :class:`~proxystore.secret.Secret`), ``db`` and ``ssl``.

    Strict: a URL with no host (``redis://``), a port out of range, a database that is not a
    plain number, a ``unix://`` URL with a host (``unix://relative/path``), a fragment or a
    query setting other than ``db`` is refused, never read as a default.

    Raises:
        TypeError: If ``url`` is not a ``str``.
        ValueError: If the scheme is not ``redis``, ``rediss`` or ``unix``, or a part is
            malformed (the message never repeats the URL, which may hold a password).
    """
    if not isinstance(url, str):
        raise TypeError(f"a Redis URL must be a str, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise ValueError(f"malformed Redis URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix") or not url[len(scheme) :].startswith("://"):
        raise ValueError(
            "a Redis URL must start with redis://, rediss:// or unix://, got "
            f"{(scheme + '://') if scheme else 'no scheme'}"
        )
    if "#" in url:
        raise ValueError(
            "malformed Redis URL: it has a '#' fragment (a '#' in a password must be written %23)"
        )
    try:
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number
        raise ValueError(f"malformed Redis URL ({exc})") from None
    settings: dict[str, Any] = {}
    if parts.username:
        settings["username"] = unquote(parts.username)
    if parts.password is not None:
        settings["password"] = Secret(unquote(parts.password))
    db: str | None = None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "db":
            raise ValueError(
                f"malformed Redis URL: unknown query setting {name!r} (only db= is understood; "
                "give other settings as RedisStore keywords)"
            )
        db = value
    if scheme == "unix":
        if parts.hostname or port is not None:
            raise ValueError(
                "malformed Redis URL: unix:// takes an absolute socket path, unix:///path/to/"
                "socket (three slashes), not a host"
            )
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            raise ValueError("malformed Redis URL: unix:// needs a socket path (unix:///path)")
        settings["unix_socket_path"] = path
    else:
        if not parts.hostname:
            raise ValueError(
                f"malformed Redis URL: {scheme}:// needs a host ({scheme}://host[:port][/db])"
            )
        if port == 0:
            raise ValueError("malformed Redis URL: the port must be in 1..65535, got 0")
        settings["hostname"] = unquote(parts.hostname)
        settings["port"] = port if port is not None else 6379
        path = parts.path.strip("/")
        if path:
            if db is not None:
                raise ValueError("malformed Redis URL: the database is given twice (path, db=)")
            db = path
        if scheme == "rediss":
            settings["ssl"] = True
    if db is not None:
        if not (db.isascii() and db.isdigit() and len(db) <= 10):
            raise ValueError(f"malformed Redis URL: the database must be a number, got {db!r}")
        settings["db"] = int(db)
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
