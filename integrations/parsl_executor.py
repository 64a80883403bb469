"""``proxy_executor``: a whole Parsl workflow whose large arguments travel by proxy.

::

    config = Config(executors=[
        proxy_executor(HighThroughputExecutor(label="htex", ...), store=store),
        ThreadPoolExecutor(label="local"),
    ])

Every ``python_app`` that runs on the returned executor gets what
:func:`~proxystore.integrations.parsl.proxy_app` gives one app, with no decorator: each call
stores every argument of at least the threshold once (also items of ``list``/``tuple``/``dict``
arguments, ``inputs`` included) while any task uses it, the worker starts fetching every
proxied argument before the body runs, the body receives what the delivery rule says (proxies
of the proxy-safe types, the objects of the rest), and the stored arguments are evicted when
the task's future completes (success, failure or cancellation; a retry stores them again).

The returned executor *is* the executor it was given, of a subclass of its class that
intercepts ``submit``: it shares the given executor's state (label, provider, scaling, status,
everything), so the DataFlowKernel starts, scales, polls and shuts it down as it would the
original, and ``isinstance`` checks (``HighThroughputExecutor``, ``BlockProviderExecutor``)
hold. ``bash_app`` tasks, apps already wrapped by ``proxy_app`` and calls with nothing to store
go to the executor untouched. Parsl resolves its futures before a task reaches the executor,
so arguments arrive as values; ``File`` and ``DataFuture`` objects pass through.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from typing import Any, Callable

from parsl.app.bash import remote_side_bash_executor
from parsl.app.futures import DataFuture
from parsl.data_provider.files import File
from parsl.executors import ThreadPoolExecutor as ParslThreads
from parsl.executors.base import ParslExecutor

from proxystore.store import Store

from .policy import ProxyPolicy, make_policy
from .proxier import ArgumentProxier
from .task import ProxyTask

__all__ = ["PARSL_KEYWORDS", "ProxyingExecutor", "proxy_executor"]

PARSL_KEYWORDS: frozenset[str] = frozenset(
    {"outputs", "stdout", "stderr", "walltime", "parsl_resource_specification"}
)
"""Parsl's own keyword arguments of an app call: never proxied."""

_UNWRAP_DEPTH = 16  # wrappers Parsl puts around an app body (wrap_error, timeout, monitoring)


class ProxyingExecutor:
    """What :func:`proxy_executor` mixes into the executor's class: a proxying ``submit``.

    Attributes:
        proxystore_proxier: The argument proxier (store, policy, objects in use).
    """

    proxystore_proxier: ArgumentProxier
    _proxystore_plan: Callable[..., Any]

    def submit(
        self,
        func: Callable[..., Any],
        resource_specification: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> Future[Any]:
        """The executor's ``submit``, with the large arguments of python apps sent by proxy."""
        submit = super().submit  # type: ignore[misc]
        if _runs_as_is(func):
            return submit(func, resource_specification, *args, **kwargs)  # type: ignore[no-any-return]
        plan = self._proxystore_plan(args, kwargs)
        if plan.sends_as_is:
            return submit(func, resource_specification, *args, **kwargs)  # type: ignore[no-any-return]

        def send(task: Callable[..., Any], *sent: Any, **sent_kwargs: Any) -> Future[Any]:
            return submit(task, resource_specification, *sent, **sent_kwargs)  # type: ignore[no-any-return]

        return self.proxystore_proxier.submit(func, send, args, kwargs, plan)

    def __repr__(self) -> str:
        label = getattr(self, "label", "?")
        return (
            f"proxy_executor({type(self).__mro__[2].__name__} {label!r}, "
            f"store={self.proxystore_proxier.store!r})"
        )


def _runs_as_is(func: Callable[..., Any]) -> bool:
    """Whether a task goes to the executor untouched: a bash app, or already proxied."""
    seen: Any = func
    for _ in range(_UNWRAP_DEPTH):
        if isinstance(seen, ProxyTask):
            return True  # a proxy_app: its arguments are references already
        if isinstance(seen, functools.partial) and seen.func is remote_side_bash_executor:
            return True
        seen = getattr(seen, "__wrapped__", None)
        if seen is None:
            return False
    return False


_CLASSES: dict[type, type] = {}
_CLASSES_LOCK = threading.Lock()


def _proxying_class(kind: type) -> type:
    """The subclass of ``kind`` with a proxying ``submit`` (one per executor class)."""
    with _CLASSES_LOCK:
        found = _CLASSES.get(kind)
        if found is None:
            metaclass = type(kind)
            found = metaclass(
                kind.__name__,
                (ProxyingExecutor, kind),
                {"__module__": kind.__module__, "__qualname__": kind.__qualname__},
            )
            _CLASSES[kind] = found
        return found


def proxy_executor(
    executor: ParslExecutor,
    *,
    store: Store | str,
    threshold: int | None = None,
    policy: ProxyPolicy | None = None,
) -> ParslExecutor:
    """Make every python app sent to ``executor`` pass its large arguments by proxy.

    Args:
        executor: A Parsl executor not started yet (``HighThroughputExecutor``,
            ``ThreadPoolExecutor``, ...), as it would go into ``Config(executors=[...])``.
        store: Store for proxied arguments: a store object or the name of a registered store.
            Workers of executors in other processes re-create it, so it must not be
            process-local there (a ``ThreadPoolExecutor`` may use a ``LocalStore``).
        threshold: Arguments of at least this many bytes travel by proxy (shorthand for
            ``policy=ProxyPolicy(threshold=...)``).
        policy: The full policy (types always/never proxied, eviction, prefetch, results).

    Returns:
        The executor to put in ``Config(executors=[...])``: the same executor (its state is
        shared with ``executor``, its label kept), of a subclass of its class whose
        ``submit`` proxies.

    Raises:
        TypeError: If ``executor`` is not a Parsl executor, or ``store`` is missing.
        ValueError: If both ``threshold`` and ``policy`` are given, the threshold is negative,
            the executor is proxying already, or its workers cannot re-create the store.
    """
    if not isinstance(executor, ParslExecutor):
        raise TypeError(
            "proxy_executor wraps a Parsl executor (HighThroughputExecutor, "
            f"ThreadPoolExecutor, ...), got {type(executor).__name__}"
        )
    if isinstance(executor, ProxyingExecutor):
        raise ValueError(
            f"proxy_executor: the executor {getattr(executor, 'label', '?')!r} proxies its "
            "arguments already"
        )
    if not hasattr(executor, "__dict__"):
        raise TypeError(
            f"proxy_executor: {type(executor).__name__} keeps its state in slots; it cannot "
            "be wrapped (use proxy_app on its apps instead)"
        )
    chosen = make_policy(threshold, policy, owner="proxy_executor").with_passthrough(
        [DataFuture, File]
    )
    in_process = isinstance(executor, ParslThreads)  # threads: the objects themselves
    proxier = ArgumentProxier(
        store,
        chosen,
        owner=f"proxy_executor({executor.label!r})",
        pickling="never" if in_process else "maybe",
        send_refs=True,
        result_refs=True,  # results return as ResultRef: Parsl takes a proxy for code
    )
    proxying: Any = object.__new__(_proxying_class(type(executor)))
    proxying.__dict__ = executor.__dict__  # the same executor: one state, two views
    proxying.proxystore_proxier = proxier
    proxying._proxystore_plan = proxier.planner(PARSL_KEYWORDS)
    return proxying
