"""Task bodies for the host tier tests (module-level, so spawned processes import them)."""

from __future__ import annotations

import time
from typing import Any


def resolve_and_describe(proxy: Any, start_at: float = 0.0) -> dict[str, Any]:
    """Wait until ``start_at`` (so resolvers start together), resolve, and describe the array."""
    import numpy as np

    from proxystore.proxy import extract

    time.sleep(max(0.0, start_at - time.time()))
    array = extract(proxy)
    writable = bool(array.flags.writeable)
    if writable:
        array[0] = -1.0  # copy-on-write: private to this process
    return {
        "sum": float(np.sum(array[1:])),
        "first": float(array[0]),
        "writable": writable,
    }
