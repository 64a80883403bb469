"""Whether workers on other hosts can reach a store as it is configured. Engine-free.

A store made for one machine fails in a confusing way on a cluster: a ``RedisStore`` created
with ``hostname="localhost"`` makes every worker connect to *its own* machine, and a
``FileStore`` under ``/dev/shm`` or on a disk of the client's host is a different, empty
directory on every other node. The adapters call :func:`reachability_problems` with the hosts
their workers run on and warn (:class:`StoreReachabilityWarning`) before any task fails.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from proxystore.hosts import is_loopback

__all__ = [
    "StoreReachabilityWarning",
    "is_loopback",
    "is_this_host",
    "reachability_problems",
    "worker_host",
]

# File systems every node of a cluster can mount: a FileStore there is shared.
_SHARED_FILE_SYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "beegfs",
        "cifs",
        "smb3",
        "ceph",
        "cephfs",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.sshfs",
        "fuse.beegfs",
        "orangefs",
        "pvfs2",
        "panfs",
        "wekafs",
        "9p",
        "virtiofs",
    }
)


class StoreReachabilityWarning(UserWarning):
    """A store is configured so that workers on other hosts cannot reach its objects."""


def is_this_host(host: str) -> bool:
    """Return whether ``host`` (an address, or this machine's name) is this machine.

    An address is this machine's when a socket can be bound to it (nothing is sent anywhere);
    names other than this machine's own are taken as other hosts without asking a resolver.
    """
    if is_loopback(host):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower() in (socket.gethostname().lower(), os.uname().nodename.lower())
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def worker_host(address: str) -> str:
    """The host part of an engine's worker address (``tcp://10.0.0.2:40123`` -> ``10.0.0.2``)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    return parts.hostname or address


def _file_system(path: str) -> str | None:
    from proxystore.store.file import file_system_type

    return file_system_type(path)


def reachability_problems(store: Any, worker_hosts: Iterable[str]) -> list[str]:
    """Return why workers on ``worker_hosts`` cannot reach ``store`` (empty: no problem seen).

    Only workers on *other* hosts matter: on this host, a loopback address and a local
    directory work.

    Args:
        store: The store the adapter was given.
        worker_hosts: Host names or addresses of the engine's workers.
    """
    remote = sorted({host for host in worker_hosts if not is_this_host(host)})
    if not remote:
        return []
    where = f"{type(store).__name__} {getattr(store, 'name', '?')!r}"
    workers = ", ".join(remote[:3]) + (" ..." if len(remote) > 3 else "")
    problems = []
    hostname = getattr(store, "hostname", None)
    if isinstance(hostname, str) and is_loopback(hostname):
        problems.append(
            f"{where} connects to {hostname!r}, a loopback address: on the workers' hosts "
            f"({workers}) that means each worker's own machine, not this one. Create the "
            "store with an address of the Redis server that the workers can reach (and a "
            "server that listens there: bind and protected-mode in redis.conf)."
        )
    store_dir = getattr(store, "store_dir", None)
    if isinstance(store_dir, str):
        kind = _file_system(store_dir)
        if kind not in _SHARED_FILE_SYSTEMS:
            problems.append(
                f"{where} keeps its objects in {os.path.abspath(store_dir)!r} on a "
                f"{kind or 'local'} file system, which exists only on this host; workers on "
                f"{workers} would look in their own, different directory. A FileStore needs "
                "a directory shared by all hosts (NFS, Lustre, GPFS, ...); otherwise use a "
                "RedisStore (with host_cache= for one copy per host)."
            )
    return problems
