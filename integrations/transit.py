"""What travels between the client and the workers, besides the task itself.

Engines that inspect task arguments (Dask tokenizes them, Parsl looks for futures in them) are
sent :class:`ProxyRef` objects instead of proxies: a ``ProxyRef`` is plain data holding a
factory, so nothing on the client or the scheduler can resolve (fetch) the object by looking at
it. Only the worker-side wrapper (:class:`~proxystore.integrations.task.ProxyTask`) makes a
proxy of it. Arguments below the threshold travel as :class:`PickledArgument`: the bytes
pickled while measuring them, which unpickle into the object itself.
"""

from __future__ import annotations

import pickle
import warnings
from typing import Any, Callable

from proxystore.factory import Factory
from proxystore.proxy import Proxy
from proxystore.store.description import StoreDescription

__all__ = ["PickledArgument", "ProxyRef", "ResultRef", "is_proxy"]


def __getattr__(name: str) -> Any:
    # StoreRef was a second name of StoreDescription, documented here: kept, deprecated.
    if name == "StoreRef":
        warnings.warn(
            "proxystore.integrations.transit.StoreRef is deprecated: use "
            "proxystore.store.description.StoreDescription",
            DeprecationWarning,
            stacklevel=2,
        )
        return StoreDescription
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_proxy(obj: Any) -> bool:
    """Whether ``obj`` is a proxy, without resolving it."""
    # type(), never isinstance(): isinstance() reads __class__, which resolves a proxy.
    return issubclass(type(obj), Proxy)


class ProxyRef:
    """A proxied argument in transit: its factory, and whether the body receives the object.

    On the worker, :class:`ProxyTask` makes it a proxy again and, when ``deliver_object`` is set,
    hands the task body the resolved object (or, for a resolver, ``resolver(object)``) instead
    of the proxy.

    Args:
        factory: The proxy's factory.
        deliver_object: ``True`` to hand the task body the object itself, a resolver (a
            callable) to hand it ``resolver(object)``, ``False`` for the proxy (see
            ``ProxyPolicy.deliver_as`` and ``register_delivery``).
    """

    __slots__ = ("deliver_object", "factory")

    def __init__(
        self, factory: Factory[Any], deliver_object: bool | Callable[[Any], Any] = False
    ) -> None:
        self.factory = factory
        self.deliver_object = deliver_object

    @property
    def key(self) -> str:
        """A stable identity: the store key when the factory has one."""
        key = getattr(self.factory, "key", None)
        return key if isinstance(key, str) else f"factory-{id(self.factory):x}"

    def __dask_tokenize__(self) -> tuple[str, str, Any]:
        # Duck-typed hook: Dask tokenizes task arguments; the key identifies the object.
        return ("proxystore.ProxyRef", self.key, self.deliver_object)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProxyRef, (self.factory, self.deliver_object))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is ProxyRef
            and other.factory is self.factory
            and other.deliver_object == self.deliver_object
        )

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        how = self.deliver_object
        what = "" if how is False else ", object" if how is True else f", resolver {how!r}"
        return f"ProxyRef({self.key}{what})"


class PickledArgument:
    """An argument below the threshold, sent as the bytes pickled while measuring it.

    Unpickling it gives the object itself, so engines that pickle arguments (process pools,
    Dask, Parsl) pickle it once in all, as they would without proxying; engines that do not
    pickle hand it to :class:`ProxyTask`, which unwraps it.

    Args:
        stream: A plain pickle stream of the object.
    """

    __slots__ = ("stream",)

    def __init__(self, stream: bytes) -> None:
        self.stream = stream

    def __reduce__(self) -> tuple[Any, ...]:
        return (pickle.loads, (self.stream,))

    def __dask_tokenize__(self) -> tuple[str, bytes]:
        # Duck-typed hook: Dask tokenizes task arguments; equal pickles, equal objects.
        return ("proxystore.PickledArgument", self.stream)

    def __repr__(self) -> str:
        return f"PickledArgument({len(self.stream)} bytes)"


class ResultRef:
    """A task's stored result on its way back: it unpickles into the proxy itself.

    Engines that take a callable result for code (Parsl: a proxy answers ``callable()``, and
    its code serializer hashes it, which would resolve it) are given this plain object
    instead; the client unpickles a :class:`~proxystore.proxy.Proxy`. A worker-side wrapper
    that receives one without pickling (an engine passing results between tasks in memory)
    makes the proxy itself.

    Args:
        factory: The result proxy's factory.
    """

    __slots__ = ("factory",)

    def __init__(self, factory: Factory[Any]) -> None:
        self.factory = factory

    def __reduce__(self) -> tuple[Any, ...]:
        return (Proxy, (self.factory,))

    def __repr__(self) -> str:
        return f"ResultRef({getattr(self.factory, 'key', '?')})"
