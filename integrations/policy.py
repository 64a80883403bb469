"""``ProxyPolicy``: which task arguments travel by proxy. Engine-free.

The policy looks at every positional and keyword argument of a task, and at the items of
``list``, ``tuple`` and ``dict`` arguments one level down, and decides for each whether to send
it by value or by proxy. Its size measure never serializes twice: objects that know their size
(``nbytes``, or ``len`` of ``bytes``/``str``) are measured directly; anything else is pickled
once, at the C pickler's speed, and those same bytes go to the store when the object is large,
or to the engine when it is small (so an argument below the threshold is pickled once, as with
the plain engine).

:meth:`ProxyPolicy.plan` decides a whole call at once and returns a :class:`CallPlan`: for each
argument (and item one level down) that does not travel as it is, a :class:`Step` saying
whether it is sent as the bytes pickled to measure it (:data:`SEND`), stored (:data:`STORE`,
with those bytes, never pickled again), sent as a container of its items' steps
(:data:`ITEMS`) or, for an existing proxy, forwarded (:data:`FORWARD`), and what the task body
receives for each stored object. Planning stores nothing and changes nothing: whether a large
container goes whole or item by item is decided from its measured size before anything is
stored. The adapters' shared submit path (:mod:`~proxystore.integrations.proxier`) carries the
plan out.

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
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple, Protocol, Union

from proxystore.proxy import Proxy
from proxystore.serialize import Pickled, SerializationError, pickle_once

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
    "AS_IS",
    "CONTAINERS",
    "DEFAULT_THRESHOLD",
    "DELIVERIES",
    "EXACT_TYPES",
    "FORWARD",
    "ITEMS",
    "OBJECT_ONLY",
    "PROXY_SAFE",
    "SEND",
    "STORE",
    "Action",
    "CallPlan",
    "Delivery",
    "DeliveryRule",
    "Measured",
    "Planner",
    "ProxyPolicy",
    "Step",
    "StoredObject",
    "delivery_for",
    "make_policy",
    "register_delivery",
    "registered_deliveries",
    "unregister_delivery",
]

DEFAULT_THRESHOLD = 1_000_000
"""Default size (bytes) from which an argument is sent by proxy."""

_SCALARS = (type(None), bool, numbers.Number)

_ATOMIC = frozenset({int, float, bool, type(None), complex})  # never proxied: no need to look

CONTAINERS = frozenset({list, tuple, dict})
"""The container types whose items are looked at one level down."""

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

Action = Literal["send", "store", "items", "forward"]
"""What happens to an argument: see :data:`SEND`, :data:`STORE`, :data:`ITEMS`, :data:`FORWARD`."""

SEND: Final = "send"
"""Sent by value as the plain bytes pickled to measure it (engines that may pickle the call get
those bytes, so it is pickled once in all; engines in this process get the object)."""

STORE: Final = "store"
"""Stored (whole, a container included), and sent as a reference the task body receives as
:attr:`Step.delivery` says; the bytes pickled to measure it are what is stored."""

ITEMS: Final = "items"
"""A container sent as a copy in which its items' steps are carried out (:attr:`Step.items`);
the worker looks one level into it."""

FORWARD: Final = "forward"
"""An existing proxy: nothing is stored; it is passed on (as a reference, for engines that
inspect their arguments) and prefetched on the worker."""


class Planner(Protocol):
    """:meth:`ProxyPolicy.plan` bound to what is stored (see :meth:`ProxyPolicy.planner`)."""

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> CallPlan:
        """The plan of one call."""


class StoredObject(Protocol):
    """What a planner needs to know of an object that is stored already (in use by a call)."""

    obj: Any
    size: int | None


_NOTHING_STORED: Mapping[int, StoredObject] = {}
_NO_NAMES: frozenset[str] = frozenset()
_NO_PLACES: frozenset[int | str] = frozenset()


class Step(NamedTuple):
    """What happens to one argument, or to one item of a container argument (immutable).

    Attributes:
        action: :data:`SEND`, :data:`STORE`, :data:`ITEMS` or :data:`FORWARD`.
        obj: The argument (or item) as the caller passed it.
        measured: :data:`STORE`: its size and the bytes pickled to measure it (``None`` when it
            was stored already, in use by another call); :data:`SEND`: the measurement whose
            plain pickled bytes travel instead of the object.
        delivery: :data:`STORE`: what the task body receives: ``"proxy"``, ``"object"`` or a
            resolver.
        items: :data:`ITEMS`: ``(index or key, step)`` of each item that does not travel as
            it is.
    """

    action: Action
    obj: Any
    measured: Measured | None = None
    delivery: DeliveryRule = "proxy"
    items: tuple[tuple[int | str, Step], ...] = ()

    def __repr__(self) -> str:
        # Never the object's own repr: it may be a large container.
        parts = [self.action, type(self.obj).__name__]
        if self.measured is not None and self.measured.size is not None:
            parts.append(f"{self.measured.size} bytes")
        if self.action == STORE:
            parts.append(f"delivered as {self.delivery!r}")
        if self.items:
            parts.append(f"items {dict(self.items)!r}")
        return f"Step({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class CallPlan:
    """The decision for a whole call, made by :meth:`ProxyPolicy.plan` without side effects.

    Arguments without a step travel as they are.

    Attributes:
        args: ``(position, step)`` of each positional argument that does not travel as it is.
        kwargs: ``(name, step)`` of each keyword argument that does not travel as it is.
        nested: Positions and names of the container arguments the worker must look into
            (their step is :data:`ITEMS`).
        task: Whether the worker-side wrapper must run the task body: something is stored,
            forwarded or looked into, or results may come back by proxy.
        sends_pickled: Whether some argument travels as the bytes pickled to measure it
            (:data:`SEND`), which only the wrapper unpickles when the engine does not.
    """

    args: tuple[tuple[int, Step], ...] = ()
    kwargs: tuple[tuple[str, Step], ...] = ()
    nested: frozenset[int | str] = frozenset()
    task: bool = False
    sends_pickled: bool = False
    sends_as_is: bool = field(init=False)
    """Whether the call goes to the engine untouched: the plain function, the very arguments
    (no step, no wrapper). Read-only, derived from the other fields (an attribute rather than a
    property: the adapters read it on every call)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sends_as_is", not (self.task or self.args or self.kwargs))

    @property
    def stores(self) -> list[Any]:
        """The objects this plan stores (or shares, when they are stored already), in order."""
        found: list[Any] = []
        for _, step in (*self.args, *self.kwargs):
            _stored_objects(step, found)
        return found


def _stored_objects(step: Step, found: list[Any]) -> None:
    if step.action == STORE:
        found.append(step.obj)
    for _, item in step.items:
        _stored_objects(item, found)


AS_IS = CallPlan()
"""The plan of a call that goes to the engine untouched (only scalars, or nothing to do)."""


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
        lifetime: A :mod:`~proxystore.store.lifetimes` lifetime of the adapter's store: every
            object the adapter stores (arguments and results) is also evicted when it ends,
            at the latest. With a ``LeaseLifetime`` on a Redis store the keys carry the
            lease as a Redis expiry, so the objects of a client that is killed still go.
            It stays in the client: it is not sent to workers.

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
    lifetime: Any = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        lifetime = self.lifetime
        if lifetime is not None and not callable(getattr(lifetime, "add_key", None)):
            raise TypeError(
                "ProxyPolicy.lifetime must be a proxystore.store.lifetimes lifetime "
                f"(ContextLifetime, LeaseLifetime, StaticLifetime), got {type(lifetime).__name__}"
            )
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
        object.__setattr__(self, "_engine_types", (Proxy, *futures))
        object.__setattr__(self, "_passing", (Proxy, *_SCALARS, *futures))
        # passes_through() by type, valid while no ABC gains a registered subclass (as in
        # functools.singledispatch): the checks against ABCs (numbers.Number) run in Python.
        object.__setattr__(self, "_verdicts", ({}, abc.get_cache_token()))

    def __getstate__(self) -> dict[str, Any]:
        # The verdict cache stays behind: it may name types another process cannot import.
        state = dict(self.__dict__)
        state.pop("_verdicts", None)
        state["lifetime"] = None  # the client's: threads and a store, never sent to workers
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

    def measure(self, obj: Any) -> Measured:
        """Decide whether ``obj`` (an argument, or an item one level down) goes by proxy."""
        if self.passes_through(obj):
            return _BY_VALUE
        return self._measure(obj)

    def _measure(self, obj: Any, *, sized: bool = False) -> Measured:
        """:meth:`measure` of an object known not to pass through.

        Args:
            obj: The object.
            sized: Pickle an object of an ``always`` type whose size is not known otherwise,
                to learn it (an item of a container whose remainder is being sized).
        """
        if self.always and issubclass(type(obj), self.always):
            size = known_size(obj)
            if size is not None or not sized:
                return Measured(True, size)
            pickled = pickle_once(obj, refuse=self._engine_types)  # type: ignore[attr-defined]
            return Measured(True, None if pickled is None else pickled.size, pickled)
        size = known_size(obj)
        if size is not None:
            return Measured(size >= self.threshold, size)
        pickled = pickle_once(obj, refuse=self._engine_types)  # type: ignore[attr-defined]
        if pickled is None:
            return Measured(False, holds_engine_objects=True)
        return Measured(pickled.size >= self.threshold, pickled.size, pickled)

    def plan(
        self,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        stored: Mapping[int, StoredObject] = _NOTHING_STORED,
        keep: Container[str] = _NO_NAMES,
    ) -> CallPlan:
        """Decide a whole call: what is sent as it is, what is stored, what the body receives.

        Nothing is stored, changed or remembered: the plan is a function of the arguments, the
        policy and ``stored``. Each argument is measured once (a container once as a whole,
        and its items once each when it is large); a large container goes item by item only
        when what remains once its large items are references, its size less theirs, is below
        the threshold, and whole otherwise, decided before anything is stored.

        Args:
            args: The call's positional arguments.
            kwargs: The call's keyword arguments.
            stored: Objects stored already, by ``id``: they are stored again by reference to
                the stored copy (not measured again).
            keep: Names of keyword arguments that are the engine's own options (never proxied).

        Returns:
            :data:`AS_IS` when the call goes to the engine untouched, else the call's plan.

        Raises:
            SerializationError: If an argument cannot be pickled (the message says which).
        """
        return self.planner(stored, keep)(args, kwargs)

    def planner(
        self,
        stored: Mapping[int, StoredObject] = _NOTHING_STORED,
        keep: Container[str] = _NO_NAMES,
        *,
        owner: str | None = None,
    ) -> Planner:
        """:meth:`plan` bound to ``stored`` and ``keep``: ``planner(args, kwargs)`` per call.

        The adapters call one for every task, so a call of scalars costs one call and a look
        at each argument's type.

        Args:
            stored: As for :meth:`plan` (a mapping that stays up to date: it is read per call).
            keep: As for :meth:`plan`.
            owner: Name of the adapter, to begin error messages with.
        """
        atomic = _ATOMIC
        proxy_results = self.proxy_results
        decide = self._plan
        as_is = AS_IS

        def plan(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> CallPlan:
            if not proxy_results:
                for value in args:
                    if type(value) not in atomic:
                        break
                else:
                    if not kwargs:
                        return as_is
                    for value in kwargs.values():
                        if type(value) not in atomic:
                            break
                    else:
                        return as_is
            try:
                return decide(args, kwargs, stored, keep)
            except SerializationError as exc:
                if owner is None:
                    raise
                raise SerializationError(f"{owner}: {exc}") from exc

        return plan

    def _plan(
        self,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        stored: Mapping[int, StoredObject],
        keep: Container[str],
    ) -> CallPlan:
        atomic = _ATOMIC
        task = self.proxy_results
        sends_pickled = False
        nested: list[int | str] = []
        arg_steps: list[tuple[int, Step]] = []
        kwarg_steps: list[tuple[str, Step]] = []
        for place, value in enumerate(args):
            if type(value) not in atomic:
                step = self._step(value, place, stored)
                if step is not None:
                    arg_steps.append((place, step))
                    if step.action == SEND:
                        sends_pickled = True
                    else:
                        task = True
                        if step.action == ITEMS:
                            nested.append(place)
        for name, value in kwargs.items():
            if type(value) not in atomic and name not in keep:
                step = self._step(value, name, stored)
                if step is not None:
                    kwarg_steps.append((name, step))
                    if step.action == SEND:
                        sends_pickled = True
                    else:
                        task = True
                        if step.action == ITEMS:
                            nested.append(name)
        if not (task or arg_steps or kwarg_steps):
            return AS_IS
        places = frozenset(nested) if nested else _NO_PLACES
        return CallPlan(tuple(arg_steps), tuple(kwarg_steps), places, task, sends_pickled)

    def _step(self, obj: Any, place: int | str, stored: Mapping[int, StoredObject]) -> Step | None:
        """The step of an argument (``place``: its position or name); ``None``: as it is."""
        if issubclass(type(obj), Proxy):  # type(): isinstance() would resolve the proxy
            return Step(FORWARD, obj)
        if self.passes_through(obj):
            return None
        if stored:
            entry = stored.get(id(obj))
            if entry is not None and entry.obj is obj:
                return Step(STORE, obj, None, self.delivery(obj))
        measured = self._measured(obj, place)
        kind = type(obj)
        if (kind is list or kind is tuple or kind is dict) and (
            measured.proxy or measured.holds_engine_objects
        ):
            return self._container_step(obj, place, measured, stored)
        if not measured.proxy:
            pickled = measured.pickled
            if pickled is not None and pickled.plain:
                return Step(SEND, obj, measured)
            return None
        return Step(STORE, obj, measured, self.delivery(obj))

    def _container_step(
        self,
        obj: Any,
        place: int | str,
        measured: Measured,
        stored: Mapping[int, StoredObject],
    ) -> Step | None:
        """A large container, or one holding futures or proxies: item by item, or whole.

        A container holding futures or proxies always travels as a container (of its items'
        steps, if any), so the engine sees its futures. Otherwise it is large: when what
        remains once its large items are references is still large (or none of its items is
        large), it is stored whole, so the worker resolves it into the very structure the
        caller passed, with no proxies nested inside it.
        """
        if not measured.holds_engine_objects and measured.size is None:
            return Step(STORE, obj, measured, self.delivery(obj))  # an `always` type: whole
        steps: list[tuple[int | str, Step]] = []
        items_bytes: int | None = 0  # the sizes of the items stored (None: one is unknown)
        atomic = _ATOMIC
        for key, item in obj.items() if type(obj) is dict else enumerate(obj):
            if type(item) in atomic:
                continue
            if issubclass(type(item), Proxy):
                steps.append((key, Step(FORWARD, item)))
                continue
            if self.passes_through(item):
                continue
            entry = stored.get(id(item)) if stored else None
            if entry is not None and entry.obj is item:
                size = entry.size
                step = Step(STORE, item, None, self.delivery(item))
            else:
                item_measured = self._measured(item, (place, key), sized=True)
                if not item_measured.proxy:
                    continue
                size = item_measured.size
                step = Step(STORE, item, item_measured, self.delivery(item))
            steps.append((key, step))
            items_bytes = None if items_bytes is None or size is None else items_bytes + size
        if measured.holds_engine_objects:
            return Step(ITEMS, obj, items=tuple(steps)) if steps else None
        if (
            steps
            and items_bytes is not None
            and measured.size is not None
            and measured.size - items_bytes < self.threshold
        ):
            return Step(ITEMS, obj, items=tuple(steps))
        return Step(STORE, obj, measured, self.delivery(obj))

    def _measured(self, obj: Any, where: Any, *, sized: bool = False) -> Measured:
        """:meth:`_measure`, with an error that says which argument cannot be pickled."""
        try:
            return self._measure(obj, sized=sized)
        except SerializationError as exc:
            raise SerializationError(
                f"{_argument_name(where)} (of type {type(obj).__name__}) cannot be serialized, "
                f"so it cannot be sent to a worker: {exc}"
            ) from exc

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


def _argument_name(where: Any) -> str:
    """``argument 0``, ``keyword argument 'data'``, ``item 'k' of argument 1``."""
    if isinstance(where, tuple):
        place, key = where
        return f"item {key!r} of {_argument_name(place)}"
    if isinstance(where, int):
        return f"argument {where}"
    return f"keyword argument {where!r}"


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
