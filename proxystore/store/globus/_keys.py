"""The key codec of ``GlobusStore``: keys that carry the ids of their transfer tasks.

A key made by the store is hex digits only, in groups of 32::

    <object id><task id>[<task id>...]

The object id (128 random bits) names the file on every endpoint; each following group is the
id of one transfer task, one per destination endpoint, written as its UUID without dashes
(``7d3c...`` for ``7d3c....-....``). With a single endpoint the key is the object id alone.

Any other key is a *custom* key: it is the file name itself and carries no task.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

__all__ = ["ID_HEX", "is_store_made", "make_key", "split_key"]

ID_HEX = 32
"""Hex digits of one id (an object id, or a task UUID without dashes)."""

_STORE_MADE_KEY = re.compile(r"(?:[0-9a-f]{32}){2,}")


def is_store_made(key: str) -> bool:
    """Return whether ``key`` is a store-made key with task ids (its object is immutable)."""
    return isinstance(key, str) and _STORE_MADE_KEY.fullmatch(key) is not None


def make_key(object_id: str, task_ids: Sequence[str]) -> str:
    """Return the key of file ``object_id`` moved by the transfer tasks ``task_ids``."""
    return object_id + "".join(uuid.UUID(task_id).hex for task_id in task_ids)


def split_key(key: str) -> tuple[str, list[str]]:
    """Return the file name and the transfer task ids (canonical UUIDs) that ``key`` carries.

    A custom key is its own file name and carries no task.
    """
    if is_store_made(key):
        tasks = [
            str(uuid.UUID(key[start : start + ID_HEX])) for start in range(ID_HEX, len(key), ID_HEX)
        ]
        return key[:ID_HEX], tasks
    return key, []
