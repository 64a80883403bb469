"""Tasks whose arguments are futures: sent once those futures are done, with their results.

``ProxyExecutor.submit(g, ex.submit(f, x))`` returns a future at once; ``g`` goes to the pool
only when ``f`` has finished, with ``f``'s result in place of the future (futures one level
down in a ``list``, ``tuple`` or ``dict`` argument too). Nothing is sent before its inputs
exist, so no worker ever blocks on a producer and a full pool cannot deadlock. A failed input
fails the dependent task with the same exception (as in Dask); a cancelled input cancels it.

Sending happens on one background thread per executor (``proxystore-dependents``), never on
the thread that completed the input (a pool's own result thread must not store arguments).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable

__all__ = ["Dependents", "holds_futures", "is_future"]

_CONTAINERS = (list, tuple, dict)
_IDLE_EXIT = 1.0  # seconds the sending thread waits for work before it ends (it restarts)


def is_future(value: Any) -> bool:
    """Whether ``value`` is a ``concurrent.futures.Future`` (never resolving a proxy)."""
    # type(), never isinstance(): isinstance() reads __class__, which resolves a proxy.
    return issubclass(type(value), Future)


def _items(value: Any) -> Any:
    return value.values() if type(value) is dict else value


def holds_futures(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a call's arguments hold futures (at the top level or one level down)."""
    for value in (*args, *kwargs.values()):
        if is_future(value):
            return True
        if type(value) in _CONTAINERS and any(is_future(item) for item in _items(value)):
            return True
    return False


def _futures_in(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Future[Any]]:
    found: dict[int, Future[Any]] = {}
    for value in (*args, *kwargs.values()):
        if is_future(value):
            found[id(value)] = value
        elif type(value) in _CONTAINERS:
            for item in _items(value):
                if is_future(item):
                    found[id(item)] = item
    return list(found.values())


def _resolved(value: Any) -> Any:
    """``value`` with each future (at the top or one level down) replaced by its result."""
    if is_future(value):
        return value.result()
    kind = type(value)
    if kind not in _CONTAINERS:
        return value
    if kind is dict:
        return {k: v.result() if is_future(v) else v for k, v in value.items()}
    return kind(v.result() if is_future(v) else v for v in value)


class _Job:
    """One task waiting for its input futures."""

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: list[Future[Any]],
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.inputs = inputs
        self.waiting = len(inputs)
        self.outer: Future[Any] = Future()
        self.inner: Future[Any] | None = None
        self.finished = False


class Dependents:
    """The tasks of one executor that wait for futures (see the module docstring).

    Args:
        submit: Sends a call whose arguments hold no futures (the executor's ``submit``).
        owner: Name of the executor, for error messages.
    """

    def __init__(self, submit: Callable[..., Future[Any]], *, owner: str) -> None:
        self._submit = submit
        self.owner = owner
        self._pending: set[_Job] = set()
        self._cond = threading.Condition()
        self._ready: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit_after(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        """A future of ``fn(*args, **kwargs)``, sent once the futures in the arguments are done.

        Raises:
            RuntimeError: If the executor has been shut down.
        """
        inputs = _futures_in(args, kwargs)
        job = _Job(fn, args, kwargs, inputs)
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.owner}: cannot schedule new futures after shutdown")
            self._pending.add(job)
        job.outer.add_done_callback(lambda _: self._outer_done(job))
        lock = threading.Lock()

        def input_done(_: Future[Any]) -> None:
            with lock:
                job.waiting -= 1
                last = job.waiting == 0
            if last:
                self._enqueue(job)

        for future in inputs:
            future.add_done_callback(input_done)
        return job.outer

    def pending(self) -> int:
        """How many tasks still wait for their inputs (or to be sent)."""
        with self._cond:
            return len(self._pending)

    def _enqueue(self, job: _Job) -> None:
        self._ready.put(job)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="proxystore-dependents", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                job = self._ready.get(timeout=_IDLE_EXIT)
            except queue.Empty:
                with self._cond:
                    if self._ready.empty():
                        self._thread = None
                        return
                continue
            self._launch(job)

    def _launch(self, job: _Job) -> None:
        outer = job.outer
        try:
            if outer.done():  # cancelled while it waited
                return
            for future in job.inputs:
                if future.cancelled():
                    outer.cancel()
                    return
                error = future.exception()
                if error is not None:
                    _settle(outer, error=error)
                    return
            args = tuple(_resolved(value) for value in job.args)
            kwargs = {name: _resolved(value) for name, value in job.kwargs.items()}
            job.args, job.kwargs, job.inputs = (), {}, []  # the inputs may go once sent
            try:
                inner = self._submit(job.fn, *args, **kwargs)
            except BaseException as exc:
                _settle(outer, error=exc)
                return
            del args, kwargs
            job.inner = inner
            inner.add_done_callback(lambda done: _copy(done, outer))
            if outer.cancelled():
                inner.cancel()
        finally:
            self._finish(job)

    def _outer_done(self, job: _Job) -> None:
        if job.outer.cancelled():
            inner = job.inner
            if inner is not None:
                inner.cancel()
            elif job.waiting > 0:  # never to be sent: nothing to wait for at shutdown
                self._finish(job)

    def _finish(self, job: _Job) -> None:
        with self._cond:
            job.finished = True
            self._pending.discard(job)
            self._cond.notify_all()

    def close(self, shutdown: Callable[[], None], *, wait: bool, cancel: bool) -> None:
        """Stop taking tasks; send (or, with ``cancel``, cancel) the waiting ones; ``shutdown``.

        With ``wait``, this returns once the waiting tasks are sent and ``shutdown`` has run;
        otherwise both happen in a background thread.
        """
        with self._cond:
            self._closed = True
            jobs = list(self._pending)
        if cancel:
            for job in jobs:
                job.outer.cancel()
        if wait:
            self._drain()
            shutdown()
            return

        def later() -> None:
            self._drain()
            shutdown()

        threading.Thread(target=later, name="proxystore-shutdown", daemon=True).start()

    def _drain(self) -> None:
        # As long as the waiting tasks' inputs run: shutdown(wait=True) of a plain pool waits
        # for its running tasks the same way.
        with self._cond:
            while self._pending:
                self._cond.wait(1.0)


def _copy(inner: Future[Any], outer: Future[Any]) -> None:
    if inner.cancelled():
        outer.cancel()
        return
    error = inner.exception()
    if error is not None:
        _settle(outer, error=error)
    else:
        _settle(outer, result=inner.result())


def _settle(outer: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    try:
        if error is not None:
            outer.set_exception(error)
        else:
            outer.set_result(result)
    except InvalidStateError:  # cancelled by the caller meanwhile
        pass
