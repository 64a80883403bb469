"""Adapters that make workflow executors pass large arguments by proxy.

Imported as ``proxystore.integrations``. Each engine lives in its own module and imports its
engine (dask, parsl) only when that module is imported.
"""
