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
import concurrent.futures
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from proxystore.proxy import Proxy
from proxystore.serialize import Pickled, pickle_once

from .delivery import (
    EXACT_TYPES,
    OBJECT_ONLY,
    PROXY_SAFE,
    DeliveryRule,
    delivery_for,
    register_delivery,
    registered_deliveries,
    unregister_delivery,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "DELIVERIES",
    "EXACT_TYPES",
    "OBJECT_ONLY",
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

DeliverAs = Union[str, Mapping[type, Any]]


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
