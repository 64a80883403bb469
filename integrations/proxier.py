"""The machinery every engine adapter shares.

Client side, :class:`ArgumentProxier` applies a
:class:`~proxystore.integrations.policy.ProxyPolicy` to a task's arguments: it stores each large
argument once while it is in use (an object passed to many tasks is stored once, not once per
task), returns the arguments to send plus a :class:`Lease`, and when the last lease on a stored
object is released (the task finished, failed or was cancelled) evicts it from the store.

Worker side, :class:`ProxyTask` wraps the task body: it turns arguments that travelled as
:class:`ProxyRef` back into proxies, starts resolving every proxied argument in the background
(several large arguments download in parallel and overlap with the start of the body), runs the
body, and returns a large result as a proxy when the policy asks for it.

Engines that inspect task arguments (Dask tokenizes them, Parsl looks for futures in them) are
sent :class:`ProxyRef` objects instead of proxies: a ``ProxyRef`` is plain data holding a
factory, so nothing on the client or the scheduler can resolve (fetch) the object by looking at
it. Only the worker-side wrapper makes a proxy of it.
"""

from __future__ import annotations

import functools
import pickle
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from proxystore.factory import Factory
from proxystore.proxy import Proxy, get_factory, resolve_async
from proxystore.serialize import SerializationError
from proxystore.store import Store, get_store
from proxystore.store.description import StoreDescription

from .policy import Measured, ProxyPolicy

__all__ = [
    "ArgumentProxier",
    "Lease",
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


StoreRef = StoreDescription
"""The store description workers re-create the store from (one type for factories and here)."""


class ProxyRef:
    """A proxy in transit: its factory only, made into a proxy again on the worker.

    Args:
        factory: The proxy's factory.
    """

    __slots__ = ("factory",)

    def __init__(self, factory: Factory[Any]) -> None:
        self.factory = factory

    @property
    def key(self) -> str:
        """A stable identity: the store key when the factory has one."""
        key = getattr(self.factory, "key", None)
        return key if isinstance(key, str) else f"factory-{id(self.factory):x}"

    def __dask_tokenize__(self) -> tuple[str, str]:
        # Duck-typed hook: Dask tokenizes task arguments; the key identifies the object.
        return ("proxystore.ProxyRef", self.key)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProxyRef, (self.factory,))

    def __eq__(self, other: object) -> bool:
        return type(other) is ProxyRef and other.factory is self.factory

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"ProxyRef({self.key})"


def _is_proxy(obj: Any) -> bool:
    # type(), never isinstance(): isinstance() reads __class__, which resolves a proxy.
    return issubclass(type(obj), Proxy)


def _revive(obj: Any, found: list[Proxy]) -> Any:
    if type(obj) is ProxyRef:
        obj = Proxy(obj.factory)
    elif not _is_proxy(obj):
        return obj
    found.append(obj)
    return obj


def _revive_all(value: Any, found: list[Proxy]) -> Any:
    """ProxyRefs back to proxies, at the top level and one level into list/tuple/dict."""
    kind = type(value)
    if kind is list or kind is tuple:
        return kind(_revive(item, found) for item in value)
    if kind is dict:
        return {k: _revive(v, found) for k, v in value.items()}
    return _revive(value, found)


class ProxyTask:
    """Worker-side wrapper of a task body: revive proxies, prefetch, run, proxy the result.

    Picklable when ``fn`` is. Looks like ``fn`` to engines that inspect it (``__name__``,
    ``__doc__``, ``__wrapped__`` for :func:`inspect.signature`).

    Args:
        fn: The task body.
        prefetch: Start resolving every proxied argument before the body runs.
        result_policy: Policy deciding whether the result goes back by proxy (``None``: never).
        store: Where results are stored, when ``result_policy`` proxies them.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        prefetch: bool = True,
        result_policy: ProxyPolicy | None = None,
        store: StoreRef | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"task must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.prefetch = prefetch
        self.result_policy = (
            result_policy if result_policy and result_policy.proxy_results else None
        )
        self.store = store
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task body with proxied arguments prefetching."""
        found: list[Proxy] = []
        args = tuple(_revive_all(arg, found) for arg in args)
        kwargs = {name: _revive_all(value, found) for name, value in kwargs.items()}
        if self.prefetch:
            for proxy in found:
                resolve_async(proxy)
        result = self.fn(*args, **kwargs)
        if self.result_policy is not None and self.store is not None:
            measured = self.result_policy.measure_result(result)
            if measured.proxy:
                return _store_and_proxy(self.store.get_or_create(), result, measured, evict=False)
        return result

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("__wrapped__", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__wrapped__ = self.fn

    def __repr__(self) -> str:
        return f"ProxyTask({getattr(self.fn, '__qualname__', self.fn)!r})"


def _store_and_proxy(store: Store, obj: Any, measured: Measured, *, evict: bool) -> Proxy:
    if measured.data is not None:
        key = store.set(measured.data, serialize=False)
        return store.proxy(key=key, evict=evict)
    return store.proxy(obj, evict=evict)


@dataclass
class _Entry:
    obj: Any
    proxy: Proxy
    key: str
    users: int = 0


@dataclass
class Lease:
    """The stored objects one task uses; release it when the task is done."""

    keys: list[str] = field(default_factory=list)
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
    ) -> None:
        self.store = resolve_store(store, owner=owner)
        self.policy = policy
        self.owner = owner
        self.send_refs = send_refs
        self.store_ref = self.store.description
        if not in_process:
            _check_recreatable(self.store, self.store_ref, owner)
        self._entries: dict[int, _Entry] = {}
        self._by_key: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def task(self, fn: Callable[..., Any]) -> ProxyTask:
        """Wrap ``fn`` for the worker side."""
        return ProxyTask(
            fn,
            prefetch=self.policy.prefetch,
            result_policy=self.policy if self.policy.proxy_results else None,
            store=self.store_ref,
        )

    def proxy_call(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], Lease]:
        """Return the arguments to send and the lease on the objects they store.

        On any error, whatever this call stored is released again before the error propagates.
        """
        lease = Lease()
        try:
            new_args = tuple(self._convert(arg, lease, nested=True) for arg in args)
            new_kwargs = {
                name: self._convert(value, lease, nested=True) for name, value in kwargs.items()
            }
        except BaseException:
            self.release(lease)
            raise
        return new_args, new_kwargs, lease

    def _convert(self, obj: Any, lease: Lease, *, nested: bool) -> Any:
        policy = self.policy
        if _is_proxy(obj):
            return ProxyRef(get_factory(obj)) if self.send_refs else obj
        if policy.passes_through(obj):
            return obj
        kind = type(obj)
        if nested and (kind is list or kind is tuple or kind is dict):
            if kind is dict:
                obj = {k: self._convert(v, lease, nested=False) for k, v in obj.items()}
            else:
                obj = kind(self._convert(item, lease, nested=False) for item in obj)
        entry = self._existing(obj)
        if entry is None:
            try:
                measured = policy.measure(obj)
            except SerializationError as exc:
                raise SerializationError(
                    f"{self.owner}: a task argument of type {kind.__name__} cannot be "
                    f"serialized, so it cannot be sent to a worker: {exc}"
                ) from exc
            if not measured.proxy:
                return obj
            entry = self._store(obj, measured)
        lease.keys.append(entry.key)
        return ProxyRef(get_factory(entry.proxy)) if self.send_refs else entry.proxy

    def _existing(self, obj: Any) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(id(obj))
            if entry is not None and entry.obj is obj:
                entry.users += 1
                return entry
        return None

    def _store(self, obj: Any, measured: Measured) -> _Entry:
        proxy = _store_and_proxy(self.store, obj, measured, evict=False)
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

    def release(self, lease: Lease) -> None:
        """Release a task's lease: evict each object whose last user this was (policy permitting).

        Safe to call more than once. Eviction happens under the lock, so an object is never
        handed to a new task while it is being evicted, and once :meth:`in_use` no longer lists
        a key its object is gone.
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
                    if self.policy.evict:
                        self.store.evict(key)
                    del self._by_key[key]
                    self._entries.pop(id(entry.obj), None)

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
