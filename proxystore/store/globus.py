"""``GlobusStore``: objects moved between sites by Globus transfers.

A user with data on two or more Globus-connected sites proxies an object at site A and resolves
it at site B. :meth:`GlobusStore.set` writes the object as a file in the local endpoint's
directory (under a temporary name, then renamed into place) and submits one Globus transfer task
from the local endpoint to each other endpoint (a Globus task has one source and one
destination). The key it returns carries the ids of those tasks, so ``get``, ``exists`` and
proxy resolution at any site first wait for the task that brings the file there, then read the
file from the local directory.

**Keys.** A key made by the store is hex digits only, in groups of 32::

    <object id><task id>[<task id>...]

The object id (128 random bits) names the file on every endpoint; each following group is the
id of one transfer task, one per destination endpoint, written as its UUID without dashes
(``7d3c...`` for ``7d3c....-....``). With a single endpoint the key is the object id alone.

Objects under store-made keys are immutable: setting a store-made key again is refused, and
``strict=True`` has nothing to revalidate for them (it warns and is ignored). A *custom* key
(``set(obj, key="results-7")``) is a file name; it cannot carry task ids, so ``set`` with a
custom key waits until every transfer has finished before returning. Custom keys can be
overwritten and ``strict`` works for them: it compares the local file's modification time.

**Which endpoint is local.** The local endpoint is the first whose ``host_regex`` matches
the host name in full, where the host name is, in order: the store's ``hostname`` argument, the
environment variable ``PROXYSTORE_GLOBUS_HOSTNAME``, or :func:`socket.gethostname`. The
``hostname`` argument does not travel with proxies (a proxy resolved elsewhere must find *that*
site's endpoint); the environment variable is the way to name the site of a process explicitly.

**Waiting and failures.** Waits poll ``get_task`` every ``polling_interval`` seconds for at
most ``timeout`` seconds. A task that ends ``FAILED`` raises
:class:`~proxystore.exceptions.StoreError` and one still running at the deadline raises
:class:`~proxystore.exceptions.StoreTimeoutError`; both name the task, its source and
destination endpoints and the key. Errors of globus-sdk are translated in one place
(``GlobusStore._call``): HTTP 401/403 and rejected refresh tokens become
:class:`~proxystore.exceptions.StoreAuthError` (run ``proxystore-globus-auth login``), network
failures :class:`~proxystore.exceptions.StoreConnectionError`, anything else
:class:`~proxystore.exceptions.StoreError`, always chained to the original.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import posixpath
import re
import socket
import threading
import time
import uuid as _uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, Literal, Protocol, TypeVar, Union

import globus_sdk

from proxystore.exceptions import (
    InvalidKeyError,
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
)
from proxystore.proxy import Proxy
from proxystore.serialize import Buffer
from proxystore.store.file import check_file_key
from proxystore.store.remote import RemoteStore

__all__ = [
    "HOSTNAME_ENV",
    "GlobusEndpoint",
    "GlobusEndpoints",
    "GlobusStore",
    "TransferClientLike",
]

T = TypeVar("T")

HOSTNAME_ENV = "PROXYSTORE_GLOBUS_HOSTNAME"
"""Environment variable naming this process's host for endpoint matching (overrides
:func:`socket.gethostname`)."""

_ENDPOINT_FIELDS = ("endpoint_path", "local_path", "host_regex")
SyncLevel = Literal["exists", "size", "mtime", "checksum"]
_SYNC_LEVELS = ("exists", "size", "mtime", "checksum")
_ID_HEX = 32
_STORE_MADE_KEY = re.compile(r"(?:[0-9a-f]{32}){2,}")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_, -]")
_REMEMBERED_TASKS = 4096
_LOGIN_HINT = "run `proxystore-globus-auth login` to log in to Globus again"


class TransferClientLike(Protocol):
    """What :class:`GlobusStore` needs of a transfer client (``globus_sdk.TransferClient``).

    Each method returns a response with ``response["field"]`` access to the JSON document
    Globus Transfer answers (``task_id`` for submissions, the task document for ``get_task``).
    """

    def submit_transfer(self, data: Any) -> Any:
        """Submit a :class:`globus_sdk.TransferData` document."""

    def submit_delete(self, data: Any) -> Any:
        """Submit a :class:`globus_sdk.DeleteData` document."""

    def get_task(self, task_id: Any) -> Any:
        """Return the document of the task ``task_id``."""


def _canonical_uuid(value: object, what: str) -> str:
    if isinstance(value, _uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str (a UUID), got {type(value).__name__}")
    try:
        return str(_uuid.UUID(value))
    except ValueError:
        raise ValueError(f"{what} must be a UUID, got {value!r}") from None


class GlobusEndpoint:
    """One Globus endpoint (collection) of a :class:`GlobusStore`, and where its files are.

    Args:
        uuid: The endpoint's (collection's) UUID as Globus shows it; stored in canonical
            lower-case form.
        endpoint_path: The store's directory as Globus sees it on this endpoint (the path in
            the Globus web app's file manager), for example ``/~/proxystore``.
        local_path: The same directory as the file system of the endpoint's own site sees it,
            for example ``/home/alice/proxystore``. ``~`` is expanded at that site, when a
            store uses the endpoint as its local one.
        host_regex: Regular expression that must match the *whole* host name of a process at
            this endpoint's site (``"login[0-9]+[.]cluster[.]edu"``), as a string or compiled.

    Raises:
        TypeError: If a field has the wrong type.
        ValueError: If ``uuid`` is not a UUID, a path is empty, or ``host_regex`` is not a
            valid regular expression.
    """

    __slots__ = ("_pattern", "endpoint_path", "host_regex", "local_path", "uuid")

    uuid: str
    endpoint_path: str
    local_path: str
    host_regex: str
    _pattern: re.Pattern[str]

    def __init__(
        self,
        uuid: str | _uuid.UUID,
        endpoint_path: str,
        local_path: str | os.PathLike[str],
        host_regex: str | re.Pattern[str],
    ) -> None:
        canonical = _canonical_uuid(uuid, "GlobusEndpoint uuid")
        where = f"GlobusEndpoint {canonical}"
        if not isinstance(endpoint_path, str):
            raise TypeError(
                f"{where}: endpoint_path must be a str, got {type(endpoint_path).__name__}"
            )
        if not endpoint_path:
            raise ValueError(f"{where}: endpoint_path must not be empty")
        if not isinstance(local_path, (str, os.PathLike)):
            raise TypeError(
                f"{where}: local_path must be a str or os.PathLike, got {type(local_path).__name__}"
            )
        local = os.fspath(local_path)
        if not isinstance(local, str):
            raise TypeError(f"{where}: local_path must be a text path, got {local!r}")
        if not local:
            raise ValueError(f"{where}: local_path must not be empty")
        if isinstance(host_regex, re.Pattern):
            if not isinstance(host_regex.pattern, str):
                raise TypeError(f"{where}: host_regex must be a text pattern, not bytes")
            pattern = host_regex
        elif isinstance(host_regex, str):
            try:
                pattern = re.compile(host_regex)
            except re.error as exc:
                raise ValueError(
                    f"{where}: host_regex {host_regex!r} is not a valid regular expression: {exc}"
                ) from None
        else:
            raise TypeError(
                f"{where}: host_regex must be a str or re.Pattern, got {type(host_regex).__name__}"
            )
        object.__setattr__(self, "uuid", canonical)
        object.__setattr__(self, "endpoint_path", endpoint_path)
        object.__setattr__(self, "local_path", local)
        object.__setattr__(self, "host_regex", pattern.pattern)
        object.__setattr__(self, "_pattern", pattern)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"GlobusEndpoint is immutable: cannot set {name!r}")

    def matches(self, hostname: str) -> bool:
        """Return whether ``host_regex`` matches all of ``hostname``."""
        return self._pattern.fullmatch(hostname) is not None

    def to_dict(self) -> dict[str, str]:
        """Return the endpoint's fields besides the UUID, as in the endpoints JSON file."""
        return {
            "endpoint_path": self.endpoint_path,
            "local_path": self.local_path,
            "host_regex": self.host_regex,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GlobusEndpoint):
            return NotImplemented
        return (self.uuid, self.to_dict()) == (other.uuid, other.to_dict())

    def __hash__(self) -> int:
        return hash((self.uuid, self.endpoint_path, self.local_path, self.host_regex))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.uuid, self.endpoint_path, self.local_path, self.host_regex))

    def __repr__(self) -> str:
        return (
            f"GlobusEndpoint(uuid={self.uuid!r}, endpoint_path={self.endpoint_path!r}, "
            f"local_path={self.local_path!r}, host_regex={self.host_regex!r})"
        )


class GlobusEndpoints:
    """The endpoints of a :class:`GlobusStore`: non-empty, one per UUID, in a fixed order.

    Look an endpoint up by UUID with ``endpoints[uuid]``; iterate for all of them.

    Args:
        endpoints: The endpoints (at least one).

    Raises:
        TypeError: If an item is not a :class:`GlobusEndpoint`.
        ValueError: If there are no endpoints or two share a UUID.
    """

    def __init__(self, endpoints: Iterable[GlobusEndpoint]) -> None:
        if isinstance(endpoints, (str, bytes, Mapping)):
            raise TypeError(
                f"GlobusEndpoints takes GlobusEndpoint objects, got a {type(endpoints).__name__}"
                "; use GlobusEndpoints.from_dict() for a {uuid: {...}} mapping"
            )
        self._endpoints: dict[str, GlobusEndpoint] = {}
        for endpoint in endpoints:
            if not isinstance(endpoint, GlobusEndpoint):
                raise TypeError(
                    f"GlobusEndpoints takes GlobusEndpoint objects, got {endpoint!r} "
                    f"({type(endpoint).__name__})"
                )
            if endpoint.uuid in self._endpoints:
                raise ValueError(f"GlobusEndpoints got endpoint UUID {endpoint.uuid} twice")
            self._endpoints[endpoint.uuid] = endpoint
        if not self._endpoints:
            raise ValueError("GlobusEndpoints needs at least one endpoint, got none")

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Mapping[str, Any]]) -> GlobusEndpoints:
        """Build the endpoints from ``{uuid: {endpoint_path, local_path, host_regex}}``.

        Raises:
            TypeError: If the mapping or an endpoint's description is not a mapping, or a
                field has the wrong type.
            ValueError: If a field is missing or unknown, or a value is invalid (see
                :class:`GlobusEndpoint`), or there are no endpoints.
        """
        if not isinstance(mapping, Mapping):
            raise TypeError(
                "GlobusEndpoints.from_dict() takes a mapping {uuid: {endpoint_path, local_path, "
                f"host_regex}}, got {type(mapping).__name__}"
            )
        endpoints = []
        for uuid, fields in mapping.items():
            if not isinstance(fields, Mapping):
                raise TypeError(
                    f"endpoint {uuid!r}: expected a mapping with {', '.join(_ENDPOINT_FIELDS)}, "
                    f"got {type(fields).__name__}"
                )
            missing = [name for name in _ENDPOINT_FIELDS if name not in fields]
            unknown = sorted(str(name) for name in fields if name not in _ENDPOINT_FIELDS)
            if missing:
                raise ValueError(f"endpoint {uuid!r}: missing field(s) {', '.join(missing)}")
            if unknown:
                raise ValueError(
                    f"endpoint {uuid!r}: unknown field(s) {', '.join(unknown)} (expected "
                    f"{', '.join(_ENDPOINT_FIELDS)})"
                )
            endpoints.append(
                GlobusEndpoint(
                    uuid,
                    fields["endpoint_path"],
                    fields["local_path"],
                    fields["host_regex"],
                )
            )
        return cls(endpoints)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> GlobusEndpoints:
        """Read endpoints from a JSON file ``{uuid: {endpoint_path, local_path, host_regex}}``.

        Raises:
            OSError: If the file cannot be read.
            ValueError: If it is not valid JSON or describes invalid endpoints (see
                :meth:`from_dict`).
        """
        with open(path, encoding="utf-8") as file:
            text = file.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"endpoints file {os.fspath(path)!r} is not valid JSON: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(
                f"endpoints file {os.fspath(path)!r} must hold a JSON object "
                f"{{uuid: {{endpoint_path, local_path, host_regex}}}}, got {type(data).__name__}"
            )
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, dict[str, str]]:
        """Return ``{uuid: {endpoint_path, local_path, host_regex}}``, for :meth:`from_dict`."""
        return {uuid: endpoint.to_dict() for uuid, endpoint in self._endpoints.items()}

    def get_by_host(self, hostname: str) -> GlobusEndpoint:
        """Return the first endpoint whose ``host_regex`` matches all of ``hostname``.

        Raises:
            ValueError: If no endpoint matches.
        """
        for endpoint in self._endpoints.values():
            if endpoint.matches(hostname):
                return endpoint
        regexes = ", ".join(f"{e.uuid}: {e.host_regex!r}" for e in self._endpoints.values())
        raise ValueError(
            f"no Globus endpoint's host_regex matches host {hostname!r} (endpoints: {regexes}). "
            f"Fix a host_regex, or name this process's site with the store's hostname= argument "
            f"or the {HOSTNAME_ENV} environment variable."
        )

    def __getitem__(self, uuid: str | _uuid.UUID) -> GlobusEndpoint:
        try:
            key = _canonical_uuid(uuid, "endpoint UUID")
        except ValueError:
            key = str(uuid)
        try:
            return self._endpoints[key]
        except KeyError:
            known = ", ".join(self._endpoints)
            raise KeyError(f"no endpoint with UUID {uuid!r} (known: {known})") from None

    def __contains__(self, uuid: object) -> bool:
        try:
            return _canonical_uuid(uuid, "endpoint UUID") in self._endpoints
        except (TypeError, ValueError):
            return False

    def __iter__(self) -> Iterator[GlobusEndpoint]:
        return iter(list(self._endpoints.values()))

    def __len__(self) -> int:
        return len(self._endpoints)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GlobusEndpoints):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GlobusEndpoints({list(self._endpoints.values())!r})"


EndpointsLike = Union[GlobusEndpoints, Sequence[GlobusEndpoint], Mapping[str, Mapping[str, Any]]]
"""What :class:`GlobusStore` accepts as ``endpoints``."""


def _as_endpoints(endpoints: EndpointsLike) -> GlobusEndpoints:
    if isinstance(endpoints, GlobusEndpoints):
        return endpoints
    if isinstance(endpoints, Mapping):
        return GlobusEndpoints.from_dict(endpoints)
    if isinstance(endpoints, (str, bytes, os.PathLike)):
        raise TypeError(
            "GlobusStore endpoints must be GlobusEndpoints, a list of GlobusEndpoint or a dict; "
            "to read a JSON file use GlobusEndpoints.from_json(path)"
        )
    return GlobusEndpoints(endpoints)


def _is_store_made(key: str) -> bool:
    return isinstance(key, str) and _STORE_MADE_KEY.fullmatch(key) is not None


def _canonical(value: object) -> str:
    try:
        return str(_uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def _pickles(obj: object) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:  # any failure means "does not travel"; the worker logs in itself
        return False
    return True


class GlobusStore(RemoteStore):
    """A store whose objects are files moved between Globus endpoints by transfer tasks.

    Args:
        name: Name of the store.
        endpoints: The endpoints: :class:`GlobusEndpoints`, a list of :class:`GlobusEndpoint`,
            or a dict ``{uuid: {endpoint_path, local_path, host_regex}}``.
        polling_interval: Seconds between two ``get_task`` calls while waiting for a transfer.
        sync_level: Globus ``sync_level`` of the transfers: ``"exists"``, ``"size"``,
            ``"mtime"`` or ``"checksum"``. Overwriting a custom key needs ``"mtime"`` or
            ``"checksum"`` (with ``"exists"`` an existing copy is never replaced).
        timeout: Most seconds to wait for one transfer before raising
            :class:`~proxystore.exceptions.StoreTimeoutError`.
        cache_size: Size of the per-process LRU cache of deserialized objects (``0``: off).
        transfer_client: A ``globus_sdk.TransferClient`` or any object with its
            ``submit_transfer``, ``submit_delete`` and ``get_task`` methods. ``None`` builds a
            client from the refresh tokens saved by ``proxystore-globus-auth login``. An
            injected client travels with proxies only if it pickles (with whatever credentials
            it holds); otherwise the process resolving a proxy logs in from its own tokens.
        hostname: Host name used to find the local endpoint; defaults to the environment
            variable ``PROXYSTORE_GLOBUS_HOSTNAME``, then :func:`socket.gethostname`. Not
            passed on to proxies.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range or no endpoint matches the host name.
        StoreAuthError: If ``transfer_client`` is ``None`` and there are no saved tokens.
        StoreError: If the local endpoint's directory cannot be created.
    """

    def __init__(
        self,
        name: str,
        *,
        endpoints: EndpointsLike,
        polling_interval: float = 1,
        sync_level: SyncLevel = "mtime",
        timeout: float = 60,
        cache_size: int = 16,
        transfer_client: TransferClientLike | None = None,
        hostname: str | None = None,
    ) -> None:
        super().__init__(name, cache_size=cache_size)
        self.endpoints = _as_endpoints(endpoints)
        for arg, value in (("polling_interval", polling_interval), ("timeout", timeout)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"GlobusStore {arg} must be a number, got {type(value).__name__}")
            if not value > 0:
                raise ValueError(f"GlobusStore {arg} must be positive, got {value!r}")
        if sync_level not in _SYNC_LEVELS:
            raise ValueError(
                f"GlobusStore sync_level must be one of {', '.join(_SYNC_LEVELS)}, "
                f"got {sync_level!r}"
            )
        if hostname is not None and not isinstance(hostname, str):
            raise TypeError(f"GlobusStore hostname must be a str, got {type(hostname).__name__}")
        self.polling_interval = polling_interval
        self.sync_level = sync_level
        self.timeout = timeout
        self.hostname = hostname or os.environ.get(HOSTNAME_ENV) or socket.gethostname()
        self.local_endpoint = self.endpoints.get_by_host(self.hostname)
        self.local_dir = os.path.abspath(os.path.expanduser(self.local_endpoint.local_path))
        try:
            os.makedirs(self.local_dir, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"GlobusStore {name!r} cannot create the directory {self.local_dir!r} of its "
                f"local endpoint {self.local_endpoint.uuid}: {exc}",
                store_name=name,
                store_type="GlobusStore",
            ) from exc
        if transfer_client is None:
            from proxystore.store.globus_auth import get_transfer_client

            try:
                self.transfer_client: TransferClientLike = get_transfer_client()
            except StoreAuthError as exc:
                raise StoreAuthError(
                    f"GlobusStore {name!r} cannot log in to Globus: {exc}",
                    store_name=name,
                    store_type="GlobusStore",
                ) from exc
            except StoreConnectionError as exc:
                raise StoreConnectionError(
                    f"GlobusStore {name!r} cannot log in to Globus: {exc}",
                    address=exc.address,
                    store_name=name,
                    store_type="GlobusStore",
                ) from exc
            self._client_travels = False  # built from this site's tokens: never shipped
        else:
            self.transfer_client = transfer_client
            self._client_travels = _pickles(transfer_client)
        self._lock = threading.Lock()
        # Tasks known to be over (SUCCEEDED), and tasks this store object submitted (so the
        # local endpoint is their source: the file is already here).
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._submitted: OrderedDict[str, None] = OrderedDict()
        self._elsewhere: OrderedDict[str, None] = OrderedDict()  # tasks to other endpoints
        # Delete tasks still possibly running, by file name (custom keys only: a later set of
        # the same name must not race them).
        self._deletes: dict[str, list[str]] = {}

    def factory_kwargs(self) -> dict[str, Any]:
        """Return the constructor arguments that re-create this store in another process.

        The endpoints travel as a plain dict; the transfer client only if it was injected and
        pickles. The ``hostname`` argument never travels.
        """
        kwargs: dict[str, Any] = {
            "endpoints": self.endpoints.to_dict(),
            "polling_interval": self.polling_interval,
            "sync_level": self.sync_level,
            "timeout": self.timeout,
            **super().factory_kwargs(),
        }
        if self._client_travels:
            kwargs["transfer_client"] = self.transfer_client
        return kwargs

    # -- keys and files -----------------------------------------------------------------------

    def _filename(self, key: str) -> str:
        return check_file_key(key, self)

    def _split_key(self, key: str) -> tuple[str, list[str]]:
        """Return the file name and the transfer task ids that ``key`` carries."""
        if _is_store_made(key):
            tasks = [
                str(_uuid.UUID(key[start : start + _ID_HEX]))
                for start in range(_ID_HEX, len(key), _ID_HEX)
            ]
            return key[:_ID_HEX], tasks
        return self._filename(key), []

    def _local_file(self, filename: str) -> str:
        return os.path.join(self.local_dir, filename)

    def _io_error(self, action: str, path: str, exc: OSError) -> StoreError:
        return StoreError(
            f"GlobusStore {self.name!r} could not {action} {path!r}: {exc.strerror or exc}",
            store_name=self.name,
            store_type="GlobusStore",
        )

    def _write(self, filename: str, parts: Sequence[Buffer]) -> None:
        path = self._local_file(filename)
        temp = os.path.join(self.local_dir, f".{filename}.{os.getpid()}.{self.new_key()[:8]}.tmp")
        try:
            with open(temp, "xb") as file:
                for part in parts:
                    file.write(part)
                file.flush()
                now = time.time_ns()
                os.utime(file.fileno(), ns=(now, now))
            os.replace(temp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise self._io_error("write", path, exc) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _read(self, filename: str) -> tuple[bytearray, float] | None:
        path = self._local_file(filename)
        try:
            with open(path, "rb", buffering=0) as file:
                stat = os.fstat(file.fileno())
                data = bytearray(stat.st_size)
                view = memoryview(data)
                done = 0
                while done < stat.st_size:
                    count = file.readinto(view[done:])
                    if not count:
                        raise StoreError(
                            f"GlobusStore {self.name!r}: {path!r} shrank while being read",
                            store_name=self.name,
                            store_type="GlobusStore",
                        )
                    done += count
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._io_error("read", path, exc) from exc
        return data, stat.st_mtime_ns / 1e9

    # -- Globus calls -------------------------------------------------------------------------

    def _describe(self, endpoint_id: object) -> str:
        endpoint_id = _canonical(endpoint_id)
        if endpoint_id in self.endpoints:
            return f"{endpoint_id} ({self.endpoints[endpoint_id].endpoint_path})"
        return endpoint_id

    def _call(self, action: str, subject: str, function: Callable[..., T], *args: Any) -> T:
        """Call the transfer client, translating globus-sdk errors into ProxyStore errors.

        Args:
            action: What the call does, for messages ("submitting a transfer ...").
            subject: What a 404 means is missing ("task 1234", "endpoint ...").
            function: The client method.
            args: Its arguments.
        """
        context = f"GlobusStore {self.name!r} failed {action}"
        try:
            return function(*args)
        except globus_sdk.AuthAPIError as exc:
            raise StoreAuthError(
                f"{context}: Globus Auth rejected the saved credentials (they may be revoked or "
                f"expired: HTTP {exc.http_status} {exc.code}: {exc.message}). To fix it, "
                f"{_LOGIN_HINT}.",
                store_name=self.name,
                store_type="GlobusStore",
            ) from exc
        except globus_sdk.GlobusAPIError as exc:
            detail = f"HTTP {exc.http_status} {exc.code}: {exc.message}"
            if exc.http_status in (401, 403):
                extra = (
                    " If you are logged in, check that your Globus identity may use these "
                    "endpoints (and has consented to their data_access scope: "
                    "proxystore-globus-auth login --collection UUID)."
                    if exc.http_status == 403
                    else ""
                )
                raise StoreAuthError(
                    f"{context}: Globus Transfer refused the credentials ({detail}). To fix "
                    f"it, {_LOGIN_HINT}.{extra}",
                    store_name=self.name,
                    store_type="GlobusStore",
                ) from exc
            if exc.http_status == 404:
                raise StoreError(
                    f"{context}: Globus Transfer knows no {subject} ({detail}).",
                    store_name=self.name,
                    store_type="GlobusStore",
                ) from exc
            raise StoreError(
                f"{context}: Globus Transfer answered {detail}",
                store_name=self.name,
                store_type="GlobusStore",
            ) from exc
        except globus_sdk.NetworkError as exc:
            address = str(getattr(self.transfer_client, "base_url", "transfer.api.globus.org"))
            raise StoreConnectionError(
                f"{context}: cannot reach Globus Transfer at {address}: {exc}",
                address=address,
                store_name=self.name,
                store_type="GlobusStore",
            ) from exc

    def _label(self) -> str:
        return _LABEL_UNSAFE.sub("_", f"ProxyStore {self.name}")[:128]

    def _remember(self, table: OrderedDict[str, None], task_id: str) -> None:
        with self._lock:
            table[task_id] = None
            table.move_to_end(task_id)
            while len(table) > _REMEMBERED_TASKS:
                table.popitem(last=False)

    def _submit_transfers(self, filenames: Sequence[str]) -> list[str]:
        """Submit one transfer of ``filenames`` from the local endpoint to each other one."""
        source = self.local_endpoint
        task_ids = []
        for destination in self.endpoints:
            if destination.uuid == source.uuid:
                continue
            data = globus_sdk.TransferData(
                source_endpoint=source.uuid,
                destination_endpoint=destination.uuid,
                label=self._label(),
                sync_level=self.sync_level,
                preserve_timestamp=True,
                notify_on_succeeded=False,
            )
            for filename in filenames:
                data.add_item(
                    posixpath.join(source.endpoint_path, filename),
                    posixpath.join(destination.endpoint_path, filename),
                )
            result = self._call(
                f"submitting a transfer from endpoint {self._describe(source.uuid)} to endpoint "
                f"{self._describe(destination.uuid)}",
                f"endpoint {source.uuid} or {destination.uuid} (or no access to it)",
                self.transfer_client.submit_transfer,
                data,
            )
            task_id = str(result["task_id"])
            try:
                task_id = str(_uuid.UUID(task_id))
            except ValueError:
                raise StoreError(
                    f"GlobusStore {self.name!r}: Globus Transfer returned task id {task_id!r}, "
                    "which is not a UUID and cannot be carried in a key",
                    store_name=self.name,
                    store_type="GlobusStore",
                ) from None
            self._remember(self._submitted, task_id)
            task_ids.append(task_id)
        return task_ids

    def _wait(
        self, task_ids: Sequence[str], key: str, *, arriving_only: bool, raise_failed: bool
    ) -> None:
        """Wait until the transfer tasks are over.

        Args:
            task_ids: The tasks.
            key: The key they belong to, for messages.
            arriving_only: Wait only for tasks whose destination is the local endpoint (reads);
                otherwise for all of them (writes with a custom key, evict: a copy still being
                written would outlive a delete).
            raise_failed: Raise if a task failed; otherwise a failed task counts as over.

        Raises:
            StoreError: If ``raise_failed`` and a task failed.
            StoreTimeoutError: If a task is still running after ``timeout`` seconds.
        """
        local = self.local_endpoint.uuid
        with self._lock:
            pending = [
                task_id
                for task_id in task_ids
                if task_id not in self._finished
                and not (
                    arriving_only and (task_id in self._submitted or task_id in self._elsewhere)
                )
            ]
        if not pending:
            return
        deadline = time.monotonic() + self.timeout
        last: dict[str, Any] = {}
        while True:
            for task_id in list(pending):
                task = self._call(
                    f"checking Globus task {task_id} of key {key!r}",
                    f"task {task_id} (it belongs to key {key!r})",
                    self.transfer_client.get_task,
                    task_id,
                )
                status = task["status"]
                if arriving_only and _canonical(task.get("destination_endpoint_id")) != local:
                    self._remember(self._elsewhere, task_id)  # it brings nothing here
                    pending.remove(task_id)
                elif status == "SUCCEEDED":
                    self._remember(self._finished, task_id)
                    pending.remove(task_id)
                elif status == "FAILED":
                    if raise_failed:
                        raise self._failed(task_id, task, key)
                    pending.remove(task_id)
                else:
                    last[task_id] = task
            if not pending:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out(pending[0], last[pending[0]], key)
            time.sleep(min(self.polling_interval, remaining))

    def _route(self, task: Any) -> str:
        source = task.get("source_endpoint_id")
        destination = task.get("destination_endpoint_id")
        return f"from endpoint {self._describe(source)} to endpoint {self._describe(destination)}"

    def _failed(self, task_id: str, task: Any, key: str) -> StoreError:
        fatal = task.get("fatal_error") or {}
        reason = (
            (fatal.get("code"), fatal.get("description"))
            if isinstance(fatal, Mapping)
            else (None, None)
        )
        why = ": ".join(str(part) for part in reason if part) or str(
            task.get("nice_status_details") or task.get("nice_status") or "no reason given"
        )
        return StoreError(
            f"GlobusStore {self.name!r}: Globus transfer task {task_id} {self._route(task)} "
            f"FAILED ({why}): the object of key {key!r} did not reach endpoint "
            f"{self._describe(task.get('destination_endpoint_id'))}. Details: "
            f"https://app.globus.org/activity/{task_id}",
            store_name=self.name,
            store_type="GlobusStore",
        )

    def _timed_out(self, task_id: str, task: Any, key: str) -> StoreTimeoutError:
        nice = task.get("nice_status")
        status = f"{task.get('status')}" + (f", {nice}" if nice else "")
        return StoreTimeoutError(
            f"GlobusStore {self.name!r} waited {self.timeout} s for Globus transfer task "
            f"{task_id} {self._route(task)} of key {key!r}; it is still {status}. "
            f"See https://app.globus.org/activity/{task_id}, and raise the store's timeout if "
            "transfers take longer.",
            store_name=self.name,
            store_type="GlobusStore",
        )

    def _wait_for_deletes(self, filenames: Iterable[str]) -> None:
        for filename in filenames:
            with self._lock:
                task_ids = self._deletes.pop(filename, [])
            if task_ids:
                self._wait(task_ids, filename, arriving_only=False, raise_failed=False)

    # -- writing ------------------------------------------------------------------------------

    def _put(self, items: Sequence[tuple[str, Sequence[Buffer]]], *, wait: bool) -> list[str]:
        """Write the files, submit their transfers, and return the transfer task ids."""
        for filename, parts in items:
            self._write(filename, parts)
        filenames = list(dict.fromkeys(filename for filename, _ in items))
        task_ids = self._submit_transfers(filenames)
        if wait:
            self._wait(task_ids, ", ".join(filenames), arriving_only=False, raise_failed=True)
        return task_ids

    def _custom_filename(self, key: str) -> str:
        if _is_store_made(key):
            raise InvalidKeyError(
                f"GlobusStore {self.name!r} cannot set key {key!r}: it is a store-made key, "
                "whose object is immutable (the key names the transfers that copied it). Set "
                "the new object without a key, or under a custom key.",
                key=key,
                store_name=self.name,
                store_type="GlobusStore",
            )
        return self._filename(key)

    def set(self, obj: Any, *, key: str | None = None, serialize: bool = True) -> str:
        """Write ``obj`` here, start its transfers to the other endpoints, and return its key.

        Without ``key`` the new key carries the transfer task ids and ``set`` returns at once;
        with a custom ``key`` it waits for the transfers (see the module documentation).

        Raises:
            InvalidKeyError: If ``key`` is a store-made key or not a valid file name.
            StoreError: If the file cannot be written or (custom key) a transfer failed.
            StoreTimeoutError: If (custom key) a transfer did not finish within ``timeout``.
        """
        return self.set_batch([obj], keys=[key], serialize=serialize)[0]

    def set_batch(
        self,
        objs: Sequence[Any],
        *,
        keys: Sequence[str | None] | None = None,
        serialize: bool = True,
    ) -> list[str]:
        """Store the objects with one transfer task per destination endpoint for all of them.

        Every store-made key of the batch carries the same task ids. If any key is custom, the
        call waits for the transfers.

        Raises:
            ValueError: If ``keys`` has a different length than ``objs``.
        """
        if keys is None:
            keys = [None] * len(objs)
        elif len(keys) != len(objs):
            raise ValueError(f"set_batch got {len(objs)} objects but {len(keys)} keys")
        if not objs:
            return []
        items = []
        custom = []
        for obj, key in zip(objs, keys):
            if key is None:
                filename = self.new_key()
            else:
                filename = self._custom_filename(key)
                custom.append(filename)
            items.append((filename, self.parts_of(obj, serialize=serialize)))
        self._wait_for_deletes(custom)
        for key in keys:
            if key is not None:
                self.cache.evict(key)
        start = time.perf_counter() if self._stats is not None else 0.0
        task_ids = self._put(items, wait=bool(custom))
        suffix = "".join(_uuid.UUID(task_id).hex for task_id in task_ids)
        final = [
            key if key is not None else filename + suffix for key, (filename, _) in zip(keys, items)
        ]
        if self._stats is not None:
            elapsed = time.perf_counter() - start
            for key in final:
                self._stats.record(key, "transfer", elapsed)
        return final

    def set_bytes(self, key: str, data: Buffer) -> None:
        """Write ``data`` under the custom ``key`` and wait for its transfers."""
        self.set_parts(key, [data])

    def set_parts(self, key: str, parts: Sequence[Buffer]) -> None:
        """Write the pieces under the custom ``key`` and wait for its transfers."""
        filename = self._custom_filename(key)
        self._wait_for_deletes([filename])
        self.cache.evict(key)
        self._put([(filename, parts)], wait=True)

    # -- reading ------------------------------------------------------------------------------

    def get_bytes_with_timestamp(self, key: str) -> tuple[Buffer, float] | None:
        """Wait for the transfer that brings ``key`` here, then read the local file."""
        filename, task_ids = self._split_key(key)
        self._wait(task_ids, key, arriving_only=True, raise_failed=True)
        return self._read(filename)

    def get_bytes(self, key: str) -> Buffer | None:
        """Return the bytes of ``key`` (after its transfer), or ``None`` if it is missing."""
        fetched = self.get_bytes_with_timestamp(key)
        return None if fetched is None else fetched[0]

    def get_timestamp(self, key: str) -> float:
        """Return the modification time of ``key``'s local file (after its transfer).

        Raises:
            KeyError: If the key is missing.
        """
        filename, task_ids = self._split_key(key)
        self._wait(task_ids, key, arriving_only=True, raise_failed=True)
        try:
            return os.stat(self._local_file(filename)).st_mtime_ns / 1e9
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        """Return whether ``key``'s file is here, after waiting for its transfer."""
        filename, task_ids = self._split_key(key)
        self._wait(task_ids, key, arriving_only=True, raise_failed=True)
        return os.path.exists(self._local_file(filename))

    def get(
        self,
        key: str,
        *,
        deserialize: bool = True,
        strict: bool = False,
        default: Any = None,
    ) -> Any:
        """Return the object under ``key`` (see :meth:`Store.get`), waiting for its transfer.

        ``strict=True`` with a store-made key warns and is ignored: such objects never change.

        Raises:
            StoreError: If the transfer that brings the object here failed.
            StoreTimeoutError: If it did not finish within ``timeout`` seconds.
        """
        if strict and _is_store_made(key):
            self._warn_strict(key)
            strict = False
        return super().get(key, deserialize=deserialize, strict=strict, default=default)

    def is_cached(self, key: str, *, strict: bool = False) -> bool:
        """Return whether ``key`` is cached here (``strict`` only matters for custom keys)."""
        return super().is_cached(key, strict=strict and not _is_store_made(key))

    def proxy(
        self,
        obj: Any = None,
        *,
        key: str | None = None,
        serialize: bool = True,
        evict: bool = False,
        strict: bool = False,
        **kwargs: Any,
    ) -> Proxy:
        """Return a proxy of ``obj`` or of ``key`` (see :meth:`Store.proxy`).

        ``strict=True`` warns and is dropped when the proxy's key is store-made.
        """
        new_store_made = obj is not None and key is None
        if strict and (new_store_made or (key is not None and _is_store_made(key))):
            self._warn_strict(key or "<new key>")
            strict = False
        return super().proxy(
            obj, key=key, serialize=serialize, evict=evict, strict=strict, **kwargs
        )

    def _warn_strict(self, key: str) -> None:
        warnings.warn(
            f"GlobusStore {self.name!r}: objects under store-made keys are immutable (each set "
            f"makes a new key), so strict=True has no effect for key {key!r}. Use a custom key "
            "for objects you overwrite.",
            UserWarning,
            stacklevel=3,
        )

    # -- evicting -----------------------------------------------------------------------------

    def evict(self, key: str) -> None:
        """Delete ``key``'s file here and, by Globus delete tasks, on every other endpoint.

        Waits first for the key's transfers (a copy still being written would outlive the
        delete), but not for the delete tasks: copies elsewhere vanish when they finish. A
        missing key is not an error.

        Raises:
            StoreTimeoutError: If a transfer of the key is still running after ``timeout``.
        """
        filename, task_ids = self._split_key(key)
        self._wait(task_ids, key, arriving_only=False, raise_failed=False)
        path = self._local_file(filename)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._io_error("delete", path, exc) from exc
        delete_ids = []
        for endpoint in self.endpoints:
            if endpoint.uuid == self.local_endpoint.uuid:
                continue
            data = globus_sdk.DeleteData(
                endpoint=endpoint.uuid,
                label=self._label(),
                ignore_missing=True,
                notify_on_succeeded=False,
            )
            data.add_item(posixpath.join(endpoint.endpoint_path, filename))
            result = self._call(
                f"deleting {filename!r} on endpoint {self._describe(endpoint.uuid)}",
                f"endpoint {endpoint.uuid} (or no access to it)",
                self.transfer_client.submit_delete,
                data,
            )
            delete_ids.append(str(result["task_id"]))
        if delete_ids and not _is_store_made(key):
            with self._lock:
                self._deletes.setdefault(filename, []).extend(delete_ids)

    def cleanup(self) -> None:
        """Clear this process's cache. Objects stay on the endpoints until evicted."""
        self.cache.clear()

    def __repr__(self) -> str:
        return (
            f"GlobusStore(name={self.name!r}, local_endpoint={self.local_endpoint.uuid!r}, "
            f"endpoints={len(self.endpoints)})"
        )
