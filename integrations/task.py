"""The worker side of every adapter: :class:`ProxyTask` wraps the task body.

It turns arguments that travelled as :class:`~proxystore.integrations.transit.ProxyRef` back
into proxies, starts resolving every proxied argument in the background (several large
arguments download in parallel and overlap with the start of the body), hands the body the
objects of the kinds the policy delivers as objects (or what their resolver makes of them),
runs the body, and returns a large result as a proxy when the policy asks for it.
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
from typing import Any, Callable

from proxystore.proxy import Proxy, extract, get_factory, resolve_async
from proxystore.serialize import Pickled
from proxystore.store import Store
from proxystore.store.description import StoreDescription
from proxystore.store.lifetimes import expirer_of

from .policy import CONTAINERS, ProxyPolicy
from .results import OwnedFactory
from .transit import PickledArgument, ProxyRef, ResultRef, is_proxy

__all__ = ["ProxyTask", "store_and_proxy"]


class _Arguments:
    """A task's arguments on the worker: proxies revived, prefetched, objects delivered."""

    def __init__(self) -> None:
        self.proxies: list[Proxy] = []
        # id(proxy) -> (proxy, True or a resolver), for the proxies delivered as objects
        self.deliver: dict[int, tuple[Proxy, Any]] = {}

    def revive(self, value: Any, nested: bool) -> Any:
        """ProxyRefs back to proxies, at the top level and, if ``nested``, one level down."""
        return _each(value, nested, self._revive)

    def _revive(self, obj: Any) -> Any:
        if type(obj) is PickledArgument:  # not pickled on the way (an in-process engine)
            return pickle.loads(obj.stream)
        if type(obj) is ResultRef:
            obj = Proxy(obj.factory)
        elif type(obj) is ProxyRef:
            proxy = Proxy(obj.factory)
            if obj.deliver_object:
                self.deliver[id(proxy)] = (proxy, obj.deliver_object)
            obj = proxy
        elif not is_proxy(obj):
            return obj
        self.proxies.append(obj)
        return obj

    def deliver_objects(self, value: Any, nested: bool) -> Any:
        """Replace the proxies delivered as objects by their targets (``nested`` as in revive)."""
        return _each(value, nested, self._object)

    def _object(self, obj: Any) -> Any:
        if not is_proxy(obj):
            return obj
        entry = self.deliver.get(id(obj))
        if entry is None or entry[0] is not obj:
            return obj
        target = extract(entry[0])
        how = entry[1]
        return target if how is True else how(target)


def _each(value: Any, nested: bool, one: Callable[[Any], Any]) -> Any:
    """``one(value)``, or, for a marked (``nested``) container, ``one`` of each of its items."""
    kind = type(value)
    if not nested or kind not in CONTAINERS:
        return one(value)
    if kind is dict:
        return {k: one(v) for k, v in value.items()}
    return kind(one(item) for item in value)


class ProxyTask:
    """Worker-side wrapper of a task body: revive proxies, prefetch, run, proxy the result.

    Picklable when ``fn`` is. Looks like ``fn`` to engines that inspect it (``__name__``,
    ``__doc__``, ``__wrapped__`` for :func:`inspect.signature`).

    Args:
        fn: The task body.
        prefetch: Start resolving every proxied argument before the body runs.
        result_policy: Policy deciding whether the result goes back by proxy (``None``: never).
        store: Where results are stored, when ``result_policy`` proxies them.
        result_owner: Token of the adapter's
            :class:`~proxystore.integrations.results.ResultTracker`: a stored result comes
            back as a proxy the adapter owns (evicted once nothing can use it).
        result_key: Called on the worker to name a stored result (``None``: a fresh key);
            for engines that keep results on their workers (Dask), so that the adapter
            knows the key without fetching the result.
        result_ttl: Seconds a stored result lives at most (the policy's lease), set on the
            store's keys where it supports expiry (Redis), so a killed client leaks nothing.
        result_refs_from: The client's process id, for engines that take a callable result
            for code (Parsl): run in another process, the task returns a stored result as a
            :class:`~proxystore.integrations.transit.ResultRef`, which unpickles into the
            proxy (a proxy answers ``callable()``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        prefetch: bool = True,
        result_policy: ProxyPolicy | None = None,
        store: StoreDescription | None = None,
        result_owner: str | None = None,
        result_key: Callable[[], str | None] | None = None,
        result_ttl: float | None = None,
        result_refs_from: int | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"task must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.prefetch = prefetch
        self.result_policy = (
            result_policy if result_policy and result_policy.proxy_results else None
        )
        self.store = store
        self.result_owner = result_owner
        self.result_key = result_key
        self.result_ttl = result_ttl
        self.result_refs_from = result_refs_from
        self.nested: frozenset[int | str] = frozenset()
        functools.update_wrapper(self, fn, updated=())

    def looking_into(self, nested: frozenset[int | str]) -> ProxyTask:
        """A copy that also looks one level into the given container arguments."""
        task = copy.copy(self)
        task.nested = nested
        return task

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task body with proxied arguments prefetching."""
        arguments = _Arguments()
        nested = self.nested
        args = tuple(arguments.revive(arg, i in nested) for i, arg in enumerate(args))
        kwargs = {name: arguments.revive(value, name in nested) for name, value in kwargs.items()}
        if self.prefetch:
            for proxy in arguments.proxies:
                resolve_async(proxy)
        if arguments.deliver:
            args = tuple(arguments.deliver_objects(a, i in nested) for i, a in enumerate(args))
            kwargs = {
                name: arguments.deliver_objects(value, name in nested)
                for name, value in kwargs.items()
            }
        result = self.fn(*args, **kwargs)
        if self.result_policy is not None and self.store is not None:
            measured = self.result_policy.measure_result(result)
            if measured.proxy:
                return self._stored_result(result, measured.pickled)
        return result

    def _stored_result(self, result: Any, pickled: Pickled | None) -> Proxy | ResultRef:
        """Store a large result; return its proxy (owned by the adapter, when it tracks)."""
        assert self.store is not None
        store = self.store.get_or_create()
        key = None
        if self.result_key is not None and self.result_owner is not None:
            name = self.result_key()
            if name is not None:
                key = f"{self.result_owner}-{name}"
        proxy = store_and_proxy(store, result, pickled, evict=False, key=key)
        if self.result_ttl is not None:
            expire = expirer_of(store)
            if expire is not None:
                expire(get_factory(proxy).key, self.result_ttl)  # type: ignore[attr-defined]
        factory = get_factory(proxy)
        if self.result_owner is not None:
            factory = OwnedFactory(factory, self.result_owner)
        refs_from = self.result_refs_from
        if refs_from is not None and refs_from != os.getpid():
            return ResultRef(factory)  # becomes the proxy where it is unpickled
        return Proxy(factory)

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent with every task: only what the worker needs (the store only for results).
        results = self.result_policy is not None
        store = self.store if results else None
        state = (
            (self.result_owner, self.result_key, self.result_ttl, self.result_refs_from)
            if results
            else None
        )
        return (
            _rebuild_task,
            (self.fn, self.prefetch, self.result_policy, store, self.nested, state),
        )

    def __repr__(self) -> str:
        return f"ProxyTask({getattr(self.fn, '__qualname__', self.fn)!r})"


def _rebuild_task(
    fn: Callable[..., Any],
    prefetch: bool,
    result_policy: ProxyPolicy | None,
    store: StoreDescription | None,
    nested: frozenset[int | str],
    results: tuple[str | None, Callable[[], str | None] | None, float | None, int | None]
    | None = None,
) -> ProxyTask:
    owner, key, ttl, refs_from = results if results is not None else (None, None, None, None)
    task = ProxyTask(
        fn,
        prefetch=prefetch,
        result_policy=result_policy,
        store=store,
        result_owner=owner,
        result_key=key,
        result_ttl=ttl,
        result_refs_from=refs_from,
    )
    task.nested = nested
    return task


def store_and_proxy(
    store: Store, obj: Any, pickled: Pickled | None, *, evict: bool, key: str | None = None
) -> Proxy:
    """Store ``obj`` (as the bytes ``pickled`` while measuring it, when there are any); proxy it.

    Args:
        store: The store.
        obj: The object.
        pickled: The bytes pickled while measuring it, if any.
        evict: Whether the proxy evicts the object once resolved.
        key: The key to store it under (default: a new one).
    """
    if pickled is not None:
        if store.codec.by_reference:  # keeps what it is given: bytes, not the Pickled
            key = store.set(b"".join(pickled.parts()), key=key, serialize=False)
        else:  # its pieces as they are, never joined into one copy first
            key = store.set(pickled, key=key)
        return store.proxy(key=key, evict=evict)
    return store.proxy(obj, key=key, evict=evict)
