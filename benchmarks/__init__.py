"""ProxyStore's benchmark suite: every store, proxy and executor against its raw floor.

Run ``python -m benchmarks`` (``--quick`` for a short run, ``--list`` for the cases). See
``docs/benchmarks.rst`` for what each case measures and the latest full run.
"""
