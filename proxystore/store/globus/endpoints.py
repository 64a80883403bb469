"""Globus endpoints of a ``GlobusStore``: where each site's files are, and which site is here.

The local endpoint is the first whose ``host_regex`` matches the host name in full, where the
host name is, in order: the store's ``hostname`` argument, the environment variable
``PROXYSTORE_GLOBUS_HOSTNAME`` (:data:`HOSTNAME_ENV`), or :func:`socket.gethostname`.
"""

from __future__ import annotations

import json
import os
import re
import uuid as _uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

__all__ = [
    "HOSTNAME_ENV",
    "EndpointsLike",
    "GlobusEndpoint",
    "GlobusEndpoints",
    "as_endpoints",
    "canonical",
]

HOSTNAME_ENV = "PROXYSTORE_GLOBUS_HOSTNAME"
"""Environment variable naming this process's host for endpoint matching (overrides
:func:`socket.gethostname`)."""

_ENDPOINT_FIELDS = ("endpoint_path", "local_path", "host_regex")


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


def as_endpoints(endpoints: EndpointsLike) -> GlobusEndpoints:
    """Return ``endpoints`` as :class:`GlobusEndpoints` (from a list or a dict).

    Raises:
        TypeError: If ``endpoints`` is a path or string (use :meth:`GlobusEndpoints.from_json`).
    """
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


def canonical(value: object) -> str:
    """Return a UUID in canonical form (anything else as a string)."""
    try:
        return str(_uuid.UUID(str(value)))
    except ValueError:
        return str(value)
