"""Resolve a pickled array proxy in a fresh process, without touching the data.

Run by :mod:`benchmarks.zero_copy_cases` as a fresh interpreter, in one of two modes; each
prints one JSON line of timings in seconds.

``python -m benchmarks.resolve_probe proxy SHAPE``
    Reads a pickled proxy on standard input. Imports numpy and proxystore, then times, in
    order: the first import of the file backend, :mod:`proxystore.store.file`
    (``import_s``, reported separately because a process pays it once, whatever it
    resolves); unpickling the proxy (``unpickle_s``); and :func:`proxystore.proxy.extract`
    (``resolve_s``): re-creating the store from the proxy's factory, mapping the file and
    rebuilding the array on the mapping. The array's shape is checked against SHAPE
    (comma-separated); its data is never read.

``python -m benchmarks.resolve_probe raw PATH NBYTES``
    The floor: the same mapping done by hand. Imports numpy, then times ``os.open``,
    ``os.fstat``, a private ``mmap`` of the whole file and ``numpy.frombuffer`` over its last
    NBYTES bytes (where the store lays out the array) as ``resolve_s``.
"""

from __future__ import annotations

import json
import pickle
import sys
import time


def _proxy(shape: tuple[int, ...]) -> dict[str, float]:
    import numpy as np

    import proxystore.proxy

    already = "proxystore.store.file" in sys.modules
    start = time.perf_counter()
    import proxystore.store.file  # the one-time import, timed on its own

    imported = time.perf_counter()
    data = sys.stdin.buffer.read()
    loaded = time.perf_counter()
    proxy = pickle.loads(data)
    unpickled = time.perf_counter()
    array = proxystore.proxy.extract(proxy)
    resolved = time.perf_counter()
    if type(array) is not np.ndarray or array.shape != shape:
        raise SystemExit(f"resolved {type(array).__name__} {getattr(array, 'shape', '')}")
    return {
        "import_s": imported - start,
        "unpickle_s": unpickled - loaded,
        "resolve_s": resolved - unpickled,
        "imported_before": float(already),
    }


def _raw(path: str, nbytes: int) -> dict[str, float]:
    import mmap
    import os

    import numpy as np

    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        mapping = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    array = np.frombuffer(mapping, dtype=np.float64, offset=size - nbytes)
    resolved = time.perf_counter()
    if array.nbytes != nbytes:
        raise SystemExit(f"mapped {array.nbytes} bytes, expected {nbytes}")
    return {"resolve_s": resolved - start}


def main(argv: list[str]) -> int:
    """Run one probe; see the module docstring."""
    if argv[:1] == ["proxy"] and len(argv) == 2:
        shape = tuple(int(n) for n in argv[1].split(",") if n)
        result = _proxy(shape)
    elif argv[:1] == ["raw"] and len(argv) == 3:
        result = _raw(argv[1], int(argv[2]))
    else:
        raise SystemExit("usage: resolve_probe proxy SHAPE | raw PATH NBYTES")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
