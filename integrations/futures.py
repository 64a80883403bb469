"""``ProxyExecutor``: any ``concurrent.futures.Executor`` that sends large arguments by proxy.

::

    with ProxyExecutor(ProcessPoolExecutor(4), store=store, threshold=1_000_000) as ex:
        futures = [ex.submit(train, big_array, i) for i in range(100)]

Every argument of at least ``threshold`` bytes (and every such item of a list, tuple or dict
argument) is stored once, however many tasks it is passed to, and the task receives a proxy
that starts downloading before the task body runs. When the last task using a stored object
has finished, failed or been cancelled, the object is evicted (unless ``policy.evict`` is off).

Futures are arguments too, as in Dask and Parsl: ``ex.submit(g, ex.submit(f, x))`` returns at
once, and ``g`` is sent to the pool when ``f`` has finished, with ``f``'s result in place of
the future (also for futures one level down in a list, tuple or dict argument). The client
never waits, and no worker ever waits on a producer (a pool whose workers all wait cannot
deadlock: nothing is sent before its inputs exist). With ``proxy_results`` a large result goes
from the store to the next worker, never through the client.
"""

from __future__ import annotations

import contextlib
import itertools
import pickle
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, ClassVar, TypeVar

from proxystore.serialize import SerializationError
from proxystore.store import Store

from .dependents import Dependents, holds_futures
from .policy import ProxyPolicy, make_policy
from .proxier import ArgumentProxier, Pickling

__all__ = ["ProxyExecutor"]

T = TypeVar("T")

_PICKLABLE_KEPT = 256  # functions remembered as picklable


def _run_chunk(
    task: Callable[..., Any], chunk: list[tuple[tuple[Any, ...], dict[str, Any]]]
) -> list[Any]:
    return [task(*args, **kwargs) for args, kwargs in chunk]


class ProxyExecutor(Executor):
    """An executor that wraps another and passes large arguments by proxy.

    Args:
        executor: The executor that runs the tasks (``ThreadPoolExecutor``,
            ``ProcessPoolExecutor`` with any start method, or any other ``Executor``).
        store: Store for proxied arguments: a store object or the name of a registered store.
        threshold: Arguments of at least this many bytes travel by proxy. Shorthand for
            ``policy=ProxyPolicy(threshold=...)``; give one or the other.
        policy: The full policy (types always/never proxied, eviction, prefetch, results).

    Raises:
        TypeError: If ``executor`` is not an ``Executor`` or ``store`` is missing.
        ValueError: If both ``threshold`` and ``policy`` are given, the threshold is negative,
            or the store cannot be re-created in the executor's worker processes.
    """

    accepts_futures: ClassVar[bool] = True
    """Futures (of this or any ``concurrent.futures`` executor) may be passed as arguments."""

    def __init__(
        self,
        executor: Executor,
        *,
        store: Store | str,
        threshold: int | None = None,
        policy: ProxyPolicy | None = None,
    ) -> None:
        if not isinstance(executor, Executor):
            raise TypeError(
                f"ProxyExecutor wraps a concurrent.futures.Executor, got {type(executor).__name__}"
            )
        self.policy = make_policy(threshold, policy, owner="ProxyExecutor")
        self.executor = executor
        self.proxier = ArgumentProxier(
            store, self.policy, owner="ProxyExecutor", pickling=_pickling(executor)
        )
        self.store = self.proxier.store
        self._plan = self.proxier.plan
        self._threads = self.proxier.pickling == "never"  # tasks run in this process
        self._picklable: set[Callable[..., Any]] = set()  # functions known to pickle
        self._dependents = Dependents(self.submit, owner="ProxyExecutor")

    def _knows_picklable(self, fn: Callable[..., Any]) -> bool:
        """Whether ``fn`` needs no check (threads) or passed it (a few hundred are remembered)."""
        try:
            return self._threads or fn in self._picklable
        except TypeError:  # an unhashable callable: checked every time
            return False

    def _check_picklable(self, fn: Callable[..., Any]) -> None:
        """Pickle ``fn`` once to be sure a worker process can receive it; remember it."""
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise SerializationError(
                f"ProxyExecutor: the task {getattr(fn, '__qualname__', fn)!r} cannot "
                f"be pickled, so {type(self.executor).__name__} cannot send it to a worker "
                f"process: {exc}"
            ) from exc
        with contextlib.suppress(TypeError):
            if len(self._picklable) >= _PICKLABLE_KEPT:
                self._picklable.clear()
            self._picklable.add(fn)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Submit ``fn(*args, **kwargs)``; large arguments travel by proxy.

        Raises:
            SerializationError: If ``fn`` or an argument cannot be sent to a worker process.
            RuntimeError: If the executor has been shut down.
        """
        try:  # _knows_picklable, inline: the common case costs no call
            known = self._threads or fn in self._picklable
        except TypeError:  # an unhashable callable: checked every time
            known = False
        if not known:
            self._check_picklable(fn)
        if holds_futures(args, kwargs):  # sent once they are done, with their results
            return self._dependents.submit_after(fn, args, kwargs)
        planner = self._plan  # an attribute, not a method: loaded as one, called once
        plan = planner(args, kwargs)
        if plan.sends_as_is:
            return self.executor.submit(fn, *args, **kwargs)  # the plain call
        return self.proxier.submit(fn, self.executor.submit, args, kwargs, plan)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """Like :meth:`concurrent.futures.Executor.map`, with large arguments by proxy.

        With ``chunksize > 1``, each chunk of calls runs as one task (as in
        ``ProcessPoolExecutor.map``); each call's arguments are still proxied one by one.

        Raises:
            ValueError: If ``chunksize`` is less than 1.
            TimeoutError: From the iterator, if a result is not ready within ``timeout``
                seconds of this call.
        """
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize}")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables)
        if chunksize == 1:
            futures: list[Future[Any]] = [self.submit(fn, *args) for args in calls]
        else:
            futures = [self._submit_chunk(fn, list(chunk)) for chunk in _batched(calls, chunksize)]
        return self._results(futures, deadline, chunked=chunksize > 1)

    def _submit_chunk(self, fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> Future[Any]:
        if not self._knows_picklable(fn):
            self._check_picklable(fn)
        (future,) = self.proxier.submit_calls(
            fn,
            [(args, {}) for args in chunk],
            lambda task, calls: [self.executor.submit(_run_chunk, task, calls)],
        )
        return future

    @staticmethod
    def _results(
        futures: list[Future[Any]], deadline: float | None, *, chunked: bool
    ) -> Iterator[Any]:
        try:
            futures.reverse()
            while futures:
                future = futures.pop()
                wait = None if deadline is None else deadline - time.monotonic()
                if chunked:
                    yield from future.result(wait)
                else:
                    yield future.result(wait)
        finally:
            for future in futures:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the wrapped executor down (cancelled tasks release their stored arguments).

        Tasks still waiting for the futures they were given are sent first, as a plain pool
        runs every task submitted before its shutdown (with ``cancel_futures=True`` they are
        cancelled instead); with ``wait=False`` that happens in the background.
        """
        self._dependents.close(
            lambda: self.executor.shutdown(wait=wait, cancel_futures=cancel_futures),
            wait=wait,
            cancel=cancel_futures,
        )

    def __repr__(self) -> str:
        return f"ProxyExecutor({self.executor!r}, store={self.store!r}, policy={self.policy!r})"


def _pickling(executor: Executor) -> Pickling:
    """How ``executor`` carries arguments: threads never pickle them, process pools always."""
    if isinstance(executor, ThreadPoolExecutor):
        return "never"
    if isinstance(executor, ProcessPoolExecutor):
        return "always"
    return "maybe"


def _batched(iterable: Iterable[T], size: int) -> Iterator[tuple[T, ...]]:
    iterator = iter(iterable)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk
