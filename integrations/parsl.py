"""``proxy_app``: Parsl apps whose large arguments travel by proxy.

::

    @proxy_app(store=store, threshold=1_000_000)
    @python_app
    def simulate(params, big_table): ...

Decorate an app made with ``@python_app``: its executors, cache setting and other options are
kept. Each call stores every argument of at least ``threshold`` bytes once (also items of
``list``/``tuple``/``dict`` arguments, ``inputs`` included) and sends a reference that Parsl sees
as small opaque data, so the DataFlowKernel's dependency scan cannot resolve it. Parsl
``DataFuture``/``AppFuture`` arguments pass through untouched. On the worker every proxied
argument starts downloading before the body runs; when the app's future completes (success,
failure or cancellation) the stored arguments no other running app uses are evicted.

``outputs``, ``stdout``, ``stderr``, ``walltime`` and ``parsl_resource_specification`` are
Parsl's own keywords and are never proxied. With ``cache=True`` a proxied argument is
identified by its store key, which stays the same while the object is in use.

To give every app of a workflow the same without decorating each, wrap the executor instead:
:func:`proxy_executor` (from :mod:`~proxystore.integrations.parsl_executor`, re-exported here).
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
import threading
from concurrent.futures import Future
from typing import Any, Callable

from parsl.app.python import PythonApp
from parsl.dataflow.memoization import id_for_memo

from proxystore.proxy import get_factory
from proxystore.store import Store

from .dependents import is_future
from .parsl_executor import PARSL_KEYWORDS, proxy_executor
from .policy import CallPlan, ProxyPolicy, make_policy
from .proxier import ArgumentProxier
from .results import ResultHold, owned_result, trackers_exist
from .task import ProxyTask
from .transit import PickledArgument, ProxyRef

__all__ = ["ProxyApp", "proxy_app", "proxy_executor"]

_PARSL_KEYWORDS = PARSL_KEYWORDS


def _memo_id(obj: ProxyRef, output_ref: bool = False) -> bytes:
    return pickle.dumps(("proxystore.ProxyRef", obj.key))


def _memo_pickled(obj: PickledArgument, output_ref: bool = False) -> bytes:
    return obj.stream


# Parsl's app cache hashes arguments by type; a proxied argument is identified by its key, an
# argument sent pickled by its pickle.
id_for_memo.register(ProxyRef)(_memo_id)
id_for_memo.register(PickledArgument)(_memo_pickled)


class ProxyApp:
    """A Parsl app whose large arguments travel by proxy (made by :func:`proxy_app`).

    Calling it returns the app's ``AppFuture``, like calling the app itself.

    Attributes:
        app: The Parsl app that runs the proxying task wrapper.
        proxier: The shared argument proxier (store, policy, objects in use).
    """

    def __init__(self, app: PythonApp, proxier: ArgumentProxier) -> None:
        self.fn = getattr(app.func, "__wrapped__", app.func)
        self.proxier = proxier
        self._plan = proxier.planner(_PARSL_KEYWORDS)  # Parsl's keywords as they are
        self._template = app
        # One Parsl app per thing to run: the plain function, the wrapper, and one wrapper per
        # set of container arguments the worker must look into (few: argument positions).
        self._apps: dict[frozenset[int | str] | None, PythonApp] = {}
        self.app = self._app_for(proxier.task(self.fn))
        self._plain_app = self._app_for(self.fn)
        functools.update_wrapper(self, self.fn, updated=())

    def _app_for(self, task: Callable[..., Any]) -> PythonApp:
        # None: the plain function, sent when no argument needs the worker-side wrapper.
        variant = task.nested if isinstance(task, ProxyTask) else None
        app = self._apps.get(variant)
        if app is None:
            template = self._template
            app = PythonApp(
                task,
                data_flow_kernel=template.data_flow_kernel,
                executors=template.executors,
                cache=template.cache,
                ignore_for_cache=template.ignore_for_cache,
                join=getattr(template, "join", False),
            )
            app.kwargs = dict(getattr(template, "kwargs", {}))
            self._apps[variant] = app
        return app

    def __call__(self, *args: Any, **kwargs: Any) -> Future[Any]:
        """Call the app with large arguments sent by proxy; returns its ``AppFuture``."""
        planner = self._plan  # an attribute, not a method: loaded as one, called once
        plan = planner(args, kwargs)
        if trackers_exist() and _holds_futures(args, kwargs):
            return self._call_with_relays(args, kwargs, plan)
        if plan.sends_as_is:
            return self._plain_app(*args, **kwargs)  # type: ignore[no-any-return]
        return self.proxier.submit(self.fn, self._send, args, kwargs, plan)

    def _call_with_relays(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], plan: CallPlan
    ) -> Future[Any]:
        """A call given futures while results are tracked: each future through a relay."""
        relays = _Relays()
        args = tuple(relays.relay(value) for value in args)
        kwargs = {name: relays.relay(value) for name, value in kwargs.items()}
        inputs = kwargs.get("inputs")
        if type(inputs) is list:
            kwargs["inputs"] = [relays.relay(item) for item in inputs]
            plan = dataclasses.replace(plan, nested=plan.nested | {"inputs"})
        # The wrapper revives the references the relays hand on.
        plan = dataclasses.replace(plan, task=True)
        future: Future[Any] = self.proxier.submit(self.fn, self._send, args, kwargs, plan)
        future.add_done_callback(lambda _: relays.release())
        return future

    def _send(self, task: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = self._app_for(task)(*args, **kwargs)
        return future

    def __repr__(self) -> str:
        name = getattr(self, "__name__", "?")
        return f"ProxyApp({name!r}, store={self.proxier.store!r})"


def _holds_futures(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether Parsl will wait on futures of this call (arguments, keywords, ``inputs``)."""
    inputs = kwargs.get("inputs")
    return (
        any(is_future(value) for value in args)
        or any(is_future(value) for value in kwargs.values())
        or (type(inputs) is list and any(is_future(item) for item in inputs))
    )


class _Relays:
    """Futures standing in for a call's ``AppFuture`` arguments, with results it can receive.

    Parsl gives an app the results of the futures it was passed. A result an adapter of this
    process stored comes back as a proxy it owns; the relay hands the app a plain reference
    to the same key instead (so nothing escapes) and holds the key until the app ends.
    """

    def __init__(self) -> None:
        self.holds: list[ResultHold] = []
        self._lock = threading.Lock()

    def relay(self, value: Any) -> Any:
        if not is_future(value):
            return value
        relay: Future[Any] = Future()
        value.add_done_callback(lambda done: self._settle(done, relay))
        return relay

    def _settle(self, done: Future[Any], relay: Future[Any]) -> None:
        if done.cancelled():
            relay.cancel()
            return
        error = done.exception()
        if error is not None:
            relay.set_exception(error)
            return
        result = done.result()
        held = owned_result(result)
        if held is None:
            relay.set_result(result)
            return
        with self._lock:
            self.holds.append(held)
        relay.set_result(ProxyRef(get_factory(result).plain()))  # type: ignore[attr-defined]

    def release(self) -> None:
        with self._lock:
            holds, self.holds = self.holds, []
        for held in holds:
            held.release()


def proxy_app(
    *,
    store: Store | str,
    threshold: int | None = None,
    policy: ProxyPolicy | None = None,
) -> Callable[[PythonApp], ProxyApp]:
    """Decorate a ``@python_app`` so that its large arguments travel by proxy.

    Args:
        store: Store for proxied arguments: a store object or the name of a registered store.
            Parsl workers re-create it, so it must not be process-local.
        threshold: Arguments of at least this many bytes travel by proxy (shorthand for
            ``policy=ProxyPolicy(threshold=...)``).
        policy: The full policy (types always/never proxied, eviction, prefetch, results).

    Returns:
        A decorator taking the app and returning a :class:`ProxyApp`.

    Raises:
        TypeError: If ``store`` is missing, or the decorated object is not a Parsl
            ``PythonApp`` (put ``@proxy_app(...)`` above ``@python_app``).
        ValueError: If both ``threshold`` and ``policy`` are given, the threshold is negative,
            or workers cannot re-create the store.
    """
    from parsl.app.futures import DataFuture

    chosen = make_policy(threshold, policy, owner="proxy_app").with_passthrough([DataFuture])
    proxier = ArgumentProxier(store, chosen, owner="proxy_app", send_refs=True, result_refs=True)

    def decorate(app: PythonApp) -> ProxyApp:
        if not isinstance(app, PythonApp):
            raise TypeError(
                "proxy_app decorates a Parsl app made with @python_app, got "
                f"{type(app).__name__}; put @proxy_app(...) above @python_app"
            )
        return ProxyApp(app, proxier)

    return decorate
