"""Layers: objects with the backend protocol that wrap another backend.

A feature that acts on the bytes of every store (timing, a signature (:class:`SigningLayer`), a
host-local cache, expiry) is written once as a :class:`Layer` and composed with any backend::

    backend = TimingLayer(FileBackend(directory), recorder)

:class:`Layer` passes every call through to the wrapped backend; a layer overrides the calls
its feature changes. The stack a store uses is ``store.backend``; the innermost backend is
:func:`innermost`. The layers a store's settings ask for (the host tier, then signing) are
stacked in one place, :mod:`proxystore.store.layers.compose`.
"""

from __future__ import annotations

from proxystore.store.layers.base import Layer, innermost
from proxystore.store.layers.signing import SigningLayer
from proxystore.store.layers.timing import TimingLayer

__all__ = ["Layer", "SigningLayer", "TimingLayer", "innermost"]
