"""``ProxyPolicy``: which task arguments travel by proxy. Engine-free.

The policy looks at every positional and keyword argument of a task, and at the items of
``list``, ``tuple`` and ``dict`` arguments one level down, and decides for each whether to send
it by value or by proxy. Its size measure never serializes twice: objects that know their size
(``nbytes``, or ``len`` of ``bytes``/``str``) are measured directly; anything else is pickled
once, at the C pickler's speed, and those same bytes go to the store when the object is large,
or to the engine when it is small (so an argument below the threshold is pickled once, as with
the plain engine).

Never proxied, whatever their size: ``None``, booleans and numbers, existing proxies, futures
(``concurrent.futures.Future`` and the engines' own future types, which an adapter adds through
``passthrough``), and any type the user lists in ``never``.

A proxied argument still has to reach the task body in a form that computes exactly what the
object would. What the body receives is decided per type:

- ``"object"``: the worker hands the body the object itself, resolved after the background
  fetch of *every* proxied argument of the task has started (so transfers still overlap with
  each other, but not with the body). The body sees exact types: ``type(x) is dict``,
  ``json.dumps``, ``memoryview``, C extensions that check types (Arrow, torch, pandas, SciPy).
- ``"proxy"``: the body receives the proxy, which fetches lazily and overlaps with the body.
- a *resolver*, a callable: the body receives ``resolver(obj)`` (delivered as for
  ``"object"``; the callable travels with the task, so it must pickle: a module-level
  function).

The default rule (``deliver_as="auto"``) hands a proxy only for the types registered
proxy-safe, the types whose common operations the test suite proves give on a proxy what they
give on the object (:data:`PROXY_SAFE`: numpy arrays, polars and xarray objects), and the
object for everything else: built-in kinds, torch tensors, Arrow, pandas and SciPy objects,
user classes. A library or a user changes the rule for a type with :func:`register_delivery`
(by the type, or by its dotted name so that the library need not be imported);
``ProxyPolicy(deliver_as=...)`` overrides the registry for one adapter. Results that
``proxy_results`` would return as proxies follow the same rule: a result delivered as an
object comes back by value, as with the plain engine.
"""

from __future__ import annotations

import abc
import array
import collections
import concurrent.futures
import numbers
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Literal, Union

from proxystore.proxy import Proxy
from proxystore.serialize import Pickled, pickle_once

__all__ = [
    "DEFAULT_THRESHOLD",
    "DELIVERIES",
    "EXACT_TYPES",
    "PROXY_SAFE",
    "Delivery",
    "DeliveryRule",
    "Measured",
    "ProxyPolicy",
    "delivery_for",
    "make_policy",
    "register_delivery",
    "registered_deliveries",
    "unregister_delivery",
]

DEFAULT_THRESHOLD = 1_000_000
"""Default size (bytes) from which an argument is sent by proxy."""

_SCALARS = (type(None), bool, numbers.Number)

_UNSIZED = frozenset({dict, list, tuple, set, frozenset})  # sized only by pickling them

_VERDICTS_KEPT = 1024  # passes_through() verdicts cached per policy (one per argument type)

Delivery = Literal["proxy", "object", "auto"]
"""What a task body receives for a proxied argument: the proxy, the object, or the default rule."""

DELIVERIES: tuple[str, ...] = ("proxy", "object", "auto")

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

DeliverAs = Union[str, Mapping[type, Any]]


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
            if name not in self._by_name:
                raise KeyError(
                    f"no delivery is registered for {name!r}; registered: "
                    f"{', '.join(sorted(self._by_name)) or 'none'}"
                )
            self._forget(name, kind)
            self._verdicts = {}

    def _forget(self, name: str, kind: type | str) -> None:
        self._by_name.pop(name, None)
        self._pending.pop(name, None)
        for known in list(self._by_type):
            if known is kind or _dotted_name(known) == name or _resolved_name(name) is known:
                del self._by_type[known]

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
del _name


@dataclass(frozen=True)
class Measured:
    """The policy's verdict on one object.

    Attributes:
        proxy: Whether the object should travel by proxy.
        size: Its size in bytes, when it was measured (``None`` if never measured).
        pickled: The object pickled once to measure it (``None`` if it needed no pickling):
            stored as is when it goes by proxy, sent as is when it goes by value.
        holds_engine_objects: The object holds futures or proxies (at any depth), which the
            engine or the worker-side wrapper must see: it is never stored or pickled whole.
    """

    proxy: bool
    size: int | None = None
    pickled: Pickled | None = None
    holds_engine_objects: bool = False


_BY_VALUE = Measured(False)


@dataclass(frozen=True)
class ProxyPolicy:
    """Decides which arguments of a task travel by proxy.

    Args:
        threshold: Objects of at least this many bytes travel by proxy. ``0`` proxies every
            argument that is not a scalar, future or proxy.
        always: Types that always travel by proxy, whatever their size.
        never: Types that never travel by proxy, whatever their size.
        evict: Remove a proxied argument from the store once the last task using it has
            finished (succeeded, failed or been cancelled). ``False`` keeps it.
        prefetch: On the worker, start resolving every proxied argument (in parallel, in
            background threads) before the task body runs.
        proxy_results: Return task results of at least ``result_threshold`` bytes as proxies
            from the same store.
        result_threshold: Size from which a result is proxied; defaults to ``threshold``.
        deliver_as: What the task body receives for a proxied argument (and what comes back
            for a proxied result): ``"auto"`` (the default rule: proxies of the types registered
            proxy-safe, see :func:`register_delivery` and :data:`PROXY_SAFE`, objects of the
            rest), ``"proxy"`` or ``"object"`` for every type, or a mapping from types to one
            of the three or a resolver (a callable; the body receives ``resolver(obj)``), which
            overrides the rule and the registry for those types and their subclasses (the most
            specific entry wins).
        passthrough: Extra types never proxied (adapters add their engine's future types).

    Raises:
        ValueError: If a threshold is negative, or ``deliver_as`` names an unknown delivery.
        TypeError: If ``always``/``never``/``passthrough`` hold anything but types, or
            ``deliver_as`` is neither a delivery nor a mapping from types to deliveries.
    """

    threshold: int = DEFAULT_THRESHOLD
    always: tuple[type, ...] = ()
    never: tuple[type, ...] = ()
    evict: bool = True
    prefetch: bool = True
    proxy_results: bool = False
    result_threshold: int | None = None
    deliver_as: DeliverAs = field(default="auto", hash=False)
    passthrough: tuple[type, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        for name in ("threshold", "result_threshold"):
            value = getattr(self, name)
            if value is None and name == "result_threshold":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ProxyPolicy.{name} must be an int (bytes), got {value!r}")
            if value < 0:
                raise ValueError(f"ProxyPolicy.{name} must be >= 0 bytes, got {value}")
        for name in ("always", "never", "passthrough"):
            value = tuple(getattr(self, name))
            if not all(isinstance(t, type) for t in value):
                raise TypeError(f"ProxyPolicy.{name} must hold types, got {value!r}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_deliveries", _deliveries(self.deliver_as))
        futures = (concurrent.futures.Future, *self.passthrough)
        object.__setattr__(self, "_futures", futures)
        object.__setattr__(self, "_engine_types", (Proxy, *futures))
        object.__setattr__(self, "_passing", (Proxy, *_SCALARS, *futures))
        # passes_through() by type, valid while no ABC gains a registered subclass (as in
        # functools.singledispatch): the checks against ABCs (numbers.Number) run in Python.
        object.__setattr__(self, "_verdicts", ({}, abc.get_cache_token()))

    def __getstate__(self) -> dict[str, Any]:
        # The verdict cache stays behind: it may name types another process cannot import.
        state = dict(self.__dict__)
        state.pop("_verdicts", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        object.__setattr__(self, "_verdicts", ({}, abc.get_cache_token()))

    def with_passthrough(self, types: Iterable[type]) -> ProxyPolicy:
        """Return a copy that also passes ``types`` through untouched."""
        from dataclasses import replace

        return replace(self, passthrough=(*self.passthrough, *types))

    def passes_through(self, obj: Any) -> bool:
        """Return whether ``obj`` is never proxied (scalar, proxy, future or excluded type)."""
        # type(obj), not isinstance(): isinstance() would resolve a proxy to read __class__.
        kind = type(obj)
        verdicts, token = self._verdicts  # type: ignore[attr-defined]
        verdict = verdicts.get(kind)
        if verdict is None or token != abc.get_cache_token():
            verdict = self._passes_through_type(kind)
        return verdict  # type: ignore[no-any-return]

    def _passes_through_type(self, kind: type) -> bool:
        verdict = issubclass(kind, self._passing) or (  # type: ignore[attr-defined]
            bool(self.never) and issubclass(kind, self.never)
        )
        verdicts, token = self._verdicts  # type: ignore[attr-defined]
        current = abc.get_cache_token()
        if token != current:
            verdicts = {}
            object.__setattr__(self, "_verdicts", (verdicts, current))
        if len(verdicts) < _VERDICTS_KEPT:
            verdicts[kind] = verdict
        return verdict

    def measure(self, obj: Any, *, proxies_inside: bool = False) -> Measured:
        """Decide whether ``obj`` (an argument, or an item one level down) goes by proxy.

        Args:
            obj: The object.
            proxies_inside: Proxies inside ``obj`` are expected (a container whose large
                items were just proxied) and do not count as objects the engine must see.
        """
        if self.passes_through(obj):
            return _BY_VALUE
        return self.measure_candidate(obj, proxies_inside=proxies_inside)

    def measure_candidate(self, obj: Any, *, proxies_inside: bool = False) -> Measured:
        """:meth:`measure` for an object already known not to pass through.

        Args:
            obj: The object; :meth:`passes_through` returned ``False`` for it.
            proxies_inside: As for :meth:`measure`.
        """
        if self.always and issubclass(type(obj), self.always):
            return Measured(True)
        size = known_size(obj)
        if size is not None:
            return Measured(size >= self.threshold, size)
        refuse = self._futures if proxies_inside else self._engine_types  # type: ignore[attr-defined]
        pickled = pickle_once(obj, refuse=refuse)
        if pickled is None:
            return Measured(False, holds_engine_objects=True)
        return Measured(pickled.size >= self.threshold, pickled.size, pickled)

    def delivers_object(self, obj: Any) -> bool:
        """Return whether the task body receives ``obj`` itself (or a resolver's result of it)."""
        return self.delivery(obj) != "proxy"

    def delivery(self, obj: Any) -> DeliveryRule:
        """What the task body receives for ``obj``: ``"proxy"``, ``"object"`` or a resolver."""
        default, table = self._deliveries  # type: ignore[attr-defined]
        kind = type(obj)
        if table:
            for base in kind.__mro__:
                how = table.get(base)
                if how is not None and how != "auto":
                    return how  # type: ignore[no-any-return]
        if default != "auto":
            return default  # type: ignore[no-any-return]
        return delivery_for(obj)

    def measure_result(self, obj: Any) -> Measured:
        """Decide whether a task's result goes back by proxy.

        Results the policy delivers as objects (:meth:`delivers_object`) go back by value.
        """
        if not self.proxy_results or self.delivers_object(obj):
            return Measured(False)
        threshold = self.threshold if self.result_threshold is None else self.result_threshold
        return ProxyPolicy(threshold, self.always, self.never).measure(obj)


def _deliveries(deliver_as: Any) -> tuple[str, dict[type, str]]:
    """Check ``deliver_as`` and split it into the default and the per-type table."""
    if isinstance(deliver_as, str):
        entries: dict[Any, Any] = {}
        default = deliver_as
    elif isinstance(deliver_as, Mapping):
        entries = dict(deliver_as)
        default = "auto"
    else:
        raise TypeError(
            "ProxyPolicy.deliver_as must be 'auto', 'proxy', 'object' or a mapping from types "
            f"to those (or to resolvers), got {deliver_as!r}"
        )
    for kind, how in [(None, default), *entries.items()]:
        if kind is not None and not isinstance(kind, type):
            raise TypeError(
                f"ProxyPolicy.deliver_as keys must be types, got {kind!r} (register a type by "
                "its dotted name with register_delivery)"
            )
        if kind is not None and callable(how) and not isinstance(how, str):
            continue  # a resolver
        if how not in DELIVERIES:
            where = "" if kind is None else f" for {kind.__name__}"
            raise ValueError(
                f"ProxyPolicy.deliver_as{where} must be one of {', '.join(DELIVERIES)}"
                f"{'' if kind is None else ' or a resolver (a callable)'}, got {how!r}"
            )
    return default, entries


def known_size(obj: Any) -> int | None:
    """Return the size in bytes of objects that know it without serializing, else ``None``."""
    if type(obj) in _UNSIZED:
        return None
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if isinstance(obj, str):
        return len(obj)  # close enough: utf-8 is at least one byte a character
    if isinstance(obj, memoryview):
        return obj.nbytes
    if getattr(getattr(obj, "dtype", None), "hasobject", False):
        return None  # an object array's nbytes counts pointers, not the objects
    nbytes = getattr(type(obj), "nbytes", None)
    if nbytes is not None:
        value = getattr(obj, "nbytes", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def make_policy(threshold: int | None, policy: ProxyPolicy | None, *, owner: str) -> ProxyPolicy:
    """Return the policy an adapter was given as ``threshold=`` or ``policy=`` (one, not both).

    Raises:
        ValueError: If both are given, or the threshold is negative.
        TypeError: If ``policy`` is not a :class:`ProxyPolicy`.
    """
    if policy is not None and threshold is not None:
        raise ValueError(f"{owner}: give threshold= or policy=, not both")
    if policy is None:
        return ProxyPolicy(threshold=DEFAULT_THRESHOLD if threshold is None else threshold)
    if not isinstance(policy, ProxyPolicy):
        raise TypeError(f"{owner}: policy must be a ProxyPolicy, got {type(policy).__name__}")
    return policy
