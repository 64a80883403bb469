"""Transfer-task tracking of ``GlobusStore``: submit, wait, and translate Globus errors.

:class:`TransferTasks` submits one transfer task per destination endpoint (a Globus task has
one source and one destination) and one delete task per remote endpoint, and waits for tasks:
it polls ``get_task`` every ``polling_interval`` seconds for at most ``timeout`` seconds. A
task that ends ``FAILED`` raises :class:`~proxystore.exceptions.StoreError` and one still
running at the deadline raises :class:`~proxystore.exceptions.StoreTimeoutError`; both name the
task, its source and destination endpoints and the key.

Errors of globus-sdk are translated in one place, :meth:`TransferTasks.call`: HTTP 401/403 and
rejected refresh tokens become :class:`~proxystore.exceptions.StoreAuthError` (run
``proxystore-globus-auth login``), network failures
:class:`~proxystore.exceptions.StoreConnectionError`, anything else
:class:`~proxystore.exceptions.StoreError`, always chained to the original.
"""

from __future__ import annotations

import posixpath
import re
import threading
import time
import uuid as _uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Literal, Protocol, TypeVar

import globus_sdk

from proxystore.exceptions import (
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
)
from proxystore.store.globus.endpoints import GlobusEndpoint, GlobusEndpoints, canonical

__all__ = ["SYNC_LEVELS", "SyncLevel", "TransferClientLike", "TransferTasks"]

T = TypeVar("T")

SyncLevel = Literal["exists", "size", "mtime", "checksum"]
SYNC_LEVELS = ("exists", "size", "mtime", "checksum")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_, -]")
_REMEMBERED_TASKS = 4096
_LOGIN_HINT = "run `proxystore-globus-auth login` to log in to Globus again"


class TransferClientLike(Protocol):
    """What :class:`GlobusStore` needs of a transfer client (``globus_sdk.TransferClient``).

    Each method returns a response with ``response["field"]`` access to the JSON document
    Globus Transfer answers (``task_id`` for submissions, the task document for ``get_task``).
    """

    def submit_transfer(self, data: Any) -> Any:
        """Submit a :class:`globus_sdk.TransferData` document."""

    def submit_delete(self, data: Any) -> Any:
        """Submit a :class:`globus_sdk.DeleteData` document."""

    def get_task(self, task_id: Any) -> Any:
        """Return the document of the task ``task_id``."""


class TransferTasks:
    """The Globus transfer and delete tasks of one store object, and waiting for them.

    Args:
        client: The transfer client.
        endpoints: All endpoints of the store.
        local_endpoint: This site's endpoint (the source of every transfer submitted here).
        polling_interval: Seconds between two ``get_task`` calls while waiting.
        timeout: Most seconds to wait for one task.
        sync_level: Globus ``sync_level`` of the transfers.
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.
    """

    def __init__(
        self,
        client: TransferClientLike,
        endpoints: GlobusEndpoints,
        local_endpoint: GlobusEndpoint,
        *,
        polling_interval: float,
        timeout: float,
        sync_level: SyncLevel,
        store_name: str,
        store_type: str = "GlobusStore",
    ) -> None:
        self.client = client
        self.endpoints = endpoints
        self.local_endpoint = local_endpoint
        self.polling_interval = polling_interval
        self.timeout = timeout
        self.sync_level = sync_level
        self.store_name = store_name
        self.store_type = store_type
        self._lock = threading.Lock()
        # Tasks known to be over (SUCCEEDED), tasks this object submitted (so the local
        # endpoint is their source: the file is already here), and tasks to other endpoints.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._submitted: OrderedDict[str, None] = OrderedDict()
        self._elsewhere: OrderedDict[str, None] = OrderedDict()
        # Delete tasks still possibly running, by file name (custom keys only: a later set of
        # the same name must not race them).
        self._deletes: dict[str, list[str]] = {}

    @property
    def where(self) -> str:
        """``GlobusStore 'name'``, how messages name the store."""
        return f"{self.store_type} {self.store_name!r}"

    def describe(self, endpoint_id: object) -> str:
        """Return an endpoint id with its path when it is one of the store's endpoints."""
        endpoint_id = canonical(endpoint_id)
        if endpoint_id in self.endpoints:
            return f"{endpoint_id} ({self.endpoints[endpoint_id].endpoint_path})"
        return endpoint_id

    def call(self, action: str, subject: str, function: Callable[..., T], *args: Any) -> T:
        """Call the transfer client, translating globus-sdk errors into ProxyStore errors.

        Args:
            action: What the call does, for messages ("submitting a transfer ...").
            subject: What a 404 means is missing ("task 1234", "endpoint ...").
            function: The client method.
            args: Its arguments.
        """
        context = f"{self.where} failed {action}"
        try:
            return function(*args)
        except globus_sdk.AuthAPIError as exc:
            raise StoreAuthError(
                f"{context}: Globus Auth rejected the saved credentials (they may be revoked or "
                f"expired: HTTP {exc.http_status} {exc.code}: {exc.message}). To fix it, "
                f"{_LOGIN_HINT}.",
                store_name=self.store_name,
                store_type=self.store_type,
            ) from exc
        except globus_sdk.GlobusAPIError as exc:
            detail = f"HTTP {exc.http_status} {exc.code}: {exc.message}"
            if exc.http_status in (401, 403):
                extra = (
                    " If you are logged in, check that your Globus identity may use these "
                    "endpoints (and has consented to their data_access scope: "
                    "proxystore-globus-auth login --collection UUID)."
                    if exc.http_status == 403
                    else ""
                )
                raise StoreAuthError(
                    f"{context}: Globus Transfer refused the credentials ({detail}). To fix "
                    f"it, {_LOGIN_HINT}.{extra}",
                    store_name=self.store_name,
                    store_type=self.store_type,
                ) from exc
            if exc.http_status == 404:
                raise StoreError(
                    f"{context}: Globus Transfer knows no {subject} ({detail}).",
                    store_name=self.store_name,
                    store_type=self.store_type,
                ) from exc
            raise StoreError(
                f"{context}: Globus Transfer answered {detail}",
                store_name=self.store_name,
                store_type=self.store_type,
            ) from exc
        except globus_sdk.NetworkError as exc:
            address = str(getattr(self.client, "base_url", "transfer.api.globus.org"))
            raise StoreConnectionError(
                f"{context}: cannot reach Globus Transfer at {address}: {exc}",
                address=address,
                store_name=self.store_name,
                store_type=self.store_type,
            ) from exc

    def label(self) -> str:
        """Return the label of this store's Globus tasks (safe characters only)."""
        return _LABEL_UNSAFE.sub("_", f"ProxyStore {self.store_name}")[:128]

    def _remember(self, table: OrderedDict[str, None], task_id: str) -> None:
        with self._lock:
            table[task_id] = None
            table.move_to_end(task_id)
            while len(table) > _REMEMBERED_TASKS:
                table.popitem(last=False)

    def submit_transfers(self, filenames: Sequence[str]) -> list[str]:
        """Submit one transfer of ``filenames`` from the local endpoint to each other one."""
        source = self.local_endpoint
        task_ids = []
        for destination in self.endpoints:
            if destination.uuid == source.uuid:
                continue
            data = globus_sdk.TransferData(
                source_endpoint=source.uuid,
                destination_endpoint=destination.uuid,
                label=self.label(),
                sync_level=self.sync_level,
                preserve_timestamp=True,
                notify_on_succeeded=False,
            )
            for filename in filenames:
                data.add_item(
                    posixpath.join(source.endpoint_path, filename),
                    posixpath.join(destination.endpoint_path, filename),
                )
            result = self.call(
                f"submitting a transfer from endpoint {self.describe(source.uuid)} to endpoint "
                f"{self.describe(destination.uuid)}",
                f"endpoint {source.uuid} or {destination.uuid} (or no access to it)",
                self.client.submit_transfer,
                data,
            )
            task_id = str(result["task_id"])
            try:
                task_id = str(_uuid.UUID(task_id))
            except ValueError:
                raise StoreError(
                    f"{self.where}: Globus Transfer returned task id {task_id!r}, "
                    "which is not a UUID and cannot be carried in a key",
                    store_name=self.store_name,
                    store_type=self.store_type,
                ) from None
            self._remember(self._submitted, task_id)
            task_ids.append(task_id)
        return task_ids

    def wait(
        self, task_ids: Sequence[str], key: str, *, arriving_only: bool, raise_failed: bool
    ) -> None:
        """Wait until the transfer tasks are over.

        Args:
            task_ids: The tasks.
            key: The key they belong to, for messages.
            arriving_only: Wait only for tasks whose destination is the local endpoint (reads);
                otherwise for all of them (writes with a custom key, evict: a copy still being
                written would outlive a delete).
            raise_failed: Raise if a task failed; otherwise a failed task counts as over.

        Raises:
            StoreError: If ``raise_failed`` and a task failed.
            StoreTimeoutError: If a task is still running after ``timeout`` seconds.
        """
        local = self.local_endpoint.uuid
        with self._lock:
            pending = [
                task_id
                for task_id in task_ids
                if task_id not in self._finished
                and not (
                    arriving_only and (task_id in self._submitted or task_id in self._elsewhere)
                )
            ]
        if not pending:
            return
        deadline = time.monotonic() + self.timeout
        last: dict[str, Any] = {}
        while True:
            for task_id in list(pending):
                task = self.call(
                    f"checking Globus task {task_id} of key {key!r}",
                    f"task {task_id} (it belongs to key {key!r})",
                    self.client.get_task,
                    task_id,
                )
                status = task["status"]
                if arriving_only and canonical(task.get("destination_endpoint_id")) != local:
                    self._remember(self._elsewhere, task_id)  # it brings nothing here
                    pending.remove(task_id)
                elif status == "SUCCEEDED":
                    self._remember(self._finished, task_id)
                    pending.remove(task_id)
                elif status == "FAILED":
                    if raise_failed:
                        raise self._failed(task_id, task, key)
                    pending.remove(task_id)
                else:
                    last[task_id] = task
            if not pending:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out(pending[0], last[pending[0]], key)
            time.sleep(min(self.polling_interval, remaining))

    def _route(self, task: Any) -> str:
        source = task.get("source_endpoint_id")
        destination = task.get("destination_endpoint_id")
        return f"from endpoint {self.describe(source)} to endpoint {self.describe(destination)}"

    def _failed(self, task_id: str, task: Any, key: str) -> StoreError:
        fatal = task.get("fatal_error") or {}
        reason = (
            (fatal.get("code"), fatal.get("description"))
            if isinstance(fatal, Mapping)
            else (None, None)
        )
        why = ": ".join(str(part) for part in reason if part) or str(
            task.get("nice_status_details") or task.get("nice_status") or "no reason given"
        )
        return StoreError(
            f"{self.where}: Globus transfer task {task_id} {self._route(task)} "
            f"FAILED ({why}): the object of key {key!r} did not reach endpoint "
            f"{self.describe(task.get('destination_endpoint_id'))}. Details: "
            f"https://app.globus.org/activity/{task_id}",
            store_name=self.store_name,
            store_type=self.store_type,
        )

    def _timed_out(self, task_id: str, task: Any, key: str) -> StoreTimeoutError:
        nice = task.get("nice_status")
        status = f"{task.get('status')}" + (f", {nice}" if nice else "")
        return StoreTimeoutError(
            f"{self.where} waited {self.timeout} s for Globus transfer task "
            f"{task_id} {self._route(task)} of key {key!r}; it is still {status}. "
            f"See https://app.globus.org/activity/{task_id}, and raise the store's timeout if "
            "transfers take longer.",
            store_name=self.store_name,
            store_type=self.store_type,
        )

    def wait_for_deletes(self, filenames: Iterable[str]) -> None:
        """Wait for the delete tasks of ``filenames`` (a failed delete counts as over)."""
        for filename in filenames:
            with self._lock:
                task_ids = self._deletes.pop(filename, [])
            if task_ids:
                self.wait(task_ids, filename, arriving_only=False, raise_failed=False)

    # -- writing ------------------------------------------------------------------------------

    def submit_deletes(self, filename: str) -> list[str]:
        """Submit a delete of ``filename`` on every endpoint but this one; return the task ids."""
        delete_ids = []
        for endpoint in self.endpoints:
            if endpoint.uuid == self.local_endpoint.uuid:
                continue
            data = globus_sdk.DeleteData(
                endpoint=endpoint.uuid,
                label=self.label(),
                ignore_missing=True,
                notify_on_succeeded=False,
            )
            data.add_item(posixpath.join(endpoint.endpoint_path, filename))
            result = self.call(
                f"deleting {filename!r} on endpoint {self.describe(endpoint.uuid)}",
                f"endpoint {endpoint.uuid} (or no access to it)",
                self.client.submit_delete,
                data,
            )
            delete_ids.append(str(result["task_id"]))
        return delete_ids

    def track_deletes(self, filename: str, task_ids: Sequence[str]) -> None:
        """Remember delete tasks of ``filename``, which a later write of it must wait for."""
        if task_ids:
            with self._lock:
                self._deletes.setdefault(filename, []).extend(task_ids)
