"""Measure the peak memory of one round trip through a store, in a fresh process.

Run by :mod:`benchmarks.memory_cases` as ``python -m benchmarks.memory_probe KIND SIZE`` with
the store's constructor arguments as JSON in ``PROXYSTORE_BENCH_STORE``. It prints one JSON
line: ``{"baseline": ..., "peak": ..., "size": ...}`` in bytes.

The process imports everything and does a small round trip first, so the baseline includes
the interpreter, numpy, the store and its connections. Then it resets the kernel's high-water
mark of its resident set (``/proc/self/clear_refs``), makes a float64 array of SIZE bytes,
puts it, gets it back (cache off), reads every element of the result and reads the
high-water mark (``VmHWM``). Peak above the baseline counts the array itself, so a round trip
that makes one copy peaks at 2x its size. Pages of a memory-mapped file count too, though
they are shared with the file system's page cache rather than a private copy.
Where the high-water mark cannot be reset, ``getrusage`` is used instead.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys

import numpy as np

from proxystore.store import init_store, unregister_store


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> int:
    """Run one probe; see the module docstring."""
    kind, size = argv[0], int(argv[1])
    kwargs = json.loads(os.environ.get("PROXYSTORE_BENCH_STORE", "{}"))
    name = f"memory-probe-{os.getpid()}"
    store = init_store(kind, name, **kwargs)
    try:
        warm = store.set(np.ones(1024))
        store.get(warm)
        store.evict(warm)
        gc.collect()
        exact = _reset_peak() and _status("VmHWM") is not None
        baseline = _status("VmRSS") if exact else _maxrss()
        assert baseline is not None
        array = np.random.default_rng(0).random(size // 8)
        key = store.set(array)
        got = store.get(key)
        # Use the result, as a task would: a memory-mapped result only counts once touched.
        # (Compared element by element: a sum depends on the buffer's alignment.)
        assert np.array_equal(got, array)
        peak = _status("VmHWM") if exact else _maxrss()
        store.evict(key)
        print(json.dumps({"baseline": baseline, "peak": peak, "size": array.nbytes}))
    finally:
        store.cleanup()
        unregister_store(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
