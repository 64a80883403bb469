"""Page reuse: a FileStore under /dev/shm writes new objects into the pages of evicted ones.

Puts, then evicts, a 100 MB array several times, with page reuse (the default) and without
(``page_pool_bytes=0``), and prints the time of each put; then the same for puts that
overwrite one key. With reuse, from the first reuse of a file on, a put costs about one
memcpy into pages that are already there; without it, every put faults fresh pages in.
Also shows that an array still in use is never overwritten: its pages are skipped.

Run: ``python examples/page_reuse_example.py [--size-mb 100] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from proxystore.store.file import FileStore, is_memory_file_system


def put_times(store: FileStore, data: np.ndarray, rounds: int) -> list[float]:
    """Put ``data`` ``rounds`` times, evicting each object before the next put."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        key = store.set(data)
        times.append(time.perf_counter() - start)
        assert np.array_equal(store.get(key), data)
        store.evict(key)
    return times


def overwrite_times(store: FileStore, data: np.ndarray, rounds: int) -> list[float]:
    """Put ``data`` under one key ``rounds`` times (each put replaces the previous object)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        store.set(data, key="same")
        times.append(time.perf_counter() - start)
    assert np.array_equal(store.get("same"), data)
    store.evict("same")
    return times


def show(label: str, times: list[float]) -> None:
    """Print each time and the median of all but the first (the pool is empty then)."""
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    cells = "  ".join(f"{1e3 * t:6.1f}" for t in times)
    print(f"  {label:<24} {cells}  ms   (median after the first: {1e3 * steady:6.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not is_memory_file_system("/dev/shm"):
        print("/dev/shm is not a memory file system here: page reuse does not apply")
        return
    data = np.random.default_rng(0).random(args.size_mb * 2**20 // 8)
    base = tempfile.mkdtemp(prefix="proxystore-page-reuse-", dir="/dev/shm")
    try:
        fresh = FileStore("fresh", store_dir=os.path.join(base, "a"), page_pool_bytes=0)
        reused = FileStore("reused", store_dir=os.path.join(base, "b"))
        print(f"put of a {args.size_mb} MB array, {args.rounds} times:")
        show("evict, fresh pages", put_times(fresh, data, args.rounds))
        show("evict, page reuse", put_times(reused, data, args.rounds))
        show("same key, fresh pages", overwrite_times(fresh, data, args.rounds))
        show("same key, page reuse", overwrite_times(reused, data, args.rounds))

        # An array still in use keeps its bytes: its file is skipped, never rewritten.
        key = reused.set(data)
        held = reused.get(key)
        reused.evict(key)
        other = reused.set(np.zeros_like(data))
        assert np.array_equal(held, data), "an array in use was overwritten"
        print("an array held across evict + put kept its bytes")
        del held
        reused.evict(other)
        fresh.close()
        reused.close()  # gives the kept pages back at once
        assert not any(name.startswith(".") for name in os.listdir(os.path.join(base, "b")))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
