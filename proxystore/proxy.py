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

import contextlib
import copy
import math
import sys
from typing import Any, Callable, TypeVar

import lazy_object_proxy

from proxystore.factory import Factory

__all__ = [
    "Proxy",
    "extract",
    "get_factory",
    "get_key",
    "is_resolved",
    "resolve",
    "resolve_async",
    "unwrap",
    "unwrap_values",
]

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

    # -- copying: what copying the target gives (a proxy is a reference, not a value) ----------

    def __copy__(self) -> Any:
        return copy.copy(self.__wrapped__)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(self.__wrapped__, memo)

    # -- numpy: the array protocols see the target, never the proxy ----------------------------
    #
    # numpy recognises Python scalars and sequences by their exact C type, so without these a
    # proxy of a list, tuple, scalar, string or bytes became a 0-d object array holding the
    # proxy. ``__array__`` converts exactly as the target converts; ``__array_function__`` and
    # ``__array_ufunc__`` re-run numpy's call with every proxy replaced by its target, so the
    # result is what the plain objects give (dtype promotion, overrides of other libraries and
    # errors included).

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Any:
        import numpy

        target = self.__wrapped__
        if copy is None:
            return numpy.asarray(target, dtype=dtype)
        return numpy.array(target, dtype=dtype, copy=copy)

    def __array_function__(
        self, func: Any, types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return func(*unwrap(args), **unwrap_values(kwargs))

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return getattr(ufunc, method)(*unwrap(inputs), **unwrap_values(kwargs))

    # -- torch: its functions and modules see the target, never the proxy --------------------
    #
    # torch looks up ``__torch_function__`` on the type of every argument it is handed (duck
    # typing: torch is never imported here). Re-running the call with every proxy replaced by
    # its target gives what the plain tensors give: ``torch.sum(p)``, ``F.relu(p)``,
    # ``nn.Linear(...)(p)``, ``torch.cat([p, q])``, ``t + p``, ``torch.as_tensor(p)``.

    @classmethod
    def __torch_function__(
        cls,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return func(*unwrap(args), **unwrap_values(kwargs or {}))

    # -- the class a proxy claims -------------------------------------------------------------
    #
    # A proxy claims its target's class (``isinstance(p, ndarray)`` is true), except for the
    # classes whose C code casts an object to its own struct after an ``isinstance`` check that
    # reads ``__class__``: torch's ``THPVariable_Check`` is ``PyObject_IsInstance``, so a proxy
    # claiming ``torch.Tensor`` was read as a tensor struct it is not (``torch.as_tensor(p)``
    # crashed the interpreter). For those the proxy claims to be a proxy; torch then finds
    # ``__torch_function__`` above and calls again with the target.

    @property
    def __class__(self) -> Any:
        claimed = self.__wrapped__.__class__
        if _struct_checked(claimed):
            return type(self)
        return claimed

    @__class__.setter
    def __class__(self, value: Any) -> None:
        self.__wrapped__.__class__ = value

    # -- the C sequence protocol ------------------------------------------------------------
    #
    # lazy-object-proxy fills only the mapping slot for ``p[i]``, so C code that asks
    # ``PySequence_Check`` (``np.concatenate``, ``PySequence_GetItem``) did not see a sequence.
    # A Python ``__getitem__`` makes CPython fill both slots; right after the class is made it is
    # replaced by the C implementation (see below), which puts ``p[i]`` back on the C mapping
    # path while the sequence slot keeps calling ``__getitem__``.

    def __getitem__(self, key: Any) -> Any:
        return self.__wrapped__[key]

    if sys.version_info >= (3, 12):  # PEP 688: the buffer protocol from Python

        def __buffer__(self, flags: int) -> memoryview:
            return memoryview(self.__wrapped__)

        def __release_buffer__(self, view: memoryview) -> None:
            view.release()

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


# See "the C sequence protocol" in the class body: the sequence slot stays filled, ``p[i]`` goes
# back to lazy-object-proxy's C implementation.
Proxy.__getitem__ = lazy_object_proxy.Proxy.__getitem__  # type: ignore[method-assign]


# Classes whose instances C code casts to its own struct after an ``isinstance`` check, by
# dotted name, resolved only from modules already imported (a class of a module never imported
# cannot be the class of a target).
_STRUCT_CHECKED = ("torch._C.TensorBase", "torch._C.Generator")
_struct_checked_verdicts: dict[type, bool] = {}


def _struct_checked(kind: Any) -> bool:
    """Whether a proxy must not claim ``kind`` (see "the class a proxy claims" in Proxy)."""
    try:
        verdict = _struct_checked_verdicts.get(kind)
    except TypeError:  # a class whose metaclass makes it unhashable: not cached
        verdict = None
    if verdict is None:
        verdict = isinstance(kind, type) and any(
            issubclass(kind, checked) for checked in _loaded_classes(_STRUCT_CHECKED)
        )
        if len(_struct_checked_verdicts) < 4096:
            with contextlib.suppress(TypeError):
                _struct_checked_verdicts[kind] = verdict
    return verdict


def _loaded_classes(names: tuple[str, ...]) -> list[type]:
    """The classes among dotted ``names`` whose module is already imported."""
    found = []
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        module = sys.modules.get(module_name)
        kind = getattr(module, attribute, None) if module is not None else None
        if isinstance(kind, type):
            found.append(kind)
    return found


def _is_proxy(obj: object) -> bool:
    # type(), not isinstance(): isinstance() reads __class__, which resolves a proxy.
    return Proxy in type(obj).__mro__


def unwrap(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Return ``values`` with every proxy replaced by its target.

    Proxies are replaced at the top level and inside (nested) lists and tuples, where numpy
    finds the arrays of ``np.concatenate([p, q])``; containers without proxies are returned as
    they are (the same object), so ``out=`` arguments keep their identity.
    """
    return tuple(_unwrap(value) for value in values)


def unwrap_values(mapping: dict[str, Any]) -> dict[str, Any]:
    """Return ``mapping`` with every proxy among its values replaced (see :func:`unwrap`)."""
    return {name: _unwrap(value) for name, value in mapping.items()}


def _unwrap(value: Any) -> Any:
    kind = type(value)
    if Proxy in kind.__mro__:
        return value.__wrapped__
    if kind is list or kind is tuple:
        items = [_unwrap(item) for item in value]
        if any(new is not old for new, old in zip(items, value)):
            return kind(items)
    return value


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
