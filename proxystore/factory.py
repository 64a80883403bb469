"""Factories: small, picklable callables that produce the object a proxy stands for.

A :class:`~proxystore.proxy.Proxy` calls its factory the first time it is used. A factory is
what travels when a proxy is pickled, so it should be cheap to pickle and should not hold the
object itself unless that object is small (:class:`SimpleFactory` is the exception that proves
the rule: it exists for tests and for objects that are cheap to ship).

Factories may also *start* resolving in the background with :meth:`Factory.resolve_async`;
the next :meth:`Factory.resolve` then waits for that work instead of starting it again.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future
from typing import Any, Callable, Generic, TypeVar

import cloudpickle

__all__ = ["Factory", "LambdaFactory", "SimpleFactory", "run_in_thread"]

T = TypeVar("T")


def run_in_thread(function: Callable[[], T], *, name: str) -> Future[T]:
    """Run ``function`` in a new daemon thread and return a future for its result.

    One thread per call (rather than a shared pool) so that several large objects download in
    parallel and a resolve started from inside another resolve can never starve a pool.

    Args:
        function: Zero-argument callable to run.
        name: Thread name, shown in debuggers and thread dumps.

    Returns:
        A future that holds the function's result or exception.
    """
    future: Future[T] = Future()
    future.set_running_or_notify_cancel()

    def _target() -> None:
        try:
            result = function()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=_target, name=name, daemon=True).start()
    return future


class Factory(ABC, Generic[T]):
    """Base class of factories: ``resolve()`` returns the target object.

    Subclasses implement :meth:`resolve`; they may override :meth:`resolve_async` to begin
    fetching the object in the background. Subclasses need not call ``Factory.__init__``.
    """

    @abstractmethod
    def resolve(self) -> T:
        """Return the target object (fetching or building it if needed)."""

    def resolve_async(self) -> None:
        """Begin resolving the target in the background.

        The default does nothing; factories that can overlap communication with computation
        override it. A later :meth:`resolve` returns the result of that background work.
        """

    def __call__(self) -> T:
        """Resolve the target: the hook a :class:`~proxystore.proxy.Proxy` calls."""
        return self.resolve()


class SimpleFactory(Factory[T]):
    """A factory that holds the object itself.

    Useful for tests and for objects small enough to travel with the proxy.

    Args:
        obj: The object the factory returns.
    """

    def __init__(self, obj: T) -> None:
        self.obj = obj

    def resolve(self) -> T:
        """Return the held object."""
        return self.obj

    def __repr__(self) -> str:
        return f"SimpleFactory(<{type(self.obj).__name__}>)"


class LambdaFactory(Factory[T]):
    """A factory that calls ``target(*args, **kwargs)`` to produce the object.

    :meth:`resolve_async` runs the call in a background thread; the next :meth:`resolve` waits
    for it. The target travels with cloudpickle, so lambdas and closures can be sent to other
    processes.

    Args:
        target: Callable that returns the object.
        args: Positional arguments for ``target``.
        kwargs: Keyword arguments for ``target``.
    """

    def __init__(self, target: Callable[..., T], *args: Any, **kwargs: Any) -> None:
        if not callable(target):
            raise TypeError(f"LambdaFactory target must be callable, got {type(target).__name__}")
        self.target = target
        self.args = args
        self.kwargs = kwargs
        self._future: Future[T] | None = None
        self._lock = threading.Lock()

    def resolve(self) -> T:
        """Return ``target(*args, **kwargs)``, or the result of a running async resolve."""
        with self._lock:
            future, self._future = self._future, None
        if future is not None:
            return future.result()
        return self.target(*self.args, **self.kwargs)

    def resolve_async(self) -> None:
        """Start calling the target in a background thread (no-op if already started)."""
        with self._lock:
            if self._future is None:
                self._future = run_in_thread(
                    lambda: self.target(*self.args, **self.kwargs),
                    name="proxystore-lambda-resolve",
                )

    def __reduce__(self) -> tuple[Any, ...]:
        payload = cloudpickle.dumps((self.target, self.args, self.kwargs))
        return (_rebuild_lambda_factory, (payload,))

    def __repr__(self) -> str:
        name = getattr(self.target, "__qualname__", type(self.target).__name__)
        return f"LambdaFactory({name})"


def _rebuild_lambda_factory(payload: bytes) -> LambdaFactory[Any]:
    target, args, kwargs = cloudpickle.loads(payload)
    return LambdaFactory(target, *args, **kwargs)
