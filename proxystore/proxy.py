"""The lazy, transparent proxy and the helpers that inspect it.

A :class:`Proxy` behaves like the object its factory returns (``isinstance``, operators, numpy
functions, context managers, ...). It calls the factory on first use and keeps the result.
Pickling a proxy pickles only its factory: the unpickled proxy is unresolved and calls the
factory again, in the new process, on first use.

Everything that belongs to the proxy rather than the wrapped object lives in dunder names
(``__factory__``, ``__wrapped__``, ``__resolved__``) or in the module-level helpers below, so
nothing clashes with the wrapped object's own attributes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, TypeVar

import lazy_object_proxy

from proxystore.factory import Factory

__all__ = ["Proxy", "extract", "get_factory", "get_key", "is_resolved", "resolve", "resolve_async"]

T = TypeVar("T")


def _proxy_trampoline(factory: Factory[Any]) -> Proxy:
    """Rebuild a proxy from its factory when unpickling."""
    return Proxy(factory)


class Proxy(lazy_object_proxy.Proxy):  # type: ignore[misc]
    """A lazy object proxy that resolves its target with a :class:`~proxystore.factory.Factory`.

    Args:
        factory: The factory that produces the target object.

    Raises:
        TypeError: If ``factory`` is not a :class:`~proxystore.factory.Factory`.
    """

    __slots__ = ()

    def __init__(self, factory: Factory[Any]) -> None:
        # The MRO test is the fast path; isinstance() also admits ABC-registered factories.
        if Factory not in type(factory).__mro__ and not isinstance(factory, Factory):
            raise TypeError(
                f"Proxy needs a proxystore.factory.Factory, got {type(factory).__name__}; "
                "wrap a plain callable with proxystore.factory.LambdaFactory"
            )
        super().__init__(factory)

    def __reduce__(self) -> tuple[Callable[[Factory[Any]], Proxy], tuple[Factory[Any]]]:
        return _proxy_trampoline, (object.__getattribute__(self, "__factory__"),)

    def __reduce_ex__(
        self, protocol: object
    ) -> tuple[Callable[[Factory[Any]], Proxy], tuple[Factory[Any]]]:
        return self.__reduce__()

    # lazy-object-proxy forwards neither of these: without them ``complex(p)`` fails (or, for
    # numpy complex scalars, silently drops the imaginary part), ``math.trunc(p)`` fails, and
    # ``math.floor``/``math.ceil`` detour through ``float`` (wrong or OverflowError for big ints).

    def __complex__(self) -> complex:
        return complex(self.__wrapped__)

    def __trunc__(self) -> Any:
        return math.trunc(self.__wrapped__)

    def __floor__(self) -> Any:
        return math.floor(self.__wrapped__)

    def __ceil__(self) -> Any:
        return math.ceil(self.__wrapped__)


def _check(proxy: object) -> Proxy:
    if not isinstance(proxy, Proxy):
        raise TypeError(f"expected a proxystore Proxy, got {type(proxy).__name__}")
    return proxy


def get_factory(proxy: Proxy) -> Factory[Any]:
    """Return the factory of ``proxy`` without resolving it."""
    factory: Factory[Any] = object.__getattribute__(_check(proxy), "__factory__")
    return factory


def is_resolved(proxy: Proxy) -> bool:
    """Return whether ``proxy`` has already called its factory."""
    return bool(object.__getattribute__(_check(proxy), "__resolved__"))


def resolve(proxy: Proxy) -> None:
    """Resolve ``proxy`` now (no-op if it already is)."""
    _check(proxy).__wrapped__  # noqa: B018 - touching __wrapped__ resolves the proxy


def extract(proxy: Proxy) -> Any:
    """Return the plain object that ``proxy`` stands for, resolving it if needed."""
    return _check(proxy).__wrapped__


def resolve_async(proxy: Proxy) -> None:
    """Begin resolving ``proxy`` in the background, when its factory supports it.

    A no-op when the proxy is already resolved or its factory cannot resolve asynchronously.
    """
    if not is_resolved(proxy):
        get_factory(proxy).resolve_async()


def get_key(proxy: Proxy) -> str | None:
    """Return the store key that ``proxy`` refers to, or ``None`` if it is not a store proxy."""
    key = getattr(get_factory(proxy), "key", None)
    return key if isinstance(key, str) else None
