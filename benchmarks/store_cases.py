"""put, get and put+get on every store, each against its raw backend.

Objects: numpy float64 arrays of 1 KB, 1 MB and 100 MB, and a dict of small objects. Remote
stores run with their cache off (``cache_size=0``), so every ``get`` reads the backend. Both
the store and its floor overwrite one fixed key, and every result is dropped inside the timed
region, so they do the same work around the transfer.

Floors, each moving the same bytes (the array's memory, or the dict's serialized form):

* LocalStore: a copy (``ndarray.copy()``, ``copy.deepcopy`` for the dict), which is what a
  store that copies would cost at least;
* FileStore: ``open(path, "wb").write(data)`` and ``open(path, "rb").read()`` in the same
  directory;
* RedisStore: redis-py ``set`` and ``get`` on the same server.

The dict's floors move bytes serialized beforehand, so its ratios are mostly the cost of
pickling; ``serialize/roundtrip/*`` shows that cost against plain ``pickle``.
"""

from __future__ import annotations

import copy
import os
import pickle
import uuid
from typing import Any, Callable

import numpy as np

from benchmarks.context import STORE_DIRS, Context
from benchmarks.harness import MB, Case, Target, Trial, looped
from proxystore.serialize import deserialize, serialize

STORES = ["local", "file-shm", "file-tmp", "redis"]
OPERATIONS = ["put", "get", "put+get"]
FULL_OBJECTS = {"array-1KB": 2**10, "array-1MB": MB, "array-100MB": 100 * MB, "dict": 0}
QUICK_OBJECTS = {"array-1KB": 2**10, "array-1MB": MB, "dict": 0}
SIGNING_KEY = b"proxystore-benchmark-signing-key"  # 32 bytes

FLOOR_NAMES = {
    "local": "numpy copy",
    "file-shm": "raw file write+read",
    "file-tmp": "raw file write+read",
    "redis": "redis-py set+get",
}


def make_object(kind: str, size: int) -> tuple[Any, memoryview]:
    """The object for ``kind`` and the bytes its floor moves."""
    if kind == "dict":
        obj = {
            f"key-{i}": (i, float(i) / 3, f"value {i}", [i, i + 1], {"nested": i % 7 == 0})
            for i in range(1000)
        }
        return obj, memoryview(serialize(obj))
    array = np.random.default_rng(0).random(size // 8)
    return array, array.data.cast("B")


def _floor_name(store: str, operation: str, obj: str) -> str:
    name = FLOOR_NAMES[store]
    if store == "local":
        return "deepcopy" if obj == "dict" else name
    if operation == "put":
        return name.replace("write+read", "write").replace("set+get", "set")
    if operation == "get":
        return name.replace("write+read", "read").replace("set+get", "get")
    return name


def _target(store: str, operation: str, obj: str) -> Target | None:
    if operation != "put+get":
        return None
    if obj == "array-100MB":
        if store in STORE_DIRS:
            return Target("<= 1.1x", bound=1.1)
        if store == "redis":
            return Target("< 1x (aim 0.5x)", bound=1.0, strict=True)
        if store == "local":
            return Target("no copy", on="check")
    if obj == "array-1KB" and store == "redis":
        return Target("<= 1.3x", bound=1.3)
    return None


def cases(ctx: Context) -> list[Case]:
    """Every store case of this run (100 MB only in full runs), then serialization alone."""
    objects = QUICK_OBJECTS if ctx.quick else FULL_OBJECTS
    found = []
    for store in STORES:
        for operation in OPERATIONS:
            for obj, size in objects.items():
                floor = _floor_name(store, operation, obj)
                found.append(
                    Case(
                        name=f"store/{store}/{operation}/{obj}",
                        prepare=_preparer(ctx, store, operation, obj, size),
                        floor_name=floor,
                        size=size or None,
                        target=_target(store, operation, obj),
                        needs_redis=store == "redis",
                    )
                )
    for obj, size in objects.items():
        found.append(
            Case(
                name=f"signing/file-shm/put+get/{obj}",
                prepare=_signing_preparer(ctx, obj, size),
                floor_name="same store unsigned",
                size=size or None,
            )
        )
    for obj, size in objects.items():
        found.append(
            Case(
                name=f"serialize/roundtrip/{obj}",
                prepare=_serialize_preparer(ctx, obj, size),
                floor_name="pickle.dumps+loads",
                size=size or None,
            )
        )
    return found


def _signing_preparer(ctx: Context, obj_kind: str, size: int) -> Callable[[], Trial]:
    """put+get on a FileStore under /dev/shm with ``signing_key`` against the same unsigned."""

    def prepare() -> Trial:
        signed = ctx.store("file-shm", purpose="signed", signing_key=SIGNING_KEY)
        plain = ctx.store("file-shm", purpose="unsigned")
        obj, _ = make_object(obj_kind, size)
        key = f"bench-{uuid.uuid4().hex}"

        def put_get(store: Any) -> None:
            store.set(obj, key=key)
            store.get(key)

        return Trial(
            run=looped(lambda: put_get(signed), ctx.min_time),
            floor=looped(lambda: put_get(plain), ctx.min_time),
            close=lambda: plain.evict(key),
        )

    return prepare


def _serialize_preparer(ctx: Context, obj_kind: str, size: int) -> Callable[[], Trial]:
    """proxystore's serialize+deserialize against plain pickle (protocol 5, in-band)."""

    def prepare() -> Trial:
        obj, _ = make_object(obj_kind, size)

        def ours() -> None:
            deserialize(serialize(obj))

        def plain() -> None:
            pickle.loads(pickle.dumps(obj, protocol=5))

        return Trial(run=looped(ours, ctx.min_time), floor=looped(plain, ctx.min_time))

    return prepare


def _preparer(
    ctx: Context, store_kind: str, operation: str, obj_kind: str, size: int
) -> Callable[[], Trial]:
    def prepare() -> Trial:
        return _prepare(ctx, store_kind, operation, obj_kind, size)

    return prepare


class _Floor:
    """The raw backend of a store kind: put, get and remove the same bytes."""

    def __init__(self, ctx: Context, store_kind: str, obj: Any, data: memoryview) -> None:
        self.kind = store_kind
        self.obj = obj
        self.data = data
        self.key = f"floor-{uuid.uuid4().hex}"
        if store_kind in STORE_DIRS:
            self.path = os.path.join(ctx.directory(store_kind), self.key)
        elif store_kind == "redis":
            self.client = ctx.redis_py()
            self.payload = bytes(data)  # redis-py sends bytes; made once, outside the timing

    def put(self) -> None:
        if self.kind == "local":
            return
        if self.kind == "redis":
            self.client.set(self.key, self.payload)
        else:
            with open(self.path, "wb") as out:
                out.write(self.data)

    def get(self) -> None:
        if self.kind == "redis":
            self.client.get(self.key)
        else:
            with open(self.path, "rb") as source:
                source.read()

    def copy(self) -> None:
        if isinstance(self.obj, np.ndarray):
            self.obj.copy()
        else:
            copy.deepcopy(self.obj)

    def remove(self) -> None:
        if self.kind == "redis":
            self.client.delete(self.key)
        elif self.kind in STORE_DIRS:
            os.unlink(self.path)


def _prepare(ctx: Context, store_kind: str, operation: str, obj_kind: str, size: int) -> Trial:
    store = ctx.store(store_kind, cache_size=0)
    obj, data = make_object(obj_kind, size)
    floor = _Floor(ctx, store_kind, obj, data)
    key = f"bench-{uuid.uuid4().hex}"
    store.set(obj, key=key)
    floor.put()

    def put() -> None:
        store.set(obj, key=key)

    def get() -> None:
        store.get(key)

    def put_get() -> None:
        store.set(obj, key=key)
        store.get(key)

    if store_kind == "local":
        floor_op = floor.copy
    elif operation == "put":
        floor_op = floor.put
    elif operation == "get":
        floor_op = floor.get
    else:

        def floor_op() -> None:
            floor.put()
            floor.get()

    operations = {"put": put, "get": get, "put+get": put_get}

    def close() -> None:
        store.evict(key)
        floor.remove()

    def no_copy() -> bool:
        store.set(obj, key=key)
        return store.get(key) is obj

    return Trial(
        run=looped(operations[operation], ctx.min_time),
        floor=looped(floor_op, ctx.min_time),
        close=close,
        check=no_copy if store_kind == "local" else None,
    )
