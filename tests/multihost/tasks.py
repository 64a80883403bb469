"""Task bodies for the multi-host tests (module-level: workers on the hosts import them)."""

from __future__ import annotations

import socket
import time
from typing import Any


def local_address(peer: str) -> str:
    """The address this process uses to reach ``peer`` (tells which host it runs on).

    A UDP ``connect`` only picks a route: no packet is sent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((peer, 9))
        return str(sock.getsockname()[0])


def sum_on_host(x: Any, index: int, peer: str) -> tuple[float, str]:
    """Sum a (possibly proxied) array plus ``index``; say on which host it ran."""
    import numpy as np

    return float(np.sum(x)) + index, local_address(peer)


def sum_or_error(x: Any, marker: str | None = None) -> tuple[str, str, float]:
    """Sum ``x``; on failure return the error instead, with the seconds until it came.

    With ``marker``, a file of that path is created once the outcome is known (the test
    process, which shares the file system with every host of the bed, can see it when the
    worker's host cannot reach the scheduler).
    """
    import numpy as np

    start = time.monotonic()
    try:
        outcome = "ok", repr(float(np.sum(x))), time.monotonic() - start
    except Exception as exc:
        outcome = "error", f"{type(exc).__name__}: {exc}", time.monotonic() - start
    if marker is not None:
        with open(marker, "w") as file:
            file.write(outcome[0])
    return outcome
