"""A local simulation of the Globus Transfer service, for the GlobusStore tests and example.

:class:`SimulatedTransferClient` has the methods of :class:`globus_sdk.TransferClient` that the
store uses, with the same inputs and return shapes: ``submit_transfer`` takes a
:class:`globus_sdk.TransferData`, ``submit_delete`` a :class:`globus_sdk.DeleteData`, and they,
``get_task``, ``cancel_task`` and ``get_submission_id`` answer real
:class:`globus_sdk.GlobusHTTPResponse` objects holding the JSON documents Globus Transfer sends;
``task_wait`` returns a bool like the real one. Errors are real globus-sdk exceptions:
:class:`globus_sdk.TransferAPIError` built from an HTTP response (the way globus-sdk's own
``globus_sdk.testing.construct_error`` builds them) and :class:`globus_sdk.GlobusConnectionError`.

What is simulated:

* Endpoints are local directories: each endpoint UUID maps to a directory standing for the
  endpoint's root, and Globus paths map into it (``/~/x`` and ``/x`` both mean ``<root>/x``).
* Tasks are ``ACTIVE`` when submitted and run in a background thread (named ``globus-sim-*``)
  after ``delay`` seconds, really copying (or deleting) the files, then end ``SUCCEEDED`` or
  ``FAILED`` with a ``fatal_error``. ``sync_level`` (exists, size, mtime, checksum) and
  ``preserve_timestamp`` are honoured; copies are written under a temporary name and renamed.
* Faults on demand: :meth:`~SimulatedTransferClient.fail_next_transfers` (the task ends
  ``FAILED``), :meth:`~SimulatedTransferClient.stall_next_transfers` (it stays ``ACTIVE``
  forever, for timeouts), :meth:`~SimulatedTransferClient.fail_next_calls` (the next calls
  answer an HTTP error such as 401 or 404) and
  :meth:`~SimulatedTransferClient.disconnect_next_calls` (a network error).
* Task documents live as JSON files in ``state_dir``, so several processes on this machine share
  the "service": a pickled client re-attaches to the live client of the same id in its own
  process, or opens the same state in another one. A task runs in the process that submitted
  it, which must live until the task ends.

What is not: authentication (any caller is accepted unless a fault says otherwise), the network,
endpoint activation and permissions, real Globus paths, task retries, pause rules, rate limits,
events, notifications, recursive transfers beyond a plain directory copy, and the speed of
real transfers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import heapq
import http.client
import itertools
import json
import os
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import globus_sdk
import requests

from proxystore.store import init_store
from proxystore.store.globus import GlobusEndpoint, GlobusEndpoints, GlobusStore

__all__ = [
    "SITE_A",
    "SITE_B",
    "SimulatedTransferClient",
    "Sites",
    "close_all",
    "make_globus_store",
    "make_two_sites",
]

SITE_A = "site-a"
"""Host name of the first simulated site (match it with the store's ``hostname``)."""
SITE_B = "site-b"
"""Host name of the second simulated site."""

_BASE_URL = "https://transfer.api.globus.org/v0.10"
_ERROR_CODES = {
    400: "ClientError.BadRequest",
    401: "AuthenticationFailed",
    403: "PermissionDenied",
    404: "ClientError.NotFound",
    409: "Conflict",
    502: "ExternalError",
    503: "ServiceUnavailable",
}
_ERROR_MESSAGES = {
    401: "Token is not active",
    403: "You do not have permission to use this endpoint",
    404: "Not found",
}

_MISSING = getattr(globus_sdk, "MISSING", None)  # globus-sdk 4 marks unset payload fields
_live: weakref.WeakValueDictionary[str, SimulatedTransferClient] = weakref.WeakValueDictionary()
_live_lock = threading.Lock()
_response_client: globus_sdk.TransferClient | None = None


def _given(document: Mapping[str, Any], field: str) -> Any:
    """Return a field of a globus-sdk payload, ``None`` when absent or ``MISSING``."""
    value = document.get(field)
    return None if value is _MISSING else value


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _raw_response(status: int, body: Mapping[str, Any], method: str, path: str) -> Any:
    raw = requests.Response()
    raw.status_code = status
    raw.reason = http.client.responses.get(status, "Unknown")
    raw.url = _BASE_URL + path
    raw.encoding = "utf-8"
    raw.request = requests.Request(method=method, url=raw.url).prepare()
    raw.headers["Content-Type"] = "application/json"
    raw._content = json.dumps(body).encode("utf-8")
    return raw


def _response(
    body: Mapping[str, Any], *, method: str, path: str, status: int = 200
) -> globus_sdk.GlobusHTTPResponse:
    global _response_client
    with _live_lock:
        if _response_client is None:
            # Only the response's .client attribute; it never sends a request.
            _response_client = globus_sdk.TransferClient()
        client = _response_client
    return globus_sdk.GlobusHTTPResponse(_raw_response(status, body, method, path), client)


def _api_error(
    status: int, *, method: str, path: str, message: str | None = None
) -> globus_sdk.TransferAPIError:
    body = {
        "code": _ERROR_CODES.get(status, "ServiceError"),
        "message": message or _ERROR_MESSAGES.get(status, "Simulated error"),
        "request_id": uuid.uuid4().hex[:9],
        "resource": path,
    }
    return globus_sdk.TransferAPIError(_raw_response(status, body, method, path))


class _TaskError(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


@dataclasses.dataclass
class _CallFault:
    remaining: int
    methods: frozenset[str] | None
    kind: str  # "http", "network" or "revoked"
    http_status: int = 0


def _names(methods: Iterable[str] | None) -> frozenset[str] | None:
    return None if methods is None else frozenset(methods)


def _checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _attach(
    sim_id: str, state_dir: str, roots: dict[str, str], delay: float
) -> SimulatedTransferClient:
    with _live_lock:
        existing = _live.get(sim_id)
    if existing is not None and existing._pid == os.getpid():
        return existing
    return SimulatedTransferClient(roots, state_dir=state_dir, delay=delay, _sim_id=sim_id)


class SimulatedTransferClient:
    """A stand-in for :class:`globus_sdk.TransferClient` that moves files between local dirs.

    Args:
        endpoints: Endpoint UUID to the directory that stands for the endpoint's root.
        state_dir: Directory for the task documents (shared by every client of the service).
        delay: Seconds a task stays ``ACTIVE`` before it runs.
        picklable: With ``False`` the client refuses to pickle, like a client holding a
            session or lock would (so it does not travel with proxies).
    """

    def __init__(
        self,
        endpoints: Mapping[str, str | os.PathLike[str]],
        *,
        state_dir: str | os.PathLike[str],
        delay: float = 0.05,
        picklable: bool = True,
        _sim_id: str | None = None,
    ) -> None:
        self._roots = {
            str(uuid.UUID(str(e))): Path(root).absolute() for e, root in endpoints.items()
        }
        for root in self._roots.values():
            root.mkdir(parents=True, exist_ok=True)
        self.state_dir = Path(state_dir).absolute()
        (self.state_dir / "tasks").mkdir(parents=True, exist_ok=True)
        self.delay = delay
        self.picklable = picklable
        self.sim_id = _sim_id or uuid.uuid4().hex
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, str | None]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        self._transfer_faults: list[tuple[str, str]] = []
        self._stalled: list[str] = []
        self._call_faults: list[_CallFault] = []
        self.calls: list[str] = []
        """Names of the API methods called on this client, in order."""
        with _live_lock:
            _live[self.sim_id] = self

    # -- faults on demand ---------------------------------------------------------------------

    def fail_next_transfers(
        self, count: int = 1, *, reason: str = "simulated failure: destination refused the file"
    ) -> None:
        """Make the next ``count`` submitted transfers end ``FAILED`` with ``reason``."""
        with self._cond:
            self._transfer_faults.extend([("fail", reason)] * count)

    def stall_next_transfers(self, count: int = 1) -> None:
        """Make the next ``count`` submitted transfers stay ``ACTIVE`` forever."""
        with self._cond:
            self._transfer_faults.extend([("stall", "")] * count)

    def fail_next_calls(
        self, http_status: int, count: int = 1, *, methods: Iterable[str] | None = None
    ) -> None:
        """Make the next ``count`` API calls (of ``methods``, or any) raise an HTTP error."""
        with self._cond:
            self._call_faults.append(_CallFault(count, _names(methods), "http", http_status))

    def disconnect_next_calls(
        self, count: int = 1, *, methods: Iterable[str] | None = None
    ) -> None:
        """Make the next ``count`` API calls (of ``methods``, or any) fail to connect."""
        with self._cond:
            self._call_faults.append(_CallFault(count, _names(methods), "network"))

    def revoke_refresh_token(self, count: int = 1, *, methods: Iterable[str] | None = None) -> None:
        """Make the next ``count`` calls fail as with a revoked refresh token.

        A real client's ``RefreshTokenAuthorizer`` then gets HTTP 400 ``invalid_grant`` from
        Globus Auth and the call raises :class:`globus_sdk.AuthAPIError`.
        """
        with self._cond:
            self._call_faults.append(_CallFault(count, _names(methods), "revoked"))

    def release_stalled_transfers(self) -> None:
        """Let the stalled transfers run now (after the usual ``delay``)."""
        with self._cond:
            stalled, self._stalled = self._stalled, []
        for task_id in stalled:
            self._schedule(task_id, None)

    def _before(self, name: str, method: str, path: str) -> None:
        with self._cond:
            self.calls.append(name)
            if self._closed:
                raise globus_sdk.GlobusConnectionError(
                    "the simulated Transfer service is closed",
                    requests.ConnectionError("simulated service closed"),
                )
            for fault in self._call_faults:
                if fault.remaining > 0 and (fault.methods is None or name in fault.methods):
                    fault.remaining -= 1
                    break
            else:
                return
            self._call_faults = [f for f in self._call_faults if f.remaining > 0]
        if fault.kind == "network":
            raise globus_sdk.GlobusConnectionError(
                "ConnectionError on request",
                requests.ConnectionError(f"simulated network failure in {name}"),
            )
        if fault.kind == "revoked":
            body = {"error": "invalid_grant"}
            raw = _raw_response(400, body, "POST", "/v2/oauth2/token")
            raw.url = "https://auth.globus.org/v2/oauth2/token"
            raise globus_sdk.AuthAPIError(raw)
        raise _api_error(fault.http_status, method=method, path=path)

    # -- task documents -----------------------------------------------------------------------

    def _task_file(self, task_id: str) -> Path:
        return self.state_dir / "tasks" / f"{task_id}.json"

    def _load(self, task_id: str) -> dict[str, Any] | None:
        try:
            canonical = str(uuid.UUID(str(task_id)))
        except ValueError:
            return None
        try:
            with open(self._task_file(canonical), encoding="utf-8") as file:
                document: dict[str, Any] = json.load(file)
        except FileNotFoundError:
            return None
        return document

    def _store(self, document: Mapping[str, Any]) -> None:
        target = self._task_file(document["task_id"])
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        temp.write_text(json.dumps(document), encoding="utf-8")
        os.replace(temp, target)

    def tasks(self) -> list[dict[str, Any]]:
        """Return every task document of the service, oldest first."""
        documents = []
        for path in (self.state_dir / "tasks").glob("*.json"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                documents.append(json.loads(path.read_text(encoding="utf-8")))
        return sorted(documents, key=lambda d: (d["request_time"], d["_sequence"]))

    def _endpoint(self, endpoint_id: Any, *, method: str, path: str) -> str:
        try:
            canonical = str(uuid.UUID(str(endpoint_id)))
        except ValueError:
            canonical = str(endpoint_id)
        if canonical not in self._roots:
            raise _api_error(
                404,
                method=method,
                path=path,
                message=f"No such endpoint or collection '{endpoint_id}'",
            )
        return canonical

    def _new_task(
        self, kind: str, label: Any, source: str, destination: str | None
    ) -> dict[str, Any]:
        return {
            "DATA_TYPE": "task",
            "task_id": str(uuid.uuid4()),
            "type": kind,
            "status": "ACTIVE",
            "nice_status": "Queued",
            "nice_status_short_description": "Queued",
            "label": label,
            "source_endpoint_id": source,
            "destination_endpoint_id": destination,
            "request_time": _now(),
            "completion_time": None,
            "fatal_error": None,
            "files": 0,
            "files_transferred": 0,
            "files_skipped": 0,
            "subtasks_failed": 0,
            "bytes_transferred": 0,
            "_sequence": time.monotonic_ns(),
        }

    # -- the TransferClient API ---------------------------------------------------------------

    def get_submission_id(self) -> globus_sdk.GlobusHTTPResponse:
        """Return a new submission id (``{"value": ...}``)."""
        self._before("get_submission_id", "GET", "/submission_id")
        return _response(
            {"DATA_TYPE": "submission_id", "value": str(uuid.uuid4())},
            method="GET",
            path="/submission_id",
        )

    def submit_transfer(self, data: globus_sdk.TransferData) -> globus_sdk.GlobusHTTPResponse:
        """Accept a transfer task; it runs after ``delay`` seconds (unless stalled)."""
        self._before("submit_transfer", "POST", "/transfer")
        if data.get("DATA_TYPE") != "transfer" or not data.get("DATA"):
            raise _api_error(
                400, method="POST", path="/transfer", message="A transfer needs at least one item"
            )
        source = self._endpoint(data["source_endpoint"], method="POST", path="/transfer")
        destination = self._endpoint(data["destination_endpoint"], method="POST", path="/transfer")
        if _given(data, "submission_id") is None:
            data["submission_id"] = str(uuid.uuid4())  # as the real client does
        task = self._new_task("TRANSFER", _given(data, "label"), source, destination)
        task.update(
            files=len(data["DATA"]),
            sync_level=_given(data, "sync_level"),
            preserve_timestamp=bool(_given(data, "preserve_timestamp")),
            items=[
                {
                    "source_path": item["source_path"],
                    "destination_path": item["destination_path"],
                    "recursive": bool(_given(item, "recursive")),
                }
                for item in data["DATA"]
            ],
        )
        self._accept(task, kind="transfer")
        return _response(
            {
                "DATA_TYPE": "transfer_result",
                "code": "Accepted",
                "message": "The transfer has been accepted and a task has been created and "
                "queued for execution",
                "request_id": uuid.uuid4().hex[:9],
                "resource": "/transfer",
                "submission_id": data["submission_id"],
                "task_id": task["task_id"],
            },
            method="POST",
            path="/transfer",
            status=202,
        )

    def submit_delete(self, data: globus_sdk.DeleteData) -> globus_sdk.GlobusHTTPResponse:
        """Accept a delete task; it runs after ``delay`` seconds."""
        self._before("submit_delete", "POST", "/delete")
        if data.get("DATA_TYPE") != "delete" or not data.get("DATA"):
            raise _api_error(
                400, method="POST", path="/delete", message="A delete needs at least one item"
            )
        endpoint = self._endpoint(data["endpoint"], method="POST", path="/delete")
        if _given(data, "submission_id") is None:
            data["submission_id"] = str(uuid.uuid4())
        task = self._new_task("DELETE", _given(data, "label"), endpoint, None)
        task.update(
            files=len(data["DATA"]),
            recursive=bool(_given(data, "recursive")),
            ignore_missing=bool(_given(data, "ignore_missing")),
            items=[{"path": item["path"]} for item in data["DATA"]],
        )
        self._accept(task, kind="delete")
        return _response(
            {
                "DATA_TYPE": "delete_result",
                "code": "Accepted",
                "message": "The delete has been accepted and a task has been created and "
                "queued for execution",
                "request_id": uuid.uuid4().hex[:9],
                "resource": "/delete",
                "submission_id": data["submission_id"],
                "task_id": task["task_id"],
            },
            method="POST",
            path="/delete",
            status=202,
        )

    def get_task(self, task_id: uuid.UUID | str) -> globus_sdk.GlobusHTTPResponse:
        """Return the task document (``task["status"]`` is ACTIVE, SUCCEEDED or FAILED)."""
        path = f"/task/{task_id}"
        self._before("get_task", "GET", path)
        document = self._load(str(task_id))
        if document is None:
            raise _api_error(404, method="GET", path=path, message=f"Task {task_id} not found")
        document.pop("items", None)
        document.pop("_sequence", None)
        return _response(document, method="GET", path=path)

    def task_wait(
        self, task_id: uuid.UUID | str, *, timeout: float = 10, polling_interval: float = 10
    ) -> bool:
        """Wait until the task is not ACTIVE; return ``False`` if ``timeout`` ran out first.

        Like the real method, but fractions of a second are allowed (the real one needs 1 s or
        more for both).
        """
        if timeout <= 0 or polling_interval <= 0:
            raise globus_sdk.GlobusSDKUsageError(
                "task_wait timeout and polling_interval must be > 0"
            )
        polling_interval = min(timeout, polling_interval)
        waited = 0.0
        while True:
            if self.get_task(task_id)["status"] != "ACTIVE":
                return True
            waited += polling_interval
            if waited > timeout:
                return False
            time.sleep(polling_interval)

    def cancel_task(self, task_id: uuid.UUID | str) -> globus_sdk.GlobusHTTPResponse:
        """Cancel an ACTIVE task (it ends FAILED with the code CANCELED)."""
        path = f"/task/{task_id}/cancel"
        self._before("cancel_task", "POST", path)
        with self._cond:
            document = self._load(str(task_id))
            if document is None:
                raise _api_error(404, method="POST", path=path, message=f"Task {task_id} not found")
            if document["status"] != "ACTIVE":
                body = {"code": "TaskComplete", "message": "The task completed before cancel"}
            else:
                self._finish(document, _TaskError("CANCELED", "The task was canceled"))
                body = {"code": "Canceled", "message": "The task has been cancelled successfully."}
        body.update(DATA_TYPE="result", resource=path, request_id=uuid.uuid4().hex[:9])
        return _response(body, method="POST", path=path)

    # -- running tasks ------------------------------------------------------------------------

    def _accept(self, task: dict[str, Any], *, kind: str) -> None:
        with self._cond:
            fault = None
            if kind == "transfer" and self._transfer_faults:
                fault = self._transfer_faults.pop(0)
            self._store(task)
            if fault is not None and fault[0] == "stall":
                self._stalled.append(task["task_id"])
                return
        self._schedule(task["task_id"], fault[1] if fault is not None else None)

    def _schedule(self, task_id: str, fail_reason: str | None) -> None:
        with self._cond:
            if self._closed:
                return
            due = time.monotonic() + self.delay
            heapq.heappush(self._heap, (due, next(self._order), task_id, fail_reason))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"globus-sim-{self.sim_id[:8]}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed or not self._heap:
                        self._thread = None
                        self._cond.notify_all()
                        return
                    due, _, task_id, reason = self._heap[0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        self._busy = True
                        break
                    self._cond.wait(wait)
            try:
                self._execute(task_id, reason)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _execute(self, task_id: str, fail_reason: str | None) -> None:
        document = self._load(task_id)
        if document is None or document["status"] != "ACTIVE":
            return  # canceled meanwhile
        try:
            if fail_reason is not None:
                raise _TaskError("SIMULATED_FAILURE", fail_reason)
            if document["type"] == "TRANSFER":
                self._run_transfer(document)
            else:
                self._run_delete(document)
        except _TaskError as exc:
            self._finish(document, exc)
        except OSError as exc:
            self._finish(document, _TaskError("ENDPOINT_ERROR", str(exc)))
        else:
            self._finish(document, None)

    def _finish(self, document: dict[str, Any], error: _TaskError | None) -> None:
        document.update(
            status="FAILED" if error else "SUCCEEDED",
            nice_status=None,
            nice_status_short_description=None,
            completion_time=_now(),
            fatal_error=None
            if error is None
            else {"code": error.code, "description": error.description},
        )
        self._store(document)

    def _local(self, endpoint: str, path: str) -> Path:
        root = self._roots[endpoint]
        relative = path
        for prefix in ("/~/", "~/"):
            if relative.startswith(prefix):
                relative = relative[len(prefix) :]
        relative = relative.lstrip("/")
        target = Path(os.path.normpath(root / relative))
        if os.path.commonpath([target, root]) != str(root):
            raise _TaskError("PERMISSION_DENIED", f"{path} is outside endpoint {endpoint}")
        return target

    def _in_sync(self, level: int | None, source: Path, destination: Path) -> bool:
        if level is None or not destination.exists():
            return False
        if level == 0:
            return True
        src, dst = source.stat(), destination.stat()
        if level == 1:
            return src.st_size == dst.st_size
        if level == 2:
            return src.st_mtime_ns <= dst.st_mtime_ns
        return _checksum(source) == _checksum(destination)

    def _run_transfer(self, document: dict[str, Any]) -> None:
        source, destination = document["source_endpoint_id"], document["destination_endpoint_id"]
        for item in document["items"]:
            src = self._local(source, item["source_path"])
            dst = self._local(destination, item["destination_path"])
            if not src.exists():
                raise _TaskError(
                    "FILE_NOT_FOUND", f"{item['source_path']} does not exist on endpoint {source}"
                )
            if src.is_dir():
                if not item["recursive"]:
                    raise _TaskError("IS_A_DIRECTORY", f"{item['source_path']} is a directory")
                shutil.copytree(src, dst, dirs_exist_ok=True)
                document["files_transferred"] += 1
                continue
            if self._in_sync(document["sync_level"], src, dst):
                document["files_skipped"] += 1
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            temp = dst.with_name(f".{dst.name}.globus-sim-{uuid.uuid4().hex[:8]}")
            try:
                shutil.copyfile(src, temp)
                if document["preserve_timestamp"]:
                    stat = src.stat()
                    os.utime(temp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
                os.replace(temp, dst)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
            document["files_transferred"] += 1
            document["bytes_transferred"] += dst.stat().st_size

    def _run_delete(self, document: dict[str, Any]) -> None:
        endpoint = document["source_endpoint_id"]
        for item in document["items"]:
            target = self._local(endpoint, item["path"])
            if not target.exists():
                if document["ignore_missing"]:
                    continue
                raise _TaskError("FILE_NOT_FOUND", f"{item['path']} does not exist on {endpoint}")
            if target.is_dir():
                if not document["recursive"]:
                    raise _TaskError("IS_A_DIRECTORY", f"{item['path']} is a directory")
                shutil.rmtree(target)
            else:
                target.unlink()

    # -- lifecycle ----------------------------------------------------------------------------

    def wait_until_idle(self, timeout: float = 10) -> bool:
        """Wait until every task this client scheduled has run; return whether they all did."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and not self._busy, timeout)

    def close(self) -> None:
        """Stop the background thread; tasks not yet run stay ACTIVE; later calls fail."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __reduce__(self) -> tuple[Any, ...]:
        if not self.picklable:
            raise TypeError("this SimulatedTransferClient was made with picklable=False")
        roots = {endpoint: str(root) for endpoint, root in self._roots.items()}
        return (_attach, (self.sim_id, str(self.state_dir), roots, self.delay))

    def __repr__(self) -> str:
        return f"SimulatedTransferClient(endpoints={list(self._roots)}, delay={self.delay})"


def close_all() -> None:
    """Close every simulated client of this process (stops their threads)."""
    with _live_lock:
        clients = list(_live.values())
    for client in clients:
        client.close()


@dataclasses.dataclass
class Sites:
    """Two simulated sites: a client of the simulated service and the store's endpoints."""

    client: SimulatedTransferClient
    endpoints: GlobusEndpoints
    a: GlobusEndpoint
    b: GlobusEndpoint

    def path_at(self, endpoint: GlobusEndpoint, filename: str) -> Path:
        """Return where ``filename`` of the store is at ``endpoint``'s site."""
        return Path(endpoint.local_path) / filename


def make_two_sites(
    base: str | os.PathLike[str], *, delay: float = 0.05, picklable: bool = True
) -> Sites:
    """Make two simulated sites under ``base``: host ``site-a`` and host ``site-b``.

    Each endpoint's root is ``<base>/<site>``; the store's directory is ``/~/proxystore`` as
    Globus sees it and ``<base>/<site>/proxystore`` locally.
    """
    base = Path(base).absolute()
    roots = {}
    endpoints = []
    for host in (SITE_A, SITE_B):
        endpoint_id = str(uuid.uuid4())
        roots[endpoint_id] = base / host
        endpoints.append(
            GlobusEndpoint(endpoint_id, "/~/proxystore", str(base / host / "proxystore"), host)
        )
    client = SimulatedTransferClient(
        roots, state_dir=base / "transfer-service", delay=delay, picklable=picklable
    )
    return Sites(client, GlobusEndpoints(endpoints), endpoints[0], endpoints[1])


def make_globus_store(name: str, tmp_path: str | os.PathLike[str], **kwargs: Any) -> GlobusStore:
    """Make and register a GlobusStore at site A of two fresh simulated sites.

    For the contract suite: transfers take 10 ms and waits poll every 5 ms. ``kwargs`` go to
    the store (``cache_size=...``) and override those defaults.
    """
    sites = make_two_sites(Path(tmp_path) / f"globus-{name}", delay=0.01)
    options: dict[str, Any] = {
        "endpoints": sites.endpoints,
        "transfer_client": sites.client,
        "hostname": SITE_A,
        "polling_interval": 0.005,
        "timeout": 10,
        **kwargs,
    }
    store = init_store("globus", name, **options)
    assert isinstance(store, GlobusStore)
    return store
