"""``ProxyClient``: a Dask ``distributed.Client`` that sends large arguments by proxy.

::

    client = ProxyClient(Client(cluster), store=store, threshold=1_000_000)
    future = client.submit(train, big_array, 3)      # same signature as Client.submit

``submit`` and ``map`` keep ``Client``'s signatures (Dask's own options such as ``key``,
``pure``, ``workers``, ``retries`` work as before). Graphs go through the store too:
``compute``, ``persist`` and ``get`` keep ``Client``'s signatures and proxy the large literals
inside the graph (:mod:`~proxystore.integrations.dask_graphs`), and so do ``dask.compute(...)``,
``collection.compute()`` and ``.persist()`` inside ``with client.as_current():`` (or with
``scheduler=client``). Every other attribute and method is the wrapped client's.

Arguments of at least ``threshold`` bytes are stored once and travel as
references that Dask sees as small opaque data: neither the client nor the scheduler can
resolve them while hashing, tokenizing or inspecting arguments. Only a worker fetches the
object, starting in the background before the task body runs. Dask futures and objects below
the threshold are passed through untouched, so Dask's own dependency handling still works.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Callable

import dask
import distributed
from dask._task_spec import GraphNode, TaskRef

from proxystore.store import Store

from .dask_graphs import GraphProxier, release_when_all_done, release_when_dropped
from .policy import ProxyPolicy, make_policy
from .proxier import ArgumentProxier, Lease
from .reachability import StoreReachabilityWarning, reachability_problems, worker_host
from .results import ResultHold

__all__ = ["ProxyClient"]


def _option_names(method: Callable[..., Any]) -> frozenset[str]:
    return frozenset(
        name
        for name, param in inspect.signature(method).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
        or (param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name != "self")
    ) - {"func"}


_SUBMIT_OPTIONS = _option_names(distributed.Client.submit)
_MAP_OPTIONS = _option_names(distributed.Client.map)


def result_name(dask_key: Any) -> str:
    """The store key suffix of the stored result of the Dask task ``dask_key``."""
    return hashlib.blake2b(repr(dask_key).encode(), digest_size=16).hexdigest()


def _current_result_name() -> str | None:
    """On a Dask worker: :func:`result_name` of the task running in this thread."""
    try:
        worker = distributed.get_worker()
    except ValueError:  # not on a worker
        return None
    key = worker.get_current_task()
    return None if key is None else result_name(key)


def _futures_in(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[distributed.Future]:
    """The Dask futures of a call's arguments, at the top level and one level down."""
    found = []
    for value in (*args, *kwargs.values()):
        if type(value) is distributed.Future:
            found.append(value)
        elif type(value) in (list, tuple):
            found.extend(item for item in value if type(item) is distributed.Future)
        elif type(value) is dict:
            found.extend(item for item in value.values() if type(item) is distributed.Future)
    return found


def _split(
    kwargs: dict[str, Any], options: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    dask_options = {k: v for k, v in kwargs.items() if k in options}
    task_kwargs = {k: v for k, v in kwargs.items() if k not in options}
    return dask_options, task_kwargs


class ProxyClient:
    """Wraps a ``distributed.Client`` so that large task arguments travel by proxy.

    Args:
        client: The Dask client to wrap.
        store: Store for proxied arguments: a store object or the name of a registered store.
            Workers re-create it from its description, so it must not be process-local.
        threshold: Arguments of at least this many bytes travel by proxy (shorthand for
            ``policy=ProxyPolicy(threshold=...)``).
        policy: The full policy (types always/never proxied, eviction, prefetch, results).

    Raises:
        TypeError: If ``client`` is not a ``distributed.Client`` or ``store`` is missing.
        ValueError: If both ``threshold`` and ``policy`` are given, the threshold is negative,
            or workers cannot re-create the store.
    """

    def __init__(
        self,
        client: distributed.Client,
        *,
        store: Store | str,
        threshold: int | None = None,
        policy: ProxyPolicy | None = None,
    ) -> None:
        if not isinstance(client, distributed.Client):
            raise TypeError(f"ProxyClient wraps a distributed.Client, got {type(client).__name__}")
        self.client = client
        self.policy = make_policy(threshold, policy, owner="ProxyClient")
        self.proxier = ArgumentProxier(
            store,
            # Dask's futures, task references and graph nodes are Dask's to handle.
            self.policy.with_passthrough([distributed.Future, TaskRef, GraphNode]),
            owner="ProxyClient",
            send_refs=True,
            result_key=_current_result_name,
        )
        self.store = self.proxier.store
        self._plan = self.proxier.planner(_SUBMIT_OPTIONS)
        self.graphs = GraphProxier(self.proxier)
        if not callable(getattr(client, "_graph_to_futures", None)):
            raise TypeError(
                f"ProxyClient needs distributed.Client._graph_to_futures (where every graph "
                f"goes to the scheduler), which distributed {distributed.__version__} lacks; "
                "use distributed>=2025.1"
            )
        self._warn_if_unreachable()

    def _warn_if_unreachable(self) -> None:
        """Warn when workers on other hosts cannot reach the store as configured."""
        workers = self.client.scheduler_info().get("workers", {})
        hosts = [worker_host(address) for address in workers]
        for problem in reachability_problems(self.store, hosts):
            warnings.warn(f"ProxyClient: {problem}", StoreReachabilityWarning, stacklevel=3)

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> distributed.Future:
        """``Client.submit`` with large arguments sent by proxy (same signature)."""
        # Dask's options are left as they are; Client.submit takes them by name.
        planner = self._plan  # an attribute, not a method: loaded as one, called once
        plan = planner(args, kwargs)
        if plan.sends_as_is:
            return self.client.submit(func, *args, **kwargs)
        if self.proxier.results is None:
            return self.proxier.submit(func, self.client.submit, args, kwargs, plan)
        held = self._held_results(args, kwargs)
        future = self.proxier.submit(func, self.client.submit, args, kwargs, plan, hold=held)
        self._track(future)
        return future

    def _result_key(self, future: distributed.Future) -> str:
        results = self.proxier.results
        assert results is not None
        return f"{results.token}-{result_name(future.key)}"

    def _held_results(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[ResultHold]:
        """Holds on our stored results that a call receives as Dask futures (for the task)."""
        results = self.proxier.results
        assert results is not None
        keys = [self._result_key(future) for future in _futures_in(args, kwargs)]
        return [ResultHold(results, key) for key in keys if results.is_held(key)]

    def _track(self, future: distributed.Future) -> None:
        """Hold a task's stored result while the caller holds its future or it still runs.

        Dask keeps results on its workers, where the client cannot see them; the task stores
        a large result under a key made from its Dask key (:func:`result_name`), so the
        client knows it without fetching it. A result proxy the caller gathers holds it too.
        """
        results = self.proxier.results
        assert results is not None
        key = self._result_key(future)
        results.hold_while(future, key)
        # Until the task ends, a second reference keeps Dask from forgetting the task while
        # it may still store its result (the caller may drop its future before then).
        running = distributed.Future(future.key, self.client)
        results.hold(key)
        running.add_done_callback(lambda _: results.drop(key))

    def map(
        self, func: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any
    ) -> list[distributed.Future]:
        """``Client.map`` with large arguments sent by proxy (same signature).

        Keyword arguments that are not Dask options go to every call; a large one is stored
        once and shared by all the calls.
        """
        options, task_kwargs = _split(kwargs, _MAP_OPTIONS)
        columns = [list(iterable) for iterable in iterables]

        def send(
            task: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
        ) -> list[distributed.Future]:
            # Every call's kwargs are the same objects, proxied to the same keys: send them once.
            sent_kwargs = calls[-1][1] if calls else dict(task_kwargs)
            new_columns = [list(column) for column in zip(*(args for args, _ in calls))]
            return list(
                self.client.map(
                    task, *(new_columns or [[] for _ in columns]), **options, **sent_kwargs
                )
            )

        calls = [(args, task_kwargs) for args in zip(*columns)]
        futures = self.proxier.submit_calls(func, calls, send)
        if self.proxier.results is not None:
            for future in futures:
                self._track(future)
        return futures

    def compute(self, collections: Any, *args: Any, **kwargs: Any) -> Any:
        """``Client.compute`` with the large literals of the graphs sent by proxy.

        Same signature and result (futures, or values with ``sync=True``). Each object is
        stored once however many tasks use it, and evicted when all the computation's
        futures are done (finished, erred or cancelled).
        """
        graphs = _GraphClient(self, keep_until="done")
        return distributed.Client.compute(graphs, collections, *args, **kwargs)

    def persist(self, collections: Any, *args: Any, **kwargs: Any) -> Any:
        """``Client.persist`` with the large literals of the graphs sent by proxy.

        Same signature and result. The stored objects stay while the persisted collection is
        alive (Dask may recompute a lost part of it from them) and are evicted when it is
        dropped (all its futures garbage-collected).
        """
        graphs = _GraphClient(self, keep_until="dropped")
        return distributed.Client.persist(graphs, collections, *args, **kwargs)

    def get(self, dsk: Any, keys: Any, *args: Any, **kwargs: Any) -> Any:
        """``Client.get`` with the large literals of the graph sent by proxy.

        Same signature and result; also what ``dask.compute`` calls while this client is
        current (:meth:`as_current`). Stored objects are evicted when the futures are done.
        """
        graphs = _GraphClient(self, keep_until="done")
        return distributed.Client.get(graphs, dsk, keys, *args, **kwargs)

    @contextlib.contextmanager
    def as_current(self) -> Iterator[ProxyClient]:
        """Make this client current: Dask's own ``compute``/``persist`` go through it.

        ``dask.compute``, ``collection.compute()`` and ``.persist()`` inside the block send
        their graphs proxied. The wrapped client is current too (``distributed.get_client()``;
        futures deserialized in the block attach to it), as with ``Client.as_current``.
        """
        with self.client.as_current(), dask.config.set(scheduler=self.get):
            yield self

    def __getattr__(self, name: str) -> Any:
        # Everything else is the wrapped client's (gather, scatter, close, ...).
        return getattr(self.client, name)

    def __enter__(self) -> ProxyClient:
        self.client.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.client.__exit__(*exc_info)

    def __repr__(self) -> str:
        return f"ProxyClient({self.client!r}, store={self.store!r}, policy={self.policy!r})"


class _GraphClient:
    """What ``Client.compute``/``persist``/``get`` run against, in place of the client.

    The wrapped client, except that every graph they send (``_graph_to_futures``, the one place
    all graphs go through) is rewritten first and the lease on what was stored is tied to the
    futures.
    """

    def __init__(self, owner: ProxyClient, *, keep_until: str) -> None:
        self._owner = owner
        self._keep_until = keep_until

    def _graph_to_futures(self, expr: Any, keys: Any, *args: Any, **kwargs: Any) -> Any:
        owner = self._owner
        client = owner.client
        rewritten, lease = owner.graphs.rewrite(expr, keys)
        if rewritten is None:
            return client._graph_to_futures(expr, keys, *args, **kwargs)
        try:
            futures = client._graph_to_futures(rewritten, keys, *args, **kwargs)
        except BaseException:
            owner.proxier.release(lease)
            raise
        _tie(owner.proxier, list(futures.values()), lease, self._keep_until)
        return futures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner.client, name)


def _tie(proxier: ArgumentProxier, futures: list[Any], lease: Lease, keep_until: str) -> None:
    if keep_until == "dropped":
        release_when_dropped(proxier, futures, lease)
    else:
        release_when_all_done(proxier, futures, lease)
