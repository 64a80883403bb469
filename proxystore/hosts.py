"""Which host an address names: shared by the stores' errors and the adapters' warnings."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Return whether ``host`` names this machine's loopback (``localhost``, ``127.x``, ``::1``).

    Decided from the text alone: nothing is resolved or sent.
    """
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
