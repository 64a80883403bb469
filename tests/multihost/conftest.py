"""Fixtures of the multi-host test bed (see tests/multihost/testbed.py).

``testbed`` builds the bed once for the tests of this directory (torn down after the last of
them, and checked to leave nothing behind), with Redis and a Dask scheduler on host a and two
Dask worker processes on each of hosts b and c, and two more hosts, d and e, idle until a test
uses them (the Redis Cluster tests resolve there); it skips (with the reason) where the bed
cannot be built: not root, no ``ip netns``, no ``unshare``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.multihost.testbed import TestBed, unavailable_reason


def require_testbed() -> None:
    """Skip the calling test with the reason the bed cannot be built here, if any."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="package")
def testbed() -> Iterator[TestBed]:
    require_testbed()
    with TestBed(hosts=("a", "b", "c", "d", "e")) as bed:
        bed.start_redis()
        bed.start_dask()
        yield bed
    leftovers = bed.leftovers()
    assert not leftovers, f"the test bed left {leftovers}"


@pytest.fixture(scope="module")
def bed_client(testbed: TestBed) -> Iterator[Any]:
    """A Dask client of the bed's cluster (closed after the module)."""
    client = testbed.dask_client()
    try:
        yield client
    finally:
        client.close()
