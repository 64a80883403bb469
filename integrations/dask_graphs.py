"""Dask graphs through the store: the large literals of a graph travel by proxy.

:class:`GraphProxier` rewrites the graph of a computation before Dask sends it to the
scheduler (``Client.compute``, ``persist`` and ``get``, and ``dask.compute`` /
``collection.compute()`` / ``.persist()`` while a
:class:`~proxystore.integrations.dask.ProxyClient` is current). It walks every task of the
materialized graph, inline tasks, fused subgraphs and Dask's containers (``List``, ``Dict``, ...)
included, and plans each task's literal arguments with the client's policy, exactly as
``ProxyClient.submit`` plans a call's arguments: every literal of at least the threshold
(arguments of delayed calls, one level into plain ``list``/``tuple``/``dict`` literals, and
the values of data nodes: ``dask.delayed(obj)``, the chunks of ``dask.array.from_array``...) is
stored once, however many tasks use it, and replaced by a small
:class:`~proxystore.integrations.transit.ProxyRef`. A task that received one runs inside a
:class:`GraphTask`: the worker-side :class:`~proxystore.integrations.task.ProxyTask` revives
and prefetches every proxied argument before the body runs and delivers each as the policy's
delivery rule says; a data node becomes a task that reads its value from the store on a worker
and returns the object itself, as the data node would.

Everything else passes through untouched: keys, annotations (``dask.annotate``, ``retries``),
the keys chosen by ``pure=``, Dask's own futures and task references, and every literal below
the threshold. A graph with nothing to proxy is sent as Dask built it. A task whose body is a
coroutine function is left as it is.

What the graph Dask sends then holds only references, so Dask's ``Sending large graph``
warning does not fire and the scheduler never holds the data.
"""

from __future__ import annotations

import copy
import functools
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Callable, ClassVar

from dask._expr import LLGExpr
from dask._task_spec import (
    DataNode,
    GraphNode,
    Task,
    _execute_subgraph,
    convert_legacy_task,
)
from dask.core import flatten

from proxystore.proxy import extract, get_key

from .policy import ITEMS, SEND, CallPlan, Planner
from .proxier import ArgumentProxier, Lease
from .task import ProxyTask
from .transit import is_proxy

__all__ = [
    "GraphProxier",
    "GraphTask",
    "ProxiedGraph",
    "release_when_all_done",
    "release_when_dropped",
]

_RESULT_CONTAINERS = (list, tuple, set, frozenset)


class ProxiedGraph(LLGExpr):  # type: ignore[misc]
    """A materialized, rewritten graph with the annotations of the expression it came from.

    What the scheduler receives instead of the collection's own expression. Like Dask's
    ``LLGExpr`` (the scheduler culls it to the requested keys), plus the annotations, which a
    low-level graph alone would lose. Its name is random (as for Dask's ``HLGExpr``): the graph
    is never tokenized as a whole.
    """

    _parameters: ClassVar[list[str]] = ["dsk", "annotations"]
    _defaults: ClassVar[dict[str, Any]] = {"annotations": None}

    def __dask_annotations__(self) -> dict[str, dict[Any, Any]]:
        return dict(self.operand("annotations") or {})

    @property
    def deterministic_token(self) -> str:
        """A random token: the graph is never tokenized as a whole."""
        token: str | None = getattr(self, "_determ_token", None)
        if not token:
            token = uuid.uuid4().hex
            self._determ_token = token
        return token


def _value(obj: Any) -> Any:
    """The body of a data node read from the store: its value."""
    return obj


class GraphTask:
    """The body of a graph task that received proxied literals (runs on the worker).

    Runs the :class:`~proxystore.integrations.task.ProxyTask` (revive, prefetch, deliver, run)
    and hands Dask the body's result with every proxy of an object stored for this
    computation replaced by its object (at the top level and one level into a list, tuple or
    set): Dask keeps results in worker memory and may gather them to the client after the
    computation's stored objects are evicted, so a result never refers to them.

    Args:
        task: The worker-side wrapper of the task body.
        keys: Store keys of the objects stored for this task.
    """

    def __init__(self, task: ProxyTask, keys: Iterable[str]) -> None:
        self.task = task
        self.keys = frozenset(keys)
        functools.update_wrapper(self, task, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the body; return its result without proxies of this task's stored objects."""
        return self._plain(self.task(*args, **kwargs))

    def _plain(self, result: Any) -> Any:
        if is_proxy(result):
            return extract(result) if get_key(result) in self.keys else result
        kind = type(result)
        if kind in _RESULT_CONTAINERS and any(is_proxy(item) for item in result):
            return kind(self._plain(item) if is_proxy(item) else item for item in result)
        if kind is dict and any(is_proxy(value) for value in result.values()):
            return {k: self._plain(v) if is_proxy(v) else v for k, v in result.items()}
        return result

    def __reduce__(self) -> tuple[Any, ...]:
        return (GraphTask, (self.task, tuple(self.keys)))

    def __repr__(self) -> str:
        return f"GraphTask({self.task!r})"


class _Rewrite:
    """One graph's rewrite: the nodes rewritten so far and the keys stored for them."""

    def __init__(self, graphs: GraphProxier) -> None:
        self.graphs = graphs
        self.keys: list[str] = []
        self.changed = False
        self.seen: dict[int, tuple[GraphNode, GraphNode]] = {}  # id -> (node, rewritten)

    def node(self, node: GraphNode) -> GraphNode:
        """``node`` with its literals proxied (``node`` itself when nothing changes)."""
        done = self.seen.get(id(node))
        if done is not None and done[0] is node:
            return done[1]
        if isinstance(node, DataNode):
            new = self._data(node)
        elif isinstance(node, Task):
            new = self._task(node)
        else:  # Alias and any other node: no literals of its own
            new = node
        self.seen[id(node)] = (node, new)
        return new

    def _data(self, node: DataNode) -> GraphNode:
        value = node.value
        carried = self._carry((value,), {})
        if carried is None:
            return node
        args, kwargs, plan, keys = carried
        body = self._wrapper(_value, plan, keys)
        return Task(node.key, body, *args, _data_producer=True, **kwargs)

    def _task(self, node: Task) -> GraphNode:
        if node.is_coro:
            return node
        if node.func is _execute_subgraph:  # a fused subgraph: its inner tasks, one by one
            inner = node.args[0]
            new_inner = {key: self._inner(task) for key, task in inner.items()}
            if all(new_inner[key] is inner[key] for key in inner):
                return node
            return _rebuilt(node, node.func, (new_inner, *node.args[1:]), node.kwargs)
        args = tuple(self.node(a) if isinstance(a, GraphNode) else a for a in node.args)
        kwargs = {
            name: self.node(v) if isinstance(v, GraphNode) else v for name, v in node.kwargs.items()
        }
        inline_changed = any(a is not b for a, b in zip(args, node.args)) or any(
            kwargs[name] is not value for name, value in node.kwargs.items()
        )
        carried = self._carry(args, kwargs)
        if carried is None:
            return _rebuilt(node, node.func, args, kwargs) if inline_changed else node
        new_args, new_kwargs, plan, keys = carried
        return _rebuilt(node, self._wrapper(node.func, plan, keys), new_args, new_kwargs)

    def _inner(self, task: Any) -> Any:
        return self.node(task) if isinstance(task, GraphNode) else task

    def _carry(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], CallPlan, list[str]] | None:
        """Store the literals of one task that go by proxy; ``None`` if none does."""
        plan = _by_reference(self.graphs.plan(args, kwargs))
        if plan is None:
            return None
        new_args, new_kwargs, lease = self.graphs.proxier.carry_out(args, kwargs, plan)
        self.keys.extend(lease.keys)
        self.changed = True
        return new_args, new_kwargs, plan, lease.keys

    def _wrapper(self, fn: Callable[..., Any], plan: CallPlan, keys: list[str]) -> GraphTask:
        task = ProxyTask(fn, prefetch=self.graphs.proxier.policy.prefetch)
        if plan.nested:
            task = task.looking_into(plan.nested)
        return GraphTask(task, keys)


def _by_reference(plan: CallPlan) -> CallPlan | None:
    """The part of ``plan`` that stores or forwards; ``None`` when that is nothing.

    Literals below the threshold stay in the graph as they are.
    """
    if plan.sends_as_is:
        return None
    args = tuple((place, step) for place, step in plan.args if step.action != SEND)
    kwargs = tuple((name, step) for name, step in plan.kwargs if step.action != SEND)
    if not (args or kwargs):
        return None
    places: list[int | str] = [place for place, step in args if step.action == ITEMS]
    places.extend(name for name, step in kwargs if step.action == ITEMS)
    nested = frozenset(places)
    return CallPlan(args, kwargs, nested, task=True, sends_pickled=False)


def _rebuilt(
    node: Task, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Task:
    """A copy of ``node`` (its key, class and dependencies) with a new body and arguments."""
    new = copy.copy(node)
    new.func = func
    new.args = args
    new.kwargs = kwargs
    new._token = None
    new._repr = None
    new._is_coro = None
    return new


def _culled(dsk: Mapping[Any, Any], keys: Iterable[Any]) -> dict[Any, Any]:
    """The part of a converted graph the keys need."""
    work = list(keys)
    out: dict[Any, Any] = {}
    while work:
        key = work.pop()
        if key in out or key not in dsk:
            continue
        out[key] = node = dsk[key]
        if isinstance(node, GraphNode):
            work.extend(node.dependencies)
    return out


class GraphProxier:
    """Rewrites Dask graphs so that their large literals travel by proxy.

    Args:
        proxier: The client's argument proxier: its store, policy and objects in use (an
            object both submitted and used in a graph is stored once). Its policy must pass
            Dask's graph nodes and task references through.
    """

    def __init__(self, proxier: ArgumentProxier) -> None:
        self.proxier = proxier
        self.plan: Planner = proxier.planner()

    def rewrite(self, expr: Any, keys: Iterable[Any]) -> tuple[ProxiedGraph | None, Lease]:
        """Proxy the large literals of the graph of ``expr`` (a Dask expression).

        Args:
            expr: What ``Client._graph_to_futures`` receives: a Dask expression.
            keys: The keys the computation wants.

        Returns:
            The rewritten graph (``None`` when nothing in it is proxied: send ``expr``) and the
            lease on what was stored for it (released on any error here).
        """
        wanted = list(flatten(keys)) if not isinstance(keys, (set, frozenset)) else list(keys)
        graph = expr.__dask_graph__()
        dsk = dict(graph) if not isinstance(graph, dict) else graph
        rewrite = _Rewrite(self)
        try:
            all_keys = set(dsk)
            new: dict[Any, Any] = {}
            for key, value in dsk.items():
                new[key] = self._entry(rewrite, key, value, all_keys)
            if not rewrite.changed:
                return None, Lease()
            annotations = expr.__dask_annotations__()
            culled = _culled(new, wanted) if wanted else new
            return ProxiedGraph(culled, annotations), Lease(list(rewrite.keys))
        except BaseException:
            self.proxier.release(Lease(list(rewrite.keys)))
            raise

    def _entry(self, rewrite: _Rewrite, key: Any, value: Any, all_keys: set[Any]) -> Any:
        if isinstance(value, GraphNode):
            return rewrite.node(value)
        if self.proxier.policy.passes_through(value):  # Dask futures, scalars, proxies
            return value
        converted = convert_legacy_task(key, value, all_keys)
        if not isinstance(converted, GraphNode):
            converted = DataNode(key, converted)
        return rewrite.node(converted)  # what the scheduler would convert it to, or rewritten


def release_when_all_done(proxier: ArgumentProxier, futures: list[Any], lease: Lease) -> None:
    """Release ``lease`` once every future is done (finished, erred or cancelled)."""
    _countdown(proxier, futures, lease, lambda future, done: future.add_done_callback(done))


def release_when_dropped(proxier: ArgumentProxier, futures: list[Any], lease: Lease) -> None:
    """Release ``lease`` once every future has been garbage-collected.

    For a persisted collection: when it is dropped. Until then Dask may recompute a lost part
    of it from its inputs.
    """
    _countdown(proxier, futures, lease, lambda future, done: weakref.finalize(future, done, None))


def _countdown(
    proxier: ArgumentProxier,
    futures: list[Any],
    lease: Lease,
    register: Callable[[Any, Callable[[Any], None]], Any],
) -> None:
    if not futures:
        proxier.release(lease)
        return
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Any) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            proxier.release(lease)

    for future in futures:
        register(future, one_done)
