"""``GlobusBackend``: files moved between Globus endpoints by transfer tasks.

Writing an object writes it as a file in the local endpoint's directory (with the file backend)
and submits one transfer task from the local endpoint to each other endpoint (the package's
private ``_tasks`` module). The key of a new object carries the ids of those tasks (``_keys``),
so reading, ``exists`` and evicting at any site first wait for the task that brings the file
there, then use the local file.

Objects under store-made keys are immutable: writing a store-made key again is refused. A
*custom* key is a file name; it cannot carry task ids, so writing one waits until every
transfer has finished (and for any delete of the same name still running).
"""

from __future__ import annotations

from collections.abc import Sequence

from proxystore.exceptions import InvalidKeyError
from proxystore.store.backends.base import BackendBase, Fetched, Parts, new_key
from proxystore.store.file.backend import FileBackend
from proxystore.store.globus._keys import is_store_made, make_key, split_key
from proxystore.store.globus._tasks import TransferTasks

__all__ = ["GlobusBackend"]


class GlobusBackend(BackendBase):
    """Files in the local endpoint's directory, copied to the other endpoints by Globus.

    Args:
        tasks: The store's transfer tasks (client, endpoints, waiting).
        local_dir: The local endpoint's directory as this site's file system sees it.
        store_name: Name of the store, for messages.
        store_type: Class name of the store, for messages.

    Raises:
        StoreError: If ``local_dir`` cannot be created.
    """

    names_new_keys = True
    """Store-made keys carry transfer task ids: only this backend can name them (signing)."""

    def __init__(
        self,
        tasks: TransferTasks,
        local_dir: str,
        *,
        store_name: str = "",
        store_type: str = "GlobusStore",
    ) -> None:
        super().__init__(store_name=store_name, store_type=store_type)
        self.tasks = tasks
        self.local_dir = local_dir
        self.files = FileBackend(local_dir, store_name=store_name, store_type=store_type)

    def _custom_filename(self, key: str) -> str:
        if is_store_made(key):
            raise InvalidKeyError(
                f"{self.where} cannot set key {key!r}: it is a store-made key, whose object is "
                "immutable (the key names the transfers that copied it). Set the new object "
                "without a key, or under a custom key.",
                key=key,
                store_name=self.store_name,
                store_type=self.store_type,
            )
        self.files.path(key)  # a valid file name, or InvalidKeyError
        return key

    def _arrived(self, key: str) -> str:
        """Wait for the transfer that brings ``key`` here; return its file name."""
        filename, task_ids = split_key(key)
        self.files.path(filename)
        self.tasks.wait(task_ids, key, arriving_only=True, raise_failed=True)
        return filename

    def put(self, key: str | None, parts: Parts) -> str:
        """Write one object and start its transfers (see :meth:`put_batch`)."""
        return self.put_batch([(key, parts)])[0]

    def put_batch(self, items: Sequence[tuple[str | None, Parts]]) -> list[str]:
        """Write the files, then submit one transfer per destination endpoint for all of them.

        Every store-made key of the batch carries the same task ids. If any key is custom, the
        call waits for the transfers.

        Raises:
            InvalidKeyError: If a key is store-made or not a valid file name.
            StoreError: If a file cannot be written or (custom key) a transfer failed.
            StoreTimeoutError: If (custom key) a transfer did not finish within the timeout.
        """
        if not items:
            return []  # nothing to transfer (Globus refuses a transfer of no items)
        filenames = [new_key() if key is None else self._custom_filename(key) for key, _ in items]
        custom = [name for name, (key, _) in zip(filenames, items) if key is not None]
        self.tasks.wait_for_deletes(custom)
        for filename, (_, parts) in zip(filenames, items):
            self.files.put(filename, parts)
        unique = list(dict.fromkeys(filenames))
        task_ids = self.tasks.submit_transfers(unique)
        if custom:
            self.tasks.wait(task_ids, ", ".join(unique), arriving_only=False, raise_failed=True)
        return [
            key if key is not None else make_key(filename, task_ids)
            for filename, (key, _) in zip(filenames, items)
        ]

    def get(self, key: str) -> Fetched:
        """Wait for the transfer that brings ``key`` here, then read the local file."""
        return self.files.get(self._arrived(key))

    def timestamp(self, key: str) -> float | None:
        """Return the write time of ``key``'s local file (after its transfer), or ``None``."""
        return self.files.timestamp(self._arrived(key))

    def exists(self, key: str) -> bool:
        """Return whether ``key``'s file is here, after waiting for its transfer."""
        return self.files.exists(self._arrived(key))

    def is_immutable(self, key: str) -> bool:
        """Store-made keys name immutable objects; custom keys may be overwritten."""
        return is_store_made(key)

    def evict(self, key: str) -> None:
        """Delete ``key``'s file here and, by Globus delete tasks, on every other endpoint.

        Waits first for the key's transfers (a copy still being written would outlive the
        delete), but not for the delete tasks: copies elsewhere vanish when they finish. A
        missing key is not an error.

        Raises:
            StoreTimeoutError: If a transfer of the key is still running after the timeout.
        """
        filename, task_ids = split_key(key)
        self.files.path(filename)
        self.tasks.wait(task_ids, key, arriving_only=False, raise_failed=False)
        self.files.evict(filename)
        delete_ids = self.tasks.submit_deletes(filename)
        if not is_store_made(key):
            self.tasks.track_deletes(filename, delete_ids)

    def __repr__(self) -> str:
        return f"GlobusBackend(local_endpoint={self.tasks.local_endpoint.uuid!r})"
