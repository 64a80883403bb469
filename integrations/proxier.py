"""The machinery every engine adapter shares: carrying out a call's plan.

Client side, :class:`ArgumentProxier` gets a call's plan
(:class:`~proxystore.integrations.policy.CallPlan`) from its
:class:`~proxystore.integrations.policy.ProxyPolicy` (:meth:`ArgumentProxier.plan`) and carries
it out (:meth:`ArgumentProxier.carry_out`): it stores each object the plan stores once
while it is in use (an object passed to many tasks is stored once, not once per task), and
returns the arguments to send plus a :class:`Lease`; when the last lease on a stored object is
released (the task finished, failed or was cancelled) it evicts the object from the store.

The one submit path (:meth:`ArgumentProxier.submit`) carries the plan out, sends the call with
the worker-side wrapper (:class:`~proxystore.integrations.task.ProxyTask`) when the plan needs
it, and releases the lease if sending fails and when the task is done, failed or cancelled.
What travels is in :mod:`~proxystore.integrations.transit`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import pickle
import threading
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, TypeVar, cast

from proxystore.exceptions import StoreTimeoutError
from proxystore.proxy import Proxy, get_factory
from proxystore.store import Store, get_store
from proxystore.store.description import StoreDescription

from .policy import FORWARD, ITEMS, SEND, STORE, CallPlan, Measured, Planner, ProxyPolicy, Step
from .results import OwnedFactory, ResultHold, ResultTracker, owned_result
from .task import ProxyTask, store_and_proxy
from .transit import PickledArgument, ProxyRef

F = TypeVar("F")

Sent = tuple[tuple[Any, ...], dict[str, Any]]
"""One call's arguments as sent to the engine: positional and keyword."""

Pickling = Literal["never", "always", "maybe"]
"""How an engine carries a call's arguments to the worker: ``"never"`` pickled (threads of this
process: the objects themselves), ``"always"`` pickled (process pools), or ``"maybe"`` (Dask,
Parsl and other engines, which may do either)."""

PICKLINGS: tuple[str, ...] = ("never", "always", "maybe")

logger = logging.getLogger(__name__)

_TASK_CACHE_SIZE = 256  # task wrappers kept per adapter (one per distinct function)
SHARED_STORE_WAIT = 600.0
"""Seconds a call waits for another call (in another thread) that is storing the same
object, before it gives up with a :class:`~proxystore.exceptions.StoreTimeoutError`."""

EVICT_RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0, 8.0)
"""Seconds before each retry of an eviction that failed when a lease was released."""

__all__ = [
    "PICKLINGS",
    "ArgumentProxier",
    "Lease",
    "PickledArgument",
    "Pickling",
    "ProxyRef",
    "ProxyTask",
    "resolve_store",
]


def resolve_store(store: Store | str | None, *, owner: str) -> Store:
    """Return the store an adapter was given: a store object, or a registered store's name.

    Raises:
        TypeError: If ``store`` is missing or neither a store nor a name.
        ValueError: If no store is registered under the given name.
    """
    if isinstance(store, Store):
        return store
    if isinstance(store, str):
        found = get_store(store)
        if found is None:
            raise ValueError(
                f"{owner}: no store is registered under the name {store!r}; create it first "
                f"with proxystore.store.init_store(..., name={store!r}) or pass the store object"
            )
        return found
    raise TypeError(
        f"{owner} needs store= (a proxystore Store, or the name of a registered one), "
        f"got {type(store).__name__}"
    )


@dataclass
class _Entry:
    """An object stored for the calls that use it (stored once, by the first of them)."""

    obj: Any
    users: int = 0
    size: int | None = None
    proxy: Proxy | None = None  # set once stored
    key: str = ""
    ready: threading.Event = field(default_factory=threading.Event)  # stored, or failed
    failed: bool = False


@dataclass
class Lease:
    """The stored objects one call uses. Release it when the task is done.

    Attributes:
        keys: Store keys of the objects stored for (or shared with) this call.
        results: Holds on stored results (of earlier tasks) this call receives, dropped when
            the lease is released (:class:`~proxystore.integrations.results.ResultHold`).
        released: Whether :meth:`ArgumentProxier.release` has run for it.
    """

    keys: list[str] = field(default_factory=list)
    results: list[ResultHold] = field(default_factory=list)
    released: bool = False

    @property
    def holds(self) -> bool:
        """Whether the lease holds anything (a stored argument or a result)."""
        return bool(self.keys or self.results)


class ArgumentProxier:
    """Carries out the plans of a policy, storing each large object once while in use.

    Args:
        store: Store for proxied arguments (a store or a registered store's name).
        policy: The proxying policy.
        owner: Name of the adapter, for error messages.
        pickling: How the engine carries a call's arguments (:data:`Pickling`): ``"never"``
            pickled (it runs tasks in this process: arguments below the threshold go as the
            objects, and the store need not be re-created elsewhere), ``"always"`` (a process
            pool: an argument sent as the bytes pickled to measure it arrives as the object,
            so a call holding nothing else runs the plain function), or ``"maybe"`` (the
            default: such bytes travel as :class:`PickledArgument`, which the worker-side
            wrapper unwraps if the engine did not). Unless ``"never"``, the store must be
            re-creatable in worker processes, which is checked here, up front.
        send_refs: Send :class:`ProxyRef` objects instead of proxies (for engines that inspect
            their arguments).
        result_key: With ``policy.proxy_results``: called on the worker to name a stored
            result (see :class:`ProxyTask`); for engines that keep results on their workers.
        result_refs: With ``policy.proxy_results``: results come back as
            :class:`~proxystore.integrations.transit.ResultRef` from other processes, for
            engines that take a proxy for code (Parsl).

    Raises:
        ValueError: If ``pickling`` is none of the three, or the store cannot be re-created
            in worker processes.
    """

    def __init__(
        self,
        store: Store | str | None,
        policy: ProxyPolicy,
        *,
        owner: str,
        pickling: Pickling = "maybe",
        send_refs: bool = False,
        result_key: Callable[[], str | None] | None = None,
        result_refs: bool = False,
    ) -> None:
        if pickling not in PICKLINGS:
            raise ValueError(
                f"{owner}: pickling= must be one of {', '.join(PICKLINGS)} (how the engine "
                f"carries a call's arguments), got {pickling!r}"
            )
        self.store = resolve_store(store, owner=owner)
        self.policy = policy
        self.owner = owner
        self.pickling = pickling
        self.send_refs = send_refs
        self.description: StoreDescription = self.store.description
        if pickling != "never":
            _check_recreatable(self.store, self.description, owner)
        self._entries: dict[int, _Entry] = {}
        self._tasks: dict[Callable[..., Any], ProxyTask] = {}
        self._by_key: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.result_key = result_key
        self.result_refs = result_refs
        self.results: ResultTracker | None = None
        """Holds on the results the worker stored (``policy.proxy_results``), else ``None``."""
        if policy.proxy_results:
            self.results = ResultTracker(
                self.store, owner=owner, evict=policy.evict, lifetime=policy.lifetime
            )
        self.plan: Planner = self.planner()
        """``plan(args, kwargs)``: the policy's plan of a call
        (:meth:`~proxystore.integrations.policy.ProxyPolicy.plan`) given what is stored now;
        errors name the adapter and the argument."""

    def planner(self, keep: Container[str] = frozenset()) -> Planner:
        """A :attr:`plan` that leaves the keyword arguments named in ``keep`` alone.

        Args:
            keep: Names of keyword arguments that are the engine's own options (never proxied),
                such as Dask's ``key`` or Parsl's ``outputs``.
        """
        return self.policy.planner(self._entries, keep, owner=self.owner)

    def task(self, fn: Callable[..., Any], nested: frozenset[int | str] = frozenset()) -> ProxyTask:
        """Wrap ``fn`` for the worker side (one wrapper per function, reused across submits).

        Args:
            fn: The task body.
            nested: Container arguments the worker must look into (``CallPlan.nested``).
        """
        task = self._task(fn)
        return task.looking_into(nested) if nested else task

    def _task(self, fn: Callable[..., Any]) -> ProxyTask:
        try:
            return self._tasks[fn]
        except (KeyError, TypeError):  # TypeError: an unhashable callable, not cached
            pass
        results = self.results
        task = ProxyTask(
            fn,
            prefetch=self.policy.prefetch,
            result_policy=self.policy if self.policy.proxy_results else None,
            store=self.description,
            result_owner=None if results is None else results.token,
            result_key=self.result_key,
            result_ttl=_lease_seconds(self.policy.lifetime),
            result_refs_from=os.getpid() if self.result_refs else None,
        )
        with contextlib.suppress(TypeError):
            if len(self._tasks) >= _TASK_CACHE_SIZE:
                self._tasks.clear()
            self._tasks[fn] = task
        return task

    def carry_out(
        self,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        plan: CallPlan | None = None,
    ) -> tuple[tuple[Any, ...], dict[str, Any], Lease]:
        """Carry out a call's plan: store what it stores; return what to send and the lease.

        Args:
            args: The call's positional arguments.
            kwargs: The call's keyword arguments.
            plan: Their plan (from :meth:`plan`); made here when not given.

        On any error, whatever this call stored is released again before the error propagates.
        """
        if plan is None:
            plan = self.plan(args, kwargs)
        lease = Lease()
        new_kwargs = dict(kwargs)
        try:
            if plan.args:
                new_args = list(args)
                for place, step in plan.args:
                    new_args[place] = self._carry(step, lease)
                args = tuple(new_args)
            for name, step in plan.kwargs:
                new_kwargs[name] = self._carry(step, lease)
        except BaseException:
            self.release(lease)
            raise
        return args, new_kwargs, lease

    def _carry(self, step: Step, lease: Lease) -> Any:
        """What travels for one step of a plan (storing and leasing what it stores)."""
        action = step.action
        if action == STORE:
            obj = step.obj
            entry = self._stored(obj, step.measured)
            lease.keys.append(entry.key)
            proxy = cast(Proxy, entry.proxy)  # set: the entry is stored
            how = step.delivery
            if how != "proxy":
                factory = get_factory(proxy)
                return ProxyRef(factory, deliver_object=True if how == "object" else how)
            return ProxyRef(get_factory(proxy)) if self.send_refs else proxy
        if action == SEND:
            measured = step.measured
            if self.pickling == "never" or measured is None or measured.pickled is None:
                return step.obj
            return PickledArgument(measured.pickled.stream)
        if action == FORWARD:
            factory = get_factory(step.obj)
            if type(factory) is OwnedFactory:
                held = owned_result(step.obj)
                if held is not None:  # a tracked result: held for the task, sent plainly
                    lease.results.append(held)
                    return ProxyRef(factory.plain())
            return ProxyRef(factory) if self.send_refs else step.obj
        if action == ITEMS:
            obj = step.obj
            if type(obj) is dict:
                new_dict = dict(obj)
                for key, item in step.items:
                    new_dict[key] = self._carry(item, lease)
                return new_dict
            new_items = list(obj)
            for index, item in step.items:
                new_items[index] = self._carry(item, lease)  # type: ignore[index]
            return new_items if type(obj) is list else type(obj)(new_items)
        raise ValueError(f"{self.owner}: a plan step has an unknown action {action!r}")

    def _stored(self, obj: Any, measured: Measured | None) -> _Entry:
        """The entry of ``obj`` with one more user, storing it if no call has stored it yet.

        The first call to need an object stores it; a call that needs it meanwhile (in
        another thread) waits for that copy instead of storing a second one, so nothing a
        call stores is evicted again as a duplicate. Should the first call's store fail, a
        waiting call stores the object itself.
        """
        while True:
            with self._lock:
                entry = self._entries.get(id(obj))
                if entry is not None and entry.obj is obj:
                    entry.users += 1
                    mine = False
                else:
                    size = None if measured is None else measured.size
                    entry = _Entry(obj, users=1, size=size)
                    self._entries[id(obj)] = entry
                    mine = True
            if mine:
                return self._store(entry, measured)
            if not entry.ready.wait(SHARED_STORE_WAIT):
                with self._lock:
                    entry.users -= 1
                raise StoreTimeoutError(
                    f"{type(self.store).__name__} {self.store.name!r}: another call has been "
                    f"storing the same {type(obj).__name__} argument for {SHARED_STORE_WAIT:g} s "
                    "and has not finished; check the store (a stopped server, a full file "
                    "system) or pass the argument by value",
                    store_name=self.store.name,
                    store_type=type(self.store).__name__,
                )
            if not entry.failed:
                return entry

    def _store(self, entry: _Entry, measured: Measured | None) -> _Entry:
        obj = entry.obj
        try:
            pickled = None if measured is None else measured.pickled
            proxy = store_and_proxy(self.store, obj, pickled, evict=False)
        except BaseException:
            with self._lock:
                if self._entries.get(id(obj)) is entry:
                    del self._entries[id(obj)]
                entry.failed = True
            entry.ready.set()
            raise
        with self._lock:
            entry.proxy = proxy
            entry.key = get_factory(proxy).key  # type: ignore[attr-defined]
            self._by_key[entry.key] = entry
        entry.ready.set()
        lifetime = self.policy.lifetime
        if lifetime is not None:
            with contextlib.suppress(ValueError):  # an ended lifetime: released as usual
                lifetime.add_key(entry.key, store=self.store)
        return entry

    def submit(
        self,
        fn: Callable[..., Any],
        send: Callable[..., F],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        plan: CallPlan | None = None,
        *,
        hold: Iterable[ResultHold] = (),
    ) -> F:
        """The one submit path: carry out a call's plan, send it, tie the lease to its future.

        ``send(task, *args, **kwargs)`` gets what to run on the worker (the worker-side
        wrapper of ``fn``, or ``fn`` itself when no argument needs it) and the arguments to
        send, and returns the engine's future (anything with ``add_done_callback``). The lease
        is released if ``send`` raises, and when the future is done, whether it succeeded,
        failed or was cancelled.

        Args:
            fn: The task body.
            send: Hands the call to the engine.
            args: The call's positional arguments.
            kwargs: The call's keyword arguments.
            plan: Their plan (from :meth:`plan`); made here when not given.
            hold: Holds on stored results (of earlier tasks) the call receives through the
                engine (its futures), dropped when the task ends.
        """
        if plan is None:
            plan = self.plan(args, kwargs)
        if plan.sends_as_is and not hold:
            return send(fn, *args, **kwargs)  # nothing to store, lease, wrap or measure
        new_args, new_kwargs, lease = self.carry_out(args, kwargs, plan)
        lease.results.extend(hold)
        try:
            future = send(self._runner(fn, plan), *new_args, **new_kwargs)
        except BaseException:
            self.release(lease)
            raise
        if lease.holds:  # nothing stored or held: nothing to release, no callback
            self.release_when_done(future, lease)
        return future

    def _runner(self, fn: Callable[..., Any], plan: CallPlan) -> Callable[..., Any]:
        """What the worker runs: ``fn`` itself, or its wrapper when an argument needs it."""
        # Bytes pickled to measure an argument arrive as the object when the engine pickles
        # the call; only the wrapper unpickles them when it may not.
        if plan.task or (plan.sends_pickled and self.pickling == "maybe"):
            task = self.task(fn, plan.nested)
            if task.result_ttl is not None:  # the lease's time left now, not when first made
                task = copy.copy(task)
                task.result_ttl = _lease_seconds(self.policy.lifetime)
            return task
        return fn  # nothing for the worker side to do: the plain call, no wrapper

    def submit_calls(
        self,
        fn: Callable[..., Any],
        calls: Sequence[tuple[tuple[Any, ...], Mapping[str, Any]]],
        send: Callable[[Callable[..., Any], list[Sent]], Sequence[F]],
    ) -> list[F]:
        """:meth:`submit` for many calls of ``fn`` sent together (``map``, chunks).

        Each call is planned and carried out in turn (so an object passed to several of them
        is stored once). ``send`` gets what to run (as for :meth:`submit`) and every call's
        arguments, and returns either one future per call (each call's lease is tied to its
        own future) or a single future for all of them (all leases are tied to it). Every
        lease is released if carrying out a plan or ``send`` raises.
        """
        leases: list[Lease] = []
        plans: list[CallPlan] = []
        sent: list[Sent] = []
        try:
            for args, kwargs in calls:
                plan = self.plan(args, kwargs)
                new_args, new_kwargs, lease = self.carry_out(args, kwargs, plan)
                plans.append(plan)
                leases.append(lease)
                sent.append((new_args, new_kwargs))
            futures = list(send(self._runner(fn, _joined(plans)), sent))
            if len(futures) != len(leases) and len(futures) != 1:
                raise RuntimeError(
                    f"{self.owner}: the engine returned {len(futures)} futures for "
                    f"{len(leases)} calls"
                )
        except BaseException:
            for lease in leases:
                self.release(lease)
            raise
        if len(futures) == len(leases):
            for future, lease in zip(futures, leases):
                if lease.holds:  # nothing stored or held: nothing to release, no callback
                    self.release_when_done(future, lease)
        else:
            merged = Lease(
                [key for lease in leases for key in lease.keys],
                [held for lease in leases for held in lease.results],
            )
            if merged.holds:
                self.release_when_done(futures[0], merged)
        return futures

    def release_when_done(self, future: Any, lease: Lease) -> None:
        """Release ``lease`` when ``future`` is done (succeeded, failed or cancelled)."""
        future.add_done_callback(lambda _: self.release(lease))

    def release(self, lease: Lease) -> None:
        """Release a task's lease: evict each object whose last user this was (policy permitting).

        Safe to call more than once. Eviction happens under the lock, so an object is never
        handed to a new task while it is being evicted, and once :meth:`in_use` no longer lists
        a key its object is gone (unless evicting it failed). A failing eviction never keeps
        the rest of the lease from being released: it is logged and retried in the background
        (:data:`EVICT_RETRY_DELAYS`), and logged as an error if every retry fails.
        """
        with self._lock:
            if lease.released:
                return
            lease.released = True
            for held in lease.results:
                held.release()
            for key in lease.keys:
                entry = self._by_key.get(key)
                if entry is None:
                    continue
                entry.users -= 1
                if entry.users <= 0:
                    del self._by_key[key]
                    if self._entries.get(id(entry.obj)) is entry:
                        del self._entries[id(entry.obj)]
                    if self.policy.evict:
                        self._evict(key, attempt=0)

    def _evict(self, key: str, attempt: int) -> None:
        try:
            self.store.evict(key)
        except Exception as exc:
            where = f"{type(self.store).__name__} {self.store.name!r}"
            if attempt >= len(EVICT_RETRY_DELAYS):
                logger.error(
                    "%s: evicting key %s from %s failed %d times (%s); giving up: the object "
                    "stays in the store until it is removed there",
                    self.owner, key, where, attempt + 1, exc,
                )  # fmt: skip
                return
            delay = EVICT_RETRY_DELAYS[attempt]
            logger.warning(
                "%s: evicting key %s from %s failed (%s); retrying in %.1f s",
                self.owner, key, where, exc, delay,
            )  # fmt: skip
            timer = threading.Timer(delay, self._evict, (key, attempt + 1))
            timer.name = "proxystore-evict-retry"
            timer.daemon = True
            timer.start()

    def in_use(self) -> dict[str, int]:
        """Return the stored keys still in use and how many tasks use each."""
        with self._lock:
            return {key: entry.users for key, entry in self._by_key.items()}


def _lease_seconds(lifetime: Any) -> float | None:
    """The seconds left of a lease lifetime (what stored results live at most), else ``None``."""
    remaining = getattr(lifetime, "remaining", None)
    if not callable(remaining):
        return None
    seconds = float(remaining())
    return seconds if seconds > 0 else None


def _joined(plans: Iterable[CallPlan]) -> CallPlan:
    """One plan's worth of what the worker must do for all of ``plans`` (sent with one task)."""
    nested: set[int | str] = set()
    task = sends_pickled = False
    for plan in plans:
        nested.update(plan.nested)
        task = task or plan.task
        sends_pickled = sends_pickled or plan.sends_pickled
    return CallPlan(nested=frozenset(nested), task=task, sends_pickled=sends_pickled)


def _check_recreatable(store: Store, description: StoreDescription, owner: str) -> None:
    if getattr(store, "process_local", False):
        raise ValueError(
            f"{owner}: {type(store).__name__} {store.name!r} keeps objects in this process's "
            "memory, but this engine runs tasks in other processes. Use a FileStore or "
            "RedisStore (or a thread-based executor)."
        )
    if description.type_path.startswith("__main__:"):
        raise ValueError(
            f"{owner}: the store class {type(store).__name__} is defined in __main__, so worker "
            "processes cannot import it to re-create the store; move it into a module"
        )
    try:
        pickle.dumps(description)
    except Exception as exc:
        raise ValueError(
            f"{owner}: the settings of {type(store).__name__} {store.name!r} cannot be pickled, "
            f"so workers cannot re-create the store: {exc}"
        ) from exc
