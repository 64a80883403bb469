"""The base class of layers: a backend that passes every call to the backend it wraps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from proxystore.store.backends.base import (
    Backend,
    Fetched,
    KeyInfo,
    Parts,
    announce_key,
    wait_for_key,
)

__all__ = ["Layer", "innermost"]


class Layer:
    """A backend wrapping ``inner``; subclasses override the calls their feature changes.

    Args:
        inner: The wrapped backend (or layer).
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    @property
    def owns_storage(self) -> bool:
        """Whether the wrapped storage is the store's own (as the wrapped backend says)."""
        return self.inner.owns_storage

    def put(self, key: str | None, parts: Parts) -> str:
        """Pass through."""
        return self.inner.put(key, parts)

    def put_batch(self, items: Sequence[tuple[str | None, Parts]]) -> list[str]:
        """Pass through."""
        return self.inner.put_batch(items)

    def get(self, key: str) -> Fetched:
        """Pass through."""
        return self.inner.get(key)

    def timestamp(self, key: str) -> float | None:
        """Pass through."""
        return self.inner.timestamp(key)

    def exists(self, key: str) -> bool:
        """Pass through."""
        return self.inner.exists(key)

    def exists_batch(self, keys: Sequence[str]) -> list[bool]:
        """Pass through."""
        return self.inner.exists_batch(keys)

    def evict(self, key: str) -> None:
        """Pass through."""
        self.inner.evict(key)

    def is_immutable(self, key: str) -> bool:
        """Pass through."""
        return self.inner.is_immutable(key)

    def clear(self) -> None:
        """Pass through."""
        self.inner.clear()

    def close(self) -> None:
        """Pass through."""
        self.inner.close()

    def scan(self) -> Iterator[KeyInfo]:
        """Pass through."""
        return self.inner.scan()

    def wait_for(self, key: str, timeout: float) -> bool:
        """Pass through (the wrapped backend's own wait, or polling its ``exists``)."""
        return wait_for_key(self.inner, key, timeout)

    def announce(self, key: str) -> None:
        """Pass through."""
        announce_key(self.inner, key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def innermost(backend: Backend) -> Backend:
    """Return the backend at the bottom of a stack of layers."""
    while isinstance(backend, Layer):
        backend = backend.inner
    return backend
