"""Poll with a deadline instead of sleeping a fixed time.

A fixed sleep decides a result by luck (too short on a loaded machine, too long everywhere
else); :func:`wait_until` waits for the condition itself, bounded, and says what it waited for
when the deadline passes.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

__all__ = ["WaitTimeout", "wait_until"]

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The awaited condition did not hold before the deadline (fails the test)."""


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.005
) -> T:
    """Call ``predicate`` until it returns a true value, and return that value.

    Args:
        predicate: The condition, called at least once (and once more at the deadline).
        timeout: Seconds to wait at most.
        what: What is awaited, for the message (``"the key to expire"``).
        interval: Seconds between calls at first; it grows to at most 0.1 s.

    Raises:
        WaitTimeout: ``predicate`` stayed false for ``timeout`` seconds (the message names
            ``what``, the timeout and the last value seen).
    """
    deadline = time.monotonic() + timeout
    pause = interval
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.1)
    raise WaitTimeout(f"waited {timeout:g} s for {what}, in vain (last value: {value!r})")
