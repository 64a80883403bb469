"""The machinery every engine adapter shares.

Client side, :class:`ArgumentProxier` applies a
:class:`~proxystore.integrations.policy.ProxyPolicy` to a task's arguments: it stores each large
argument once while it is in use (an object passed to many tasks is stored once, not once per
task), returns the arguments to send plus a :class:`Lease`, and when the last lease on a stored
object is released (the task finished, failed or was cancelled) evicts it from the store.

The one submit path (:meth:`ArgumentProxier.submit`) takes the lease, sends the call with the
worker-side wrapper (:class:`~proxystore.integrations.task.ProxyTask`), and releases the lease
if sending fails and when the task is done, failed or cancelled. What travels is in
:mod:`~proxystore.integrations.transit`.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from proxystore.proxy import Proxy, get_factory
from proxystore.serialize import SerializationError
from proxystore.store import Store, get_store

from .policy import Measured, ProxyPolicy
from .task import ProxyTask, store_and_proxy
from .transit import CONTAINERS, PickledArgument, ProxyRef, StoreRef, is_proxy

F = TypeVar("F")

Sent = tuple[tuple[Any, ...], dict[str, Any]]
"""One call's arguments as sent to the engine: positional and keyword."""

logger = logging.getLogger(__name__)

_WRAPPED = frozenset({ProxyRef, PickledArgument})  # arguments only ProxyTask can hand over

_ATOMIC = frozenset({int, float, bool, type(None), complex})  # never proxied: no need to look

_TASK_CACHE_SIZE = 256  # task wrappers kept per adapter (one per distinct function)

EVICT_RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0, 8.0)
"""Seconds before each retry of an eviction that failed when a lease was released."""

__all__ = [
    "ArgumentProxier",
    "Lease",
    "PickledArgument",
    "ProxyRef",
    "ProxyTask",
    "StoreRef",
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
    obj: Any
    proxy: Proxy
    key: str
    users: int = 0


@dataclass
class Lease:
    """What proxying one call produced: the stored objects it uses, and where proxies sit.

    Release it when the task is done.

    Attributes:
        keys: Store keys of the objects stored for (or shared with) this call.
        nested: Positions (``int``) and names (``str``) of the container arguments that hold
            proxies or references one level down, which the worker must look into; the other
            containers are handed to the task body untouched.
        released: Whether :meth:`ArgumentProxier.release` has run for it.
    """

    keys: list[str] = field(default_factory=list)
    nested: list[int | str] = field(default_factory=list)
    released: bool = False


class ArgumentProxier:
    """Applies a policy to task arguments, storing each large object once while in use.

    Args:
        store: Store for proxied arguments (a store or a registered store's name).
        policy: The proxying policy.
        owner: Name of the adapter, for error messages.
        in_process: Whether the engine runs tasks in this process (threads); otherwise the store
            must be re-creatable in worker processes, which is checked here, up front.
        send_refs: Send :class:`ProxyRef` objects instead of proxies (for engines that inspect
            their arguments).
        pickles_arguments: The engine always pickles a call's arguments on their way to the
            worker (a process pool): an argument sent as the bytes pickled to measure it
            (:class:`PickledArgument`) arrives as the object, so a call holding nothing else
            runs the plain function, with no worker-side wrapper.

    Raises:
        ValueError: If the store cannot be re-created in worker processes.
    """

    def __init__(
        self,
        store: Store | str | None,
        policy: ProxyPolicy,
        *,
        owner: str,
        in_process: bool = False,
        send_refs: bool = False,
        pickles_arguments: bool = False,
    ) -> None:
        self.store = resolve_store(store, owner=owner)
        self.policy = policy
        self.owner = owner
        self.send_refs = send_refs
        # Engines that pickle arguments get the bytes pickled while measuring (see
        # PickledArgument); in-process engines get the objects.
        self.ship_pickled = not in_process
        # What only the worker-side wrapper can hand to the task body.
        self._wrapped = _WRAPPED - {PickledArgument} if pickles_arguments else _WRAPPED
        self.store_ref = self.store.description
        if not in_process:
            _check_recreatable(self.store, self.store_ref, owner)
        self._entries: dict[int, _Entry] = {}
        self._tasks: dict[Callable[..., Any], ProxyTask] = {}
        self._by_key: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def task(self, fn: Callable[..., Any], nested: frozenset[int | str] = frozenset()) -> ProxyTask:
        """Wrap ``fn`` for the worker side (one wrapper per function, reused across submits).

        Args:
            fn: The task body.
            nested: Container arguments the worker must look into (``Lease.nested``).
        """
        task = self._task(fn)
        return task.looking_into(nested) if nested else task

    def _task(self, fn: Callable[..., Any]) -> ProxyTask:
        try:
            return self._tasks[fn]
        except (KeyError, TypeError):  # TypeError: an unhashable callable, not cached
            pass
        task = ProxyTask(
            fn,
            prefetch=self.policy.prefetch,
            result_policy=self.policy if self.policy.proxy_results else None,
            store=self.store_ref,
        )
        with contextlib.suppress(TypeError):
            if len(self._tasks) >= _TASK_CACHE_SIZE:
                self._tasks.clear()
            self._tasks[fn] = task
        return task

    def proxy_call(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], Lease]:
        """Return the arguments to send and the lease on the objects they store.

        On any error, whatever this call stored is released again before the error propagates.
        """
        lease = Lease()
        top = self._convert_top
        try:
            new_args = tuple([top(place, arg, lease) for place, arg in enumerate(args)])
            new_kwargs = {name: top(name, value, lease) for name, value in kwargs.items()}
        except BaseException:
            self.release(lease)
            raise
        return new_args, new_kwargs, lease

    def _convert_top(self, place: int | str, obj: Any, lease: Lease) -> Any:
        """Convert an argument (``place``: its position or name)."""
        if type(obj) in _ATOMIC:
            return obj
        new = self._convert(obj, lease, nested=True)
        if new is not obj and type(new) in CONTAINERS:
            # A container came back as a new container: its items were converted (see
            # _convert_items), so the worker must look one level into it.
            lease.nested.append(place)
        return new

    def _convert(self, obj: Any, lease: Lease, *, nested: bool) -> Any:
        policy = self.policy
        if is_proxy(obj):
            return ProxyRef(get_factory(obj)) if self.send_refs else obj
        if policy.passes_through(obj):
            return obj
        entry = self._existing(obj)
        if entry is None:
            measured = self._measure(obj, checked=True)
            kind = type(obj)
            container = nested and (kind is list or kind is tuple or kind is dict)
            if container and (measured.proxy or measured.holds_engine_objects):
                converted = self._convert_items(obj, lease, measured)
                if converted is not None:
                    return converted
            elif not measured.proxy:
                pickled = measured.pickled
                if nested and self.ship_pickled and pickled is not None and pickled.plain:
                    return PickledArgument(pickled.stream)
                return obj
            entry = self._store(obj, measured)
        lease.keys.append(entry.key)
        factory = get_factory(entry.proxy)
        how = policy.delivery(obj)
        if how != "proxy":
            return ProxyRef(factory, deliver_object=True if how == "object" else how)
        return ProxyRef(factory) if self.send_refs else entry.proxy

    def _convert_items(self, obj: Any, lease: Lease, measured: Measured) -> Any:
        """Proxy the large items of a container one by one; ``None`` to store it whole.

        A container holding futures or proxies always travels as the converted container, so
        the engine sees its futures. Otherwise, when it is still large once its large items
        are proxies (or none of its items is large), it is stored whole: the worker resolves it
        into the very structure the caller passed, with no proxies nested inside it.
        """
        items = Lease()
        convert = self._convert
        try:
            if type(obj) is dict:
                converted: Any = {
                    k: v if type(v) in _ATOMIC else convert(v, items, nested=False)
                    for k, v in obj.items()
                }
            else:
                converted = type(obj)(
                    item if type(item) in _ATOMIC else convert(item, items, nested=False)
                    for item in obj
                )
            if measured.holds_engine_objects or (
                items.keys and not self._measure(converted, proxies_inside=True).proxy
            ):
                lease.keys.extend(items.keys)
                return converted
        except BaseException:
            self.release(items)
            raise
        self.release(items)
        return None

    def _measure(
        self, obj: Any, *, proxies_inside: bool = False, checked: bool = False
    ) -> Measured:
        # checked: policy.passes_through(obj) is known to be False.
        policy = self.policy
        try:
            if checked:
                return policy.measure_candidate(obj, proxies_inside=proxies_inside)
            return policy.measure(obj, proxies_inside=proxies_inside)
        except SerializationError as exc:
            raise SerializationError(
                f"{self.owner}: a task argument of type {type(obj).__name__} cannot be "
                f"serialized, so it cannot be sent to a worker: {exc}"
            ) from exc

    def _existing(self, obj: Any) -> _Entry | None:
        # Looked up without the lock first: most arguments are not stored. (Should another
        # thread be storing the same object right now, _store keeps one copy.)
        if id(obj) not in self._entries:
            return None
        with self._lock:
            entry = self._entries.get(id(obj))
            if entry is not None and entry.obj is obj:
                entry.users += 1
                return entry
        return None

    def _store(self, obj: Any, measured: Measured) -> _Entry:
        proxy = store_and_proxy(self.store, obj, measured, evict=False)
        key = get_factory(proxy).key  # type: ignore[attr-defined]
        with self._lock:
            entry = self._entries.get(id(obj))
            if entry is not None and entry.obj is obj:
                # Another thread stored the same object meanwhile: keep one copy.
                entry.users += 1
                duplicate = key
            else:
                entry = _Entry(obj, proxy, key, users=1)
                self._entries[id(obj)] = entry
                self._by_key[key] = entry
                duplicate = None
        if duplicate is not None:
            self.store.evict(duplicate)
        return entry

    def sends_as_is(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """Whether a call goes to the engine untouched: only scalars, no result by proxy.

        Then nothing is measured, stored, leased or wrapped: the plain function runs with the
        very arguments, and adapters may hand the call straight to the engine.
        """
        if self.policy.proxy_results:
            return False
        atomic = _ATOMIC
        for value in args:
            if type(value) not in atomic:
                return False
        if kwargs:
            for value in kwargs.values():
                if type(value) not in atomic:
                    return False
        return True

    def submit(
        self,
        fn: Callable[..., Any],
        send: Callable[..., F],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> F:
        """The one submit path: proxy a call's arguments, send it, tie the lease to its future.

        ``send(task, *args, **kwargs)`` gets what to run on the worker (the worker-side
        wrapper of ``fn``, or ``fn`` itself when no argument needs it) and the arguments to
        send, and returns the engine's future (anything with ``add_done_callback``). The lease
        is released if ``send`` raises, and when the future is done, whether it succeeded,
        failed or was cancelled.
        """
        if self.sends_as_is(args, kwargs):
            return send(fn, *args, **kwargs)  # nothing to store, lease, wrap or measure
        new_args, new_kwargs, lease = self.proxy_call(args, kwargs)
        try:
            future = send(
                self._runner(fn, lease.nested, [(new_args, new_kwargs)]), *new_args, **new_kwargs
            )
        except BaseException:
            self.release(lease)
            raise
        if lease.keys:  # nothing stored: nothing to release, no callback
            self.release_when_done(future, lease)
        return future

    def _runner(
        self, fn: Callable[..., Any], nested: Iterable[int | str], sent: list[Sent]
    ) -> Callable[..., Any]:
        """What the worker runs: ``fn`` itself, or its wrapper when an argument needs it."""
        nested = frozenset(nested)
        if nested or self.policy.proxy_results or not all(map(self._untouched, sent)):
            return self.task(fn, nested)
        return fn  # nothing for the worker side to do: the plain call, no wrapper

    def _untouched(self, call: Sent) -> bool:
        """Whether a call's arguments hold nothing the worker-side wrapper must handle."""
        args, kwargs = call
        wrapped = self._wrapped
        return not any(type(v) in wrapped or is_proxy(v) for v in (*args, *kwargs.values()))

    def submit_calls(
        self,
        fn: Callable[..., Any],
        calls: Sequence[tuple[tuple[Any, ...], Mapping[str, Any]]],
        send: Callable[[Callable[..., Any], list[Sent]], Sequence[F]],
    ) -> list[F]:
        """:meth:`submit` for many calls of ``fn`` sent together (``map``, chunks).

        ``send`` gets what to run (as for :meth:`submit`) and every call's arguments, and returns
        either one future per call (each call's lease is tied to its own future) or a single
        future for all of them (all leases are tied to it). Every lease is released if
        proxying or ``send`` raises.
        """
        leases: list[Lease] = []
        sent: list[Sent] = []
        try:
            for args, kwargs in calls:
                new_args, new_kwargs, lease = self.proxy_call(args, kwargs)
                leases.append(lease)
                sent.append((new_args, new_kwargs))
            nested = [place for lease in leases for place in lease.nested]
            futures = list(send(self._runner(fn, nested, sent), sent))
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
                if lease.keys:  # nothing stored: nothing to release, no callback
                    self.release_when_done(future, lease)
        else:
            merged = Lease([key for lease in leases for key in lease.keys])
            if merged.keys:
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
            for key in lease.keys:
                entry = self._by_key.get(key)
                if entry is None:
                    continue
                entry.users -= 1
                if entry.users <= 0:
                    del self._by_key[key]
                    self._entries.pop(id(entry.obj), None)
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


def _check_recreatable(store: Store, ref: StoreRef, owner: str) -> None:
    if getattr(store, "process_local", False):
        raise ValueError(
            f"{owner}: {type(store).__name__} {store.name!r} keeps objects in this process's "
            "memory, but this engine runs tasks in other processes. Use a FileStore or "
            "RedisStore (or a thread-based executor)."
        )
    if ref.type_path.startswith("__main__:"):
        raise ValueError(
            f"{owner}: the store class {type(store).__name__} is defined in __main__, so worker "
            "processes cannot import it to re-create the store; move it into a module"
        )
    try:
        pickle.dumps(ref)
    except Exception as exc:
        raise ValueError(
            f"{owner}: the settings of {type(store).__name__} {store.name!r} cannot be pickled, "
            f"so workers cannot re-create the store: {exc}"
        ) from exc
