"""Serialization: pass-through of bytes and str, numpy without copies, cloudpickle fallback."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxystore.exceptions import ProxyStoreError
from proxystore.factory import SimpleFactory
from proxystore.proxy import Proxy, extract, is_resolved
from proxystore.serialize import (
    SerializationError,
    deserialize,
    pickle_once,
    serialize,
    serialize_parts,
    serialized_size,
)


def module_function(x: int) -> int:
    return x + 1


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


# -- pass-through -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"abc", b"\x00\xff" * 1000, bytes(range(256))])
def test_bytes_pass_through(data: bytes) -> None:
    out = serialize(data)
    assert out == b"\x01" + data  # one tag byte, no pickling
    got = deserialize(out)
    assert got == data and type(got) is bytes


@pytest.mark.parametrize(
    "text", ["", "ascii", "é ✓ 漢字 🙂", "\udcff lone surrogate", "x" * 100_000]
)
def test_str_pass_through(text: str) -> None:
    out = serialize(text)
    assert out[:1] == b"\x02"
    assert len(out) <= 1 + 4 * len(text)
    got = deserialize(out)
    assert got == text and type(got) is str


def test_large_bytes_are_not_copied_into_parts() -> None:
    data = b"x" * 1_000_000
    parts = serialize_parts(data)
    assert any(part is data for part in parts)


@pytest.mark.parametrize(
    "obj",
    [
        {"a": [1, 2.5, None], "b": ("x", b"y"), 3: {4: 5}},
        [1, "two", 3.0, None, True],
        (1, (2, (3,))),
        {1, 2, 3},
        12345678901234567890,
        3.25,
        None,
        True,
        Point(1, 2),
        bytearray(b"mutable"),
    ],
    ids=lambda o: type(o).__name__,
)
def test_roundtrip_python_objects(obj: Any) -> None:
    got = deserialize(serialize(obj))
    assert got == obj
    assert type(got) is type(obj)


# -- numpy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(1000, dtype=np.float64).reshape(10, 100),
        np.arange(24, dtype=np.int8).reshape(2, 3, 4),
        np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
        np.array([True, False]),
        np.zeros((0, 5), dtype=np.uint16),
        np.array(3.5),  # 0-d
        np.array(["a", "bcd"]),
        np.array([(1, 2.0)], dtype=[("i", "<i4"), ("f", "<f8")]),
        np.arange(10, dtype=">i4"),  # big-endian
    ],
    ids=lambda a: f"{a.dtype}-{a.shape}",
)
def test_numpy_dtype_and_shape(array: np.ndarray) -> None:
    got = deserialize(serialize(array))
    assert isinstance(got, np.ndarray)
    assert got.dtype == array.dtype
    assert got.shape == array.shape
    assert np.array_equal(got, array)


def test_numpy_fortran_order_and_strides() -> None:
    array = np.asfortranarray(np.random.default_rng(0).random((30, 7)))
    got = deserialize(serialize(array))
    assert got.flags.f_contiguous and not got.flags.c_contiguous
    assert got.strides == array.strides
    assert np.array_equal(got, array)


def test_numpy_non_contiguous() -> None:
    base = np.arange(600, dtype=np.float64).reshape(20, 30)
    for view in (base[::2, ::3], base.T[::-1], base[:, 5]):
        assert not (view.flags.c_contiguous and view.flags.f_contiguous)
        got = deserialize(serialize(view))
        assert np.array_equal(got, view)
        assert got.dtype == view.dtype and got.shape == view.shape


def test_object_holding_several_arrays() -> None:
    rng = np.random.default_rng(3)
    obj = {
        "x": rng.random((100, 10)),
        "y": np.arange(7, dtype=np.int32),
        "nested": [np.ones(3, dtype=np.float32), {"z": np.asfortranarray(np.eye(4))}],
        "text": "label",
    }
    parts = serialize_parts(obj)
    assert len(parts) > 4  # arrays travel as separate buffers, not inside the pickle stream
    got = deserialize(serialize(obj))
    assert got.keys() == obj.keys()
    assert np.array_equal(got["x"], obj["x"])
    assert np.array_equal(got["y"], obj["y"]) and got["y"].dtype == np.int32
    assert np.array_equal(got["nested"][0], obj["nested"][0])
    assert got["nested"][1]["z"].flags.f_contiguous
    assert got["text"] == "label"


def test_large_array_is_not_copied_into_parts() -> None:
    array = np.random.default_rng(5).random(200_000)
    parts = serialize_parts(array)
    assert any(
        isinstance(part, memoryview) and np.shares_memory(np.asarray(part), array) for part in parts
    )


def test_serialize_parts_joined_equals_serialize() -> None:
    for obj in (
        b"bytes",
        "text",
        {"a": 1},
        np.arange(1000),
        [np.ones(5), np.zeros((3, 3), order="F"), np.arange(10)[::2]],
        lambda x: x,
    ):
        parts = serialize_parts(obj)
        joined = b"".join(parts)
        assert serialized_size(parts) == len(joined)
        if callable(obj):  # cloudpickle output is not byte-stable across calls
            assert deserialize(joined)(3) == 3
        else:
            assert joined == serialize(obj)


def test_buffers_are_64_byte_aligned() -> None:
    array = np.arange(1001, dtype=np.float64)
    data = bytearray(serialize(array))
    got = deserialize(data)
    base = np.frombuffer(data, dtype=np.uint8).ctypes.data
    assert (got.ctypes.data - base) % 64 == 0


# -- zero copy ----------------------------------------------------------------------------------


def test_deserialize_bytearray_shares_memory() -> None:
    array = np.arange(10_000, dtype=np.float64)
    buffer = bytearray(serialize(array))
    got = deserialize(buffer)
    assert np.shares_memory(got, np.frombuffer(buffer, dtype=np.uint8))
    assert got.flags.writeable
    # Writing into the buffer changes the array: they are the same memory.
    offset = (got.ctypes.data - np.frombuffer(buffer, dtype=np.uint8).ctypes.data) // 8
    np.frombuffer(buffer, dtype=np.float64, count=1, offset=offset * 8)[0] = -1.0
    assert got[0] == -1.0


def test_deserialize_writable_memoryview_shares_memory() -> None:
    array = np.arange(5_000, dtype=np.int64)
    buffer = bytearray(serialize(array))
    got = deserialize(memoryview(buffer))
    got[-1] = 42
    assert deserialize(bytes(buffer))[-1] == 42  # the write went into the buffer


def test_deserialize_bytes_gives_writable_private_array() -> None:
    array = np.arange(5_000, dtype=np.int64)
    data = serialize(array)
    got = deserialize(data)
    assert got.flags.writeable
    got[0] = 99  # must not raise, and must not touch the immutable input
    assert deserialize(data)[0] == 0


# -- functions, lambdas, closures ---------------------------------------------------------------


def test_lambdas_and_closures_use_cloudpickle() -> None:
    offset = 10
    table = np.arange(5)

    def closure(i: int) -> int:
        return int(table[i]) + offset

    for fn in (lambda x: x * 2 + offset, closure):
        data = serialize(fn)
        assert data[:1] == b"\x04"  # the cloudpickle tag
        assert deserialize(data)(2) == fn(2)


def test_module_functions_use_plain_pickle() -> None:
    data = serialize(module_function)
    assert data[:1] == b"\x03"
    assert deserialize(data) is module_function


def test_local_class_roundtrip() -> None:
    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

    got = deserialize(serialize(Local(3)))
    assert got.v == 3
    assert deserialize(serialize(Local))(4).v == 4


MAIN_SCRIPT = textwrap.dedent(
    """
    import functools, sys
    from concurrent.futures import Future
    from proxystore.serialize import pickle_once, serialize

    def double(x):
        return 2 * x

    class Point:
        def __init__(self, x):
            self.x = x

        def scaled(self, k):
            return self.x * k

    scale = 3
    objects = {
        "function": double,
        "lambda": lambda x: x * scale,
        "class": Point,
        "instance": Point(7),
        "function_in_list": [double, 1],
        "instance_in_dict": {"p": Point(5)},
        "partial": functools.partial(double, 21),
        "bound_method": Point(4).scaled,
    }
    out, how = sys.argv[1], sys.argv[2]
    for name, obj in objects.items():
        if how == "serialize":
            data = serialize(obj)
        else:  # the probing pickler the integrations measure arguments with
            data = b"".join(pickle_once(obj, refuse=(Future,)).parts())
        with open(f"{out}/{name}.bin", "wb") as f:
            f.write(data)
    """
)

LOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    from proxystore.serialize import deserialize

    def load(name):
        with open(f"{sys.argv[1]}/{name}.bin", "rb") as f:
            return deserialize(f.read())

    assert load("function")(5) == 10
    assert load("lambda")(5) == 15
    assert load("class")(1).x == 1
    assert load("instance").x == 7
    assert load("function_in_list")[0](4) == 8
    assert load("instance_in_dict")["p"].x == 5
    assert load("partial")() == 42
    assert load("bound_method")(10) == 40
    print("loaded")
    """
)


@pytest.mark.parametrize("how", ["serialize", "pickle_once"])
def test_main_definitions_load_in_another_process(tmp_path: Path, how: str) -> None:
    """Objects defined in a script's ``__main__`` (or referring to such definitions) are
    shipped by value, so a fresh process that never ran the script can load them."""
    script = tmp_path / "script.py"
    script.write_text(MAIN_SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path), how], check=True, timeout=60)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded"


def test_data_mentioning_main_still_roundtrips() -> None:
    obj = {"__name__": "__main__", "module": b"__main__", "array": np.arange(3)}
    got = deserialize(serialize(obj))
    assert got["__name__"] == "__main__" and got["module"] == b"__main__"
    assert np.array_equal(got["array"], obj["array"])


def test_probing_pickle_tells_main_definitions_from_data_mentioning_main(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probing pickler looks at what it pickles, not at the bytes: data that merely
    mentions ``__main__`` stays a plain pickle (shippable as is), definitions do not."""
    data = {"__name__": "__main__", "module": b"__main__", "values": list(range(50_000))}
    pickled = pickle_once(data, refuse=(Future,))
    assert pickled is not None and pickled.plain
    assert len(pickled.stream) > 64 * 1024  # the pickler wrote it in several frames
    assert pickle.loads(pickled.stream) == data
    assert deserialize(b"".join(pickled.parts())) == data
    # Definitions that plain pickle accepts by reference (they are found in this __main__).
    main = sys.modules["__main__"]
    point = type("Point", (), {"__module__": "__main__"})

    def twice(x: int) -> int:
        return 2 * x

    twice.__module__, twice.__qualname__ = "__main__", "twice"
    monkeypatch.setattr(main, "Point", point, raising=False)
    monkeypatch.setattr(main, "twice", twice, raising=False)
    for obj in (point, [1, point()], {"k": twice}, functools.partial(twice, 2)):
        pickle.dumps(obj)  # plain pickle takes it, by reference
        found = pickle_once(obj, refuse=(Future,))
        assert found is not None and not found.plain, obj
        assert deserialize(b"".join(found.parts())) is not None


# -- proxies inside serialized objects ---------------------------------------------------------


@pytest.mark.parametrize("value", [b"raw", "text", [1, 2], np.arange(3)], ids=repr)
@pytest.mark.parametrize("where", ["top", "list", "dict"])
def test_serializing_a_proxy_ships_its_factory_without_resolving(value: Any, where: str) -> None:
    p = Proxy(SimpleFactory(value))
    obj: Any = {"top": p, "list": [p, 1], "dict": {"k": p}}[where]
    data = serialize(obj)
    assert not is_resolved(p)  # serializing a reference must not fetch what it refers to
    got = deserialize(data)
    inner = {"top": lambda g: g, "list": lambda g: g[0], "dict": lambda g: g["k"]}[where](got)
    assert type(inner) is Proxy
    assert not is_resolved(inner)
    resolved = extract(inner)
    assert type(resolved) is type(value)
    assert np.array_equal(resolved, value) if isinstance(value, np.ndarray) else resolved == value


# -- errors -------------------------------------------------------------------------------------


def test_serialization_error_is_a_proxystore_error_and_value_error() -> None:
    assert issubclass(SerializationError, ProxyStoreError)
    assert issubclass(SerializationError, ValueError)


@pytest.mark.parametrize("bad", ["a string", 123, None, [1, 2], np.arange(3)], ids=repr)
def test_deserialize_non_bytes(bad: Any) -> None:
    with pytest.raises(SerializationError, match="expects bytes"):
        deserialize(bad)


@pytest.mark.parametrize("empty", [b"", bytearray(), memoryview(b"")], ids=type)
def test_deserialize_empty(empty: Any) -> None:
    with pytest.raises(SerializationError, match="empty"):
        deserialize(empty)


@pytest.mark.parametrize("tag", [0x00, 0x05, 0x80, 0xFF])
def test_deserialize_unknown_tag(tag: int) -> None:
    with pytest.raises(SerializationError, match="unknown serialization tag"):
        deserialize(bytes([tag]) + b"payload")


def test_deserialize_raw_pickle_is_rejected() -> None:
    # Data written with serialize=False (or by another program) is not silently unpickled.
    with pytest.raises(SerializationError, match="tag"):
        deserialize(pickle.dumps({"a": 1}))


@pytest.mark.parametrize(
    "obj",
    [{"a": list(range(100))}, np.arange(10_000), [np.ones(100), np.zeros(100)]],
    ids=["dict", "array", "arrays"],
)
def test_deserialize_truncated(obj: Any) -> None:
    data = serialize(obj)
    for cut in (1, 5, len(data) // 2, len(data) - 1):
        with pytest.raises(SerializationError):
            deserialize(data[:cut])


def test_deserialize_corrupt_pickle_stream() -> None:
    data = bytearray(serialize({"key": "value" * 10}))
    data[-12:] = b"\xff" * 12
    with pytest.raises(SerializationError, match="corrupt"):
        deserialize(bytes(data))


def test_deserialize_invalid_utf8_str() -> None:
    with pytest.raises(SerializationError, match="str"):
        deserialize(b"\x02\xff\xfe")


@pytest.mark.parametrize(
    "obj",
    [threading.Lock(), {"nested": threading.Lock()}, (x for x in range(3))],
    ids=["lock", "nested-lock", "generator"],
)
def test_unpicklable_object(obj: Any) -> None:
    with pytest.raises(SerializationError, match="cannot serialize") as info:
        serialize(obj)
    assert info.value.__cause__ is not None
    with pytest.raises(SerializationError):
        serialize_parts(obj)


def test_module_function_in_partial_roundtrips() -> None:
    got = deserialize(serialize(functools.partial(module_function, 1)))
    assert got() == 2


def test_non_contiguous_memoryview_is_a_serialization_error() -> None:
    data = memoryview(bytearray(serialize({"a": 1}) * 2))[::2]
    with pytest.raises(SerializationError, match="contiguous"):
        deserialize(data)


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_storing_a_pickled_object_stores_the_object_from_its_pieces(
    kind: str, store_factory: Any
) -> None:
    """What the adapters do with an argument they pickled to measure: no pickling again and
    no joined copy of its buffers (a DataFrame of 100 MB cost a 100 MB join before)."""
    from proxystore.store.codec import Codec

    array = np.arange(200_000, dtype=np.float64)
    obj = {"array": array, "text": "kept"}
    pickled = pickle_once(obj)
    assert pickled is not None and pickled.buffers
    parts = Codec().encode(pickled, serialize=True, where="test")
    raw = [part for part in parts if isinstance(part, memoryview)]
    assert [np.frombuffer(r, np.uint8).ctypes.data for r in raw] == [array.ctypes.data]
    by_reference = Codec(by_reference=True).encode(pickled, serialize=True, where="test")
    assert Codec(by_reference=True).decode(by_reference[0], deserialize=True)["text"] == "kept"
    store = store_factory(kind)
    got = store.get(store.set(pickled))
    assert got["text"] == "kept" and np.array_equal(got["array"], array)
