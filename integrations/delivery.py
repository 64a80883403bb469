"""The delivery registry: what a task body receives, by type, for a proxied argument.

The adapters hand a task body a proxy only for the types registered proxy-safe (the types whose
common operations the test suite proves give on a proxy what they give on the object:
:data:`PROXY_SAFE`), and the object itself for every other type. A library or a user changes
that for a type with :func:`register_delivery`, by the type or by its dotted name (resolved
only from modules already imported, so registering imports nothing). Everything here is also
importable from :mod:`proxystore.integrations.policy`, whose ``ProxyPolicy(deliver_as=...)``
overrides the registry for one adapter.
"""

from __future__ import annotations

import array
import collections
import numbers
import sys
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable, Literal, Union

__all__ = [
    "EXACT_TYPES",
    "OBJECT_ONLY",
    "PROXY_SAFE",
    "DeliveryRule",
    "delivery_for",
    "register_delivery",
    "registered_deliveries",
    "unregister_delivery",
]

_VERDICTS_KEPT = 1024  # verdicts cached (one per argument type)

DeliveryRule = Union[Literal["proxy", "object"], Callable[[Any], Any]]
"""A registered delivery: ``"proxy"``, ``"object"`` or a resolver (``resolver(obj)`` is what the
task body receives)."""

EXACT_TYPES: tuple[type, ...] = (
    list,
    tuple,
    dict,
    set,
    frozenset,
    str,
    bytes,
    bytearray,
    memoryview,
    range,
    numbers.Number,
    collections.deque,
    array.array,
)
"""Types (and their subclasses) whose objects the default rule always delivers as the objects.

Everything defined in the ``builtins`` module is delivered as the object too; only a
registration of the very type (or of a subclass) changes that, not one of ``object``.
"""

PROXY_SAFE: tuple[str, ...] = (
    "numpy.ndarray",
    "polars.DataFrame",
    "polars.Series",
    "xarray.DataArray",
    "xarray.Dataset",
)
"""The types registered proxy-safe when this module is imported, by dotted name.

Each is on the list because ``tests/test_transparency.py`` and
``tests/test_transparency_libraries.py`` prove that its common operations give on a proxy what
they give on the object. Everything else is delivered as the object by default.
"""

OBJECT_ONLY: tuple[str, ...] = (
    "torch.Tensor",
    "pyarrow.Table",
    "pyarrow.RecordBatch",
    "pyarrow.Array",
    "pyarrow.ChunkedArray",
    "pandas.DataFrame",
    "pandas.Series",
    "pandas.Index",
    "scipy.sparse.spmatrix",
    "scipy.sparse.sparray",
)
"""The types registered object-only when this module is imported, by dotted name.

They are delivered as objects anyway (nothing unregistered is a proxy); registering them keeps
them objects under a broad ``register_delivery(object, "proxy")``, because the probe
(``tests/test_transparency_libraries.py``) shows operations that differ on their proxies: C
exact-type checks (Arrow, a pandas ``Series`` as an argument), a proxy that must not claim
``torch.Tensor``, numpy's ``@`` with a sparse operand.
"""


class _DeliveryRegistry:
    """Types (or dotted names of types) -> delivery rule; a lock, a read-only view, a cache.

    Names are resolved lazily, from modules already in ``sys.modules`` only: an object of a
    library's type exists only once that library is imported, so nothing is imported here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_type: dict[type, DeliveryRule] = {}
        self._by_name: dict[str, DeliveryRule] = {}  # every registration, by its dotted name
        self._pending: dict[str, DeliveryRule] = {}  # names not resolved to a type yet
        self._verdicts: dict[type, DeliveryRule | None] = {}

    def register(self, kind: type | str, how: DeliveryRule) -> None:
        name = _check_registration(kind, how)
        with self._lock:
            self._forget(name, kind)
            self._by_name[name] = how
            if isinstance(kind, type):
                self._by_type[kind] = how
            else:
                self._pending[name] = how
            self._verdicts = {}

    def unregister(self, kind: type | str) -> None:
        name = _check_registration(kind, "object")
        with self._lock:
            if not self._forget(name, kind):
                raise KeyError(
                    f"no delivery is registered for {name!r}; registered: "
                    f"{', '.join(sorted(self._by_name)) or 'none'}"
                )
            self._verdicts = {}

    def _forget(self, name: str, kind: type | str) -> bool:
        """Drop every registration of ``kind`` (under any alias); whether there was one."""
        target = kind if isinstance(kind, type) else _resolved_name(name)
        aliases = {name} if target is None else {name, _dotted_name(target)}
        names = [
            known
            for known in self._by_name
            if known in aliases or (target is not None and _resolved_name(known) is target)
        ]
        for known in names:
            del self._by_name[known]
            self._pending.pop(known, None)
        aliases.update(names)
        types = [t for t in self._by_type if t is target or _dotted_name(t) in aliases]
        for t in types:
            del self._by_type[t]
        return bool(names or types)

    def view(self) -> Mapping[str, DeliveryRule]:
        with self._lock:
            return MappingProxyType(dict(self._by_name))

    def rule(self, kind: type) -> DeliveryRule | None:
        """The registered rule for ``kind`` (the most specific class in its MRO), or ``None``."""
        verdicts = self._verdicts
        if kind in verdicts:
            return verdicts[kind]
        with self._lock:
            if self._pending:
                for name in list(self._pending):
                    resolved = _resolved_name(name)
                    if resolved is not None:
                        self._by_type[resolved] = self._pending.pop(name)
            rule = self._walk(kind)
            if len(self._verdicts) < _VERDICTS_KEPT:
                self._verdicts[kind] = rule
        return rule

    def _walk(self, kind: type) -> DeliveryRule | None:
        by_type, by_name = self._by_type, self._by_name
        for base in kind.__mro__:
            how = by_type.get(base)
            if how is None:
                how = by_name.get(_dotted_name(base))
            if how is not None:
                return how
            if base is object:
                break
            if base.__module__ == "builtins" or base in EXACT_TYPES:
                return "object"  # built-in kinds: only a registration of their own counts
        if issubclass(kind, EXACT_TYPES):  # virtual subclasses (numbers.Number)
            return "object"
        return None


def _dotted_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _resolved_name(name: str) -> type | None:
    """The type a dotted name stands for, looked up only in modules already imported."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        value: Any = module
        for attribute in parts[split:]:
            value = getattr(value, attribute, None)
        return value if isinstance(value, type) else None
    return None


def _check_registration(kind: Any, how: Any) -> str:
    """Check a registration's arguments; return the dotted name of ``kind``."""
    if isinstance(kind, type):
        name = _dotted_name(kind)
    elif isinstance(kind, str) and "." in kind.strip(".") and " " not in kind:
        name = kind
    else:
        raise TypeError(
            "register_delivery needs a type or the dotted name of one (for example "
            f"'torch.Tensor'), got {kind!r}"
        )
    if not (how in ("proxy", "object") or (callable(how) and not isinstance(how, str))):
        raise ValueError(
            f"register_delivery({name!r}, ...) needs 'proxy', 'object' or a resolver (a "
            f"callable that turns the object into what the task receives), got {how!r}"
        )
    return name


_REGISTRY = _DeliveryRegistry()


def register_delivery(kind: type | str, how: DeliveryRule) -> None:
    """Declare what a task body receives, under the default rule, for objects of ``kind``.

    Applies to ``kind`` and its subclasses (the most specific registered class wins), in every
    adapter whose policy uses ``deliver_as="auto"`` (the default); ``ProxyPolicy(deliver_as=...)``
    entries win over it. Registering a type again replaces its rule.

    Args:
        kind: The type, or its dotted name (``"torch.Tensor"``, ``"pyarrow.Table"``,
            ``"mylib.frames.Frame"``): a name is resolved only once its module is imported, so
            a library can register its types without importing anything.
        how: ``"proxy"`` (proxy-safe: the body gets the lazy proxy), ``"object"`` (the body gets
            the object, fetched once every argument's prefetch has started) or a resolver, a
            callable (module-level, so that it pickles) whose result the body gets instead of
            the object, for example ``functools.partial(torch.Tensor.to, device="cuda")``.

    Raises:
        TypeError: If ``kind`` is neither a type nor a dotted name.
        ValueError: If ``how`` is none of the three.

    Example::

        from proxystore.integrations.policy import register_delivery

        register_delivery("mylib.Frame", "proxy")  # its operations are proven on proxies
        register_delivery(MyModel, "object")
    """
    _REGISTRY.register(kind, how)


def unregister_delivery(kind: type | str) -> None:
    """Remove the registration of ``kind`` (as given to :func:`register_delivery`).

    Raises:
        KeyError: If nothing is registered for ``kind``; the message lists what is.
    """
    _REGISTRY.unregister(kind)


def registered_deliveries() -> Mapping[str, DeliveryRule]:
    """A read-only snapshot of the registry: dotted type name -> delivery rule."""
    return _REGISTRY.view()


def delivery_for(obj: Any) -> DeliveryRule:
    """What the default rule hands a task body for ``obj``: ``"proxy"``, ``"object"`` or a resolver.

    The registry's entry for the most specific class of ``obj`` that has one; ``"object"`` for
    every type nobody registered.
    """
    rule = _REGISTRY.rule(type(obj))
    return "object" if rule is None else rule


for _name in PROXY_SAFE:
    register_delivery(_name, "proxy")
for _name in OBJECT_ONLY:
    register_delivery(_name, "object")
del _name
