"""``RedisSettings``: the arguments of a ``RedisStore``, validated once.

:class:`RedisSettings` holds what a :class:`~proxystore.store.redis.store.RedisStore` was
created with (the server, the expiry, the chunk size, the connection settings of
``redis_kwargs``, the host tier and signing), checks every argument before anything
connects (errors name the option and the store), builds the backend and its layers
(:meth:`RedisSettings.build`), and is the store's description: :meth:`RedisSettings.kwargs`
re-creates an equal store in another process.

* ``url=`` is read by :func:`parse_url` (``redis://[[user]:password@]host[:port][/db]``,
  ``rediss://...`` for TLS, ``unix:///path/to/socket[?db=N]``, as redis-py's ``from_url``)
  into the other arguments, so a description never holds a URL.
* TLS takes redis-py's own ``ssl_*`` keywords
  (:data:`~proxystore.store.redis.backend.SSL_OPTIONS`) and runs on the store's fast client;
  an ``ssl_*`` keyword it does not know is an error, never silently ignored.

Passwords (``password``, ``ssl_password``, a URL's password) are kept as
:class:`~proxystore.secret.Secret`: no ``repr``, log line or error shows them.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

from proxystore.secret import Secret, wrap
from proxystore.store.codec import Codec
from proxystore.store.description import is_secret
from proxystore.store.redis._clients import HEADER
from proxystore.store.redis._cluster.backend import RedisClusterBackend
from proxystore.store.redis.backend import (
    DEFAULT_CHUNK_SIZE,
    REDIS_BULK_LIMIT,
    SSL_OPTIONS,
    WIRE_OPTIONS,
    RedisBackend,
    uses_wire,
)
from proxystore.store.settings import LayerSettings, StoreSettings

__all__ = ["MAX_DB", "MAX_TIMEOUT", "MAX_TTL", "RedisSettings", "parse_url"]

_SECRETS = ("password", "ssl_password")

MAX_TTL = 10**12
"""Longest ``ttl`` in seconds (about 31,700 years; Redis takes the expiry in milliseconds as a
64-bit number): ``None`` means never."""

MAX_TIMEOUT = 10**9
"""Longest socket timeout in seconds (about 31 years; ``None`` means no limit)."""

MAX_DB = 2**31 - 1
"""Largest database number (the server's ``databases`` setting bounds it further)."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_ttl(ttl: object, where: str) -> None:
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


def _check_port(port: object, where: str) -> None:
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


def _check_options(options: dict[str, Any], where: str) -> None:
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
        _check_int("db", options["db"], where, 0, MAX_DB)
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
        if int(db) > MAX_DB:
            raise ValueError(f"malformed Redis URL: the database must be 0..{MAX_DB}, got {db}")
        settings["db"] = int(db)
    return settings


def _check_ssl_options(options: dict[str, Any], where: str) -> None:
    """Reject ``ssl_*`` keywords the store does not know (instead of ignoring them).

    Raises:
        ValueError: If an unknown ``ssl_*`` keyword is present.
    """
    unknown = sorted(n for n in options if n.startswith("ssl_") and n not in SSL_OPTIONS)
    if unknown:
        raise ValueError(
            f"{where} does not support {', '.join(unknown)}; the TLS keywords it honours "
            f"are ssl=True and {', '.join(sorted(SSL_OPTIONS))}"
        )


def _check_chunk_size(chunk_size: object, where: str) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool):
        raise TypeError(f"{where}: chunk_size must be an int, got {type(chunk_size).__name__}")
    if not 0 < chunk_size <= REDIS_BULK_LIMIT - HEADER.size:
        raise ValueError(
            f"{where}: chunk_size must be in (0, {REDIS_BULK_LIMIT - HEADER.size}], got "
            f"{chunk_size}"
        )


def _check_cluster(cluster: object, options: dict[str, Any], where: str) -> None:
    """Check what a store on a Redis Cluster can use.

    Raises:
        TypeError: If ``cluster`` is not a ``bool``.
        ValueError: If the settings ask for a unix socket, a database other than 0, or an
            option the store's own client does not honour (a cluster store runs on it only).
    """
    if not isinstance(cluster, bool):
        raise TypeError(f"{where}: cluster must be True or False, got {cluster!r}")
    if options.get("unix_socket_path") is not None:
        raise ValueError(
            f"{where}: cluster=True needs a node's host and port (hostname=, port= or url=), "
            "not a unix socket: the other nodes are reached over TCP"
        )
    if options.get("db"):
        raise ValueError(
            f"{where}: a Redis Cluster has only database 0, got db={options['db']}: drop db= "
            "(or use a key prefix to keep stores apart)"
        )
    if not uses_wire(options):
        unknown = sorted(name for name in options if not uses_wire({name: options[name]}))
        raise ValueError(
            f"{where}: cluster=True runs on the store's own client, which does not support "
            f"{', '.join(unknown)}; drop them (it honours {', '.join(sorted(WIRE_OPTIONS))})"
        )


@dataclass(frozen=True, repr=False)
class RedisSettings(StoreSettings):
    """The arguments of a :class:`~proxystore.store.redis.store.RedisStore`, validated once.

    The fields are the store's constructor arguments (see there for their meaning), with
    ``url=`` read into ``hostname``, ``port`` and ``redis_kwargs`` (explicit arguments win
    over the URL's) and then dropped, passwords wrapped as :class:`~proxystore.secret.Secret`,
    and ``created_on`` set to this host when not given.

    Attributes:
        hostname: Redis server host (``None`` with a unix socket).
        port: Redis server port (``None`` with a unix socket).
        url: Only an input: always ``None`` once the settings exist.
        ttl: Seconds after which every key of an object expires (``None``: never).
        cache_size: Size of the store's LRU cache of deserialized objects.
        chunk_size: Largest payload written as one Redis value.
        created_on: Host name of the process that created the store.
        layers: The host tier and signing.
        redis_kwargs: Connection settings, as for :class:`redis.Redis`.
        cluster: The server is a node of a Redis Cluster: the store uses the whole cluster
            (and stripes large values over its masters).

    Raises:
        ValueError: If no server is named, the URL is malformed, ``ttl`` is not a finite
            number of seconds in ``(0, MAX_TTL]``, a numeric setting is not finite or out of
            range, or an ``ssl_*`` keyword is unknown. Each message names the setting and the
            store.
        TypeError: If a numeric setting is not a number (``ttl`` excepted: ``ValueError``).
    """

    store_type: ClassVar[str] = "RedisStore"
    hostname: str | None = None
    port: int | None = None
    url: str | Secret | None = None
    ttl: float | None = None
    cache_size: int = 16
    chunk_size: int = DEFAULT_CHUNK_SIZE
    created_on: str | None = None
    layers: LayerSettings = field(default_factory=LayerSettings)
    redis_kwargs: dict[str, Any] = field(default_factory=dict)
    cluster: bool = False

    def __post_init__(self) -> None:
        where = self.where
        options = dict(self.redis_kwargs)
        if self.url is not None:
            # A traceback's locals show ``self`` and ``url``: neither may show the URL, which
            # may hold the password.
            url = self.url
            object.__setattr__(self, "url", None)
            try:
                parsed = parse_url(url.reveal() if isinstance(url, Secret) else url)
            except (TypeError, ValueError) as exc:
                url = "<refused>"
                raise type(exc)(f"{where}: url= is refused: {exc}") from None
            url = "<parsed>"
            for name in ("hostname", "port"):
                value = parsed.pop(name, None)
                if getattr(self, name) is None:
                    object.__setattr__(self, name, value)
            options = {**parsed, **options}
        for secret in _SECRETS:
            if secret in options:
                options[secret] = wrap(options[secret])
        object.__setattr__(self, "redis_kwargs", options)
        unix = options.get("unix_socket_path") is not None
        if not unix and (self.hostname is None or self.port is None):
            raise ValueError(
                f"{where} needs the server: hostname= and port=, unix_socket_path=, or url="
            )
        if not unix:
            _check_port(self.port, where)
        _check_chunk_size(self.chunk_size, where)
        _check_ttl(self.ttl, where)
        _check_options(options, where)
        _check_ssl_options(options, where)
        if self.cluster is not False:
            _check_cluster(self.cluster, options, where)
        if not self.created_on:
            object.__setattr__(self, "created_on", socket.gethostname())

    @property
    def unix(self) -> bool:
        """Whether the server is reached over a unix socket."""
        return self.redis_kwargs.get("unix_socket_path") is not None

    def backend(self) -> RedisBackend | RedisClusterBackend:
        """The store's backend, without its layers (it connects on first use)."""
        if self.cluster:
            return RedisClusterBackend(
                self.hostname or "",
                self.port or 0,
                chunk_size=self.chunk_size,
                options=self.redis_kwargs,
                ttl=self.ttl,
                created_on=self.created_on,
                store_name=self.name,
                store_type=self.store_type,
            )
        return RedisBackend(
            self.hostname or "",
            self.port or 0,
            chunk_size=self.chunk_size,
            options=self.redis_kwargs,
            ttl=self.ttl,
            created_on=self.created_on,
            store_name=self.name,
            store_type=self.store_type,
        )

    def build(self) -> tuple[Any, Codec]:
        """The backend wrapped in the layers these settings ask for, and the codec to use.

        Raises:
            ValueError: If a setting of the host tier or signing is wrong (they check their
                own).
        """
        backend = self.backend()
        try:
            layered, codec, _ = self.layers.compose(
                backend,
                store_name=self.name,
                store_type=self.store_type,
                location=backend.address,
                store_timeout=backend.timeout,
            )
        except BaseException:
            backend.close()
            raise
        return layered, codec or Codec()

    def kwargs(self) -> dict[str, Any]:
        """The constructor arguments that re-create the store (``redis_kwargs`` flattened).

        A store on a unix socket has no ``hostname``/``port``; other fields left at their
        defaults are left out.
        """
        out = super().kwargs()
        out.pop("redis_kwargs", None)
        if self.unix:
            out.pop("hostname", None)
            out.pop("port", None)
        out.update(self.redis_kwargs)
        return out

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={'***' if is_secret(name) else repr(value)}"
            for name, value in self.kwargs().items()
        )
        return f"RedisSettings({self.name!r}, {shown})"
