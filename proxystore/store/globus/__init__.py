"""The Globus store: objects moved between sites by Globus transfers (imports ``globus_sdk``).

Every part of the store is in this package:

* :mod:`~proxystore.store.globus.store`: :class:`GlobusStore` and its :class:`GlobusFactory`;
* :mod:`~proxystore.store.globus.settings`: :class:`GlobusSettings`, its arguments validated
  once, which build the backend and its layers;
* :mod:`~proxystore.store.globus.backend`: the byte-level ``GlobusBackend`` (files in the
  local endpoint's directory, copied to the others by transfer tasks);
* :mod:`~proxystore.store.globus.endpoints`: :class:`GlobusEndpoint` and
  :class:`GlobusEndpoints`, which users build to say where each site's files are;
* ``_keys`` (keys that carry their transfer task ids) and ``_tasks`` (submitting and waiting
  for tasks, translating globus-sdk's errors), private.

Logging in to Globus is a command-line program, ``proxystore-globus-auth``
(:mod:`proxystore.cli.globus_login`); a store made without a ``transfer_client`` uses the tokens
it saved (:mod:`proxystore.store.globus.tokens`).
"""

from __future__ import annotations

from proxystore.store.globus._tasks import SyncLevel, TransferClientLike
from proxystore.store.globus.endpoints import (
    HOSTNAME_ENV,
    EndpointsLike,
    GlobusEndpoint,
    GlobusEndpoints,
)
from proxystore.store.globus.settings import GlobusSettings
from proxystore.store.globus.store import GlobusFactory, GlobusStore

__all__ = [
    "HOSTNAME_ENV",
    "EndpointsLike",
    "GlobusEndpoint",
    "GlobusEndpoints",
    "GlobusFactory",
    "GlobusSettings",
    "GlobusStore",
    "SyncLevel",
    "TransferClientLike",
]

# The public path of the store (its description's type path, its factory's pickle), as
# httpx names its public classes by the package that exports them.
GlobusStore.__module__ = __name__
GlobusFactory.__module__ = __name__
