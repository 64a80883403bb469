"""torch tensors (and pandas/Arrow objects) through the stores: exact round trips, zero-copy.

A CPU tensor stored in a zero-copy FileStore (or the host tier) comes back as a tensor over
the file's mapped pages; through Redis, over one fresh buffer. Where a tensor's pages live is
read from ``/proc/self/maps``; private memory from ``/proc/self/smaps_rollup`` (not RSS,
which counts mapped file pages).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxystore.serialize import deserialize, serialize, serialize_parts
from proxystore.store import Store, init_store, unregister_store
from proxystore.store.file import is_memory_file_system

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/dev/shm") or not is_memory_file_system("/dev/shm"),
    reason="needs /dev/shm on tmpfs (Linux)",
)

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.complex64,
    torch.complex128,
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
]


def layouts(dtype: Any) -> dict[str, Any]:
    """A tensor of ``dtype`` in the layouts a user hands over (views keep their storage)."""
    base = (torch.arange(4 * 6 * 5) % 7).to(dtype).reshape(4, 6, 5)
    return {
        "contiguous": base.clone(),
        "transposed": base.transpose(0, 2),
        "sliced": base[1:, ::2, 2:],  # storage offset and strides
        "0-d": base[1, 2, 3],
        "empty": base[:0],
        "empty-storage": torch.empty((0, 3), dtype=dtype),
    }


def assert_same(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.stride() == want.stride() and got.storage_offset() == want.storage_offset()
    assert got.requires_grad == want.requires_grad
    assert torch.equal(got.detach(), want.detach())


def region_of(address: int) -> str | None:
    """The file (or ``None``: anonymous memory) mapped at ``address`` in this process."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                path = fields[5].strip() if len(fields) == 6 else ""
                return path if path.startswith("/") else None  # not [heap], [anon:...]
    raise AssertionError(f"address {address:#x} is not mapped")


@pytest.fixture
def shm_dir() -> Iterator[str]:
    path = f"/dev/shm/proxystore-test-tensor-{uuid.uuid4().hex[:8]}"
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


@pytest.fixture
def stores(
    shm_dir: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """Make stores by kind; each is cleaned up and unregistered afterwards."""
    made: list[Store] = []

    def make(kind: str) -> Store:
        name = f"tensor-{kind}-{uuid.uuid4().hex[:8]}"
        if kind == "local":
            store = init_store("local", name)
        elif kind == "file-shm":
            store = init_store("file", name, store_dir=shm_dir)
        elif kind == "file-shm-readonly":
            store = init_store("file", name, store_dir=shm_dir, readonly=True)
        elif kind == "file-disk":
            store = init_store("file", name, store_dir=str(tmp_path / "disk"), zero_copy=False)
        elif kind in ("redis", "redis-host-tier", "redis-host-tier-readonly"):
            host, port = request.getfixturevalue("redis_address")
            extra: dict[str, Any] = {}
            if kind != "redis":
                extra["host_cache"] = f"{shm_dir}-tier"
                extra["readonly"] = kind.endswith("readonly")
            store = init_store("redis", name, hostname=host, port=port, **extra)
        else:
            raise AssertionError(kind)
        made.append(store)
        return store

    yield {"make": make}
    for store in made:
        store.cleanup()
        unregister_store(store.name)
    subprocess.run(["rm", "-rf", f"{shm_dir}-tier"], check=False)


KINDS = [
    "local",
    "file-shm",
    "file-shm-readonly",
    "file-disk",
    "redis",
    "redis-host-tier",
    "redis-host-tier-readonly",
]


def test_import_proxystore_imports_no_data_library() -> None:
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import proxystore, proxystore.serialize as s, proxystore.store
        from proxystore.store import init_store
        s.deserialize(s.serialize({"a": np.ones(10), "b": [1, "x"]}))
        for name in ("torch", "pandas", "pyarrow", "scipy", "polars", "xarray"):
            assert name not in sys.modules, name
        import torch
        assert s.deserialize(s.serialize(torch.ones(3))).sum() == 3
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_tensor_loaded_without_torch_says_what_is_missing(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "torch.py").write_text("raise ModuleNotFoundError('hidden', name='torch')\n")
    code = textwrap.dedent(
        """
        import sys
        from proxystore.serialize import SerializationError, deserialize
        try:
            deserialize(sys.stdin.buffer.read())
        except SerializationError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=serialize(torch.ones(3)),
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), *sys.path])},
        check=True,
    )
    assert b"needs module 'torch'" in done.stdout, done


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).rpartition(".")[2])
def test_serialize_round_trip_every_dtype_and_layout(dtype: Any) -> None:
    for tensor in layouts(dtype).values():
        for data in (serialize(tensor), bytearray(serialize(tensor))):
            assert_same(deserialize(data), tensor)
        got = deserialize(serialize(tensor), copy_readonly=False)  # read-only input: a copy
        assert_same(got, tensor)
        got.zero_()  # writable: no crash, no warning


def test_large_tensor_is_one_out_of_band_buffer_not_copied() -> None:
    tensor = torch.ones(1_000_000)
    parts = serialize_parts(tensor)
    raw = [p for p in parts if isinstance(p, memoryview)]
    assert len(raw) == 1 and raw[0].nbytes == tensor.nbytes
    address = np.frombuffer(raw[0], np.uint8).ctypes.data
    assert address == tensor.data_ptr()  # the tensor's own memory, not a copy


def test_tensors_stay_out_of_band_by_value_and_when_probing() -> None:
    from proxystore.serialize import pickle_once

    tensor = torch.ones(1_000_000)
    by_value = serialize_parts([lambda: 1, tensor])  # a lambda: pickled by cloudpickle
    raw = [p for p in by_value if isinstance(p, memoryview)]
    assert [np.frombuffer(r, np.uint8).ctypes.data for r in raw] == [tensor.data_ptr()]
    assert torch.equal(deserialize(b"".join(by_value))[1], tensor)
    once = pickle_once({"x": tensor}, refuse=(Path,))  # the probing pickler
    assert once is not None and len(once.buffers) == 1 and not once.plain
    assert torch.equal(deserialize(b"".join(once.parts()))["x"], tensor)


def test_requires_grad_parameter_and_state_dict() -> None:
    weight = torch.randn(20, 10, requires_grad=True)
    non_leaf = weight * 2  # torch's pickling gives a leaf that requires grad: so do we
    for tensor in (weight, non_leaf):
        got = deserialize(serialize(tensor))
        assert got.requires_grad and got.is_leaf and torch.equal(got, tensor.detach())
    parameter = torch.nn.Parameter(torch.randn(4, 4))
    got = deserialize(serialize(parameter))
    assert type(got) is torch.nn.Parameter and got.requires_grad
    assert torch.equal(got.detach(), parameter.detach())
    state = torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.BatchNorm1d(5)).state_dict()
    state["tied"] = state["0.weight"]  # two names, one storage
    got = deserialize(serialize(state))
    assert type(got) is collections.OrderedDict and list(got) == list(state)
    for key, value in state.items():
        assert_same(got[key], value)
    assert got["tied"].data_ptr() == got["0.weight"].data_ptr()  # still one storage


def test_other_tensors_keep_torchs_own_pickling() -> None:
    sparse = torch.sparse_coo_tensor([[0, 1], [1, 0]], [1.0, 2.0], (2, 2), check_invariants=True)
    assert torch.equal(deserialize(serialize(sparse)).to_dense(), sparse.to_dense())
    assert deserialize(serialize(torch.empty(3, 4, device="meta"))).is_meta
    conj = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64).conj()
    got = deserialize(serialize(conj))
    assert got.is_conj() and torch.equal(got, conj)

    class Tagged(torch.Tensor):
        pass

    tagged = torch.ones(3).as_subclass(Tagged)
    tagged.note = "kept"  # type: ignore[attr-defined]
    got = deserialize(serialize(tagged))  # a local class: by value, through cloudpickle
    assert type(got).__name__ == "Tagged" and got.note == "kept" and torch.equal(got, tagged)


@pytest.mark.parametrize("kind", KINDS)
def test_store_round_trips(kind: str, stores: dict[str, Any]) -> None:
    store = stores["make"](kind)
    for dtype in DTYPES:
        for tensor in layouts(dtype).values():
            got = store.get(store.set(tensor))
            assert_same(got, tensor)
    grad = torch.randn(300, 7, requires_grad=True)
    assert_same(store.get(store.set(grad)), grad)
    state = torch.nn.Linear(64, 32).state_dict()
    got = store.get(store.set(state))
    assert type(got) is collections.OrderedDict
    for key, value in state.items():
        assert_same(got[key], value)
    parameter = torch.nn.Parameter(torch.randn(100, 100))
    got = store.get(store.set(parameter))
    assert type(got) is torch.nn.Parameter and torch.equal(got.detach(), parameter.detach())


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("file-shm", "store"),
        ("file-shm-readonly", "store"),
        ("redis-host-tier", "tier"),
        ("redis-host-tier-readonly", "tier"),
        ("redis", "anonymous"),
    ],
)
def test_tensor_resolves_over_the_mapped_pages(
    kind: str, where: str, stores: dict[str, Any], shm_dir: str
) -> None:
    """Zero-copy where there is a file mapping; one fresh buffer through Redis."""
    store = stores["make"](kind)
    original = torch.arange(1_000_000, dtype=torch.float32)
    parameter = torch.nn.Parameter(torch.ones(500_000))
    key = store.set({"w": original, "b": original[::2], "p": parameter})
    got = store.get(key)
    assert type(got["p"]) is torch.nn.Parameter and torch.equal(got["p"].detach(), parameter)
    for tensor in (got["w"], got["p"]):
        path = region_of(tensor.data_ptr())
        if where == "anonymous":
            assert path is None
        else:
            directory = shm_dir if where == "store" else f"{shm_dir}-tier"
            assert path is not None and path.startswith(directory + "/"), path
    assert got["b"].data_ptr() == got["w"].data_ptr()  # one storage, as given
    assert_same(got["b"], original[::2])


@pytest.mark.parametrize("kind", ["file-shm", "file-shm-readonly", "redis-host-tier-readonly"])
def test_writing_a_resolved_tensor_is_private(
    kind: str, stores: dict[str, Any], shm_dir: str
) -> None:
    """Copy-on-write, also where the store is read-only (torch has no read-only tensors: over
    read-only pages a write would crash the process); nothing warns, and a read-only store does
    not share a tensor between gets as it shares read-only arrays."""
    store = stores["make"](kind)
    original = torch.arange(100_000, dtype=torch.float64)
    key = store.set(original)
    first = store.get(key)
    first[:10] = -1  # neither crashes nor reaches the file
    second = store.get(key)
    assert second is not first and torch.equal(second, original)  # each get its own pages
    assert not store.is_cached(key)
    if kind.endswith("readonly"):
        array_key = store.set(np.arange(1000))
        assert store.get(array_key) is store.get(array_key)  # read-only arrays still shared
    directory = Path(shm_dir if kind.startswith("file") else f"{shm_dir}-tier")
    files = [path.read_bytes() for path in directory.rglob("*") if path.is_file()]
    assert sum(original.numpy().tobytes() in data for data in files) == 1  # unchanged


def test_pandas_and_arrow_keep_their_zero_copy_paths(stores: dict[str, Any], shm_dir: str) -> None:
    pandas = pytest.importorskip("pandas")
    pyarrow = pytest.importorskip("pyarrow")
    store = stores["make"]("file-shm")
    frame = pandas.DataFrame({"a": np.arange(500_000, dtype=np.float64), "b": np.ones(500_000)})
    got = store.get(store.set(frame))
    assert got.equals(frame)
    assert (region_of(got["a"].to_numpy().ctypes.data) or "").startswith(shm_dir + "/")
    table = pyarrow.table({"x": np.arange(500_000, dtype=np.int64)})
    got = store.get(store.set(table))
    assert got.equals(table)
    address = got.column("x").chunks[0].buffers()[1].address
    assert (region_of(address) or "").startswith(shm_dir + "/")


CHILD = textwrap.dedent(
    """
    import sys
    import torch
    from proxystore.store import init_store

    def anonymous_kib():
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1])
        raise AssertionError("no Anonymous line")

    store = init_store("file", "child", store_dir=sys.argv[1])
    key, copy = sys.argv[2], sys.argv[3] == "copy"
    torch.ones(10).sum()  # torch's own first-use allocations before measuring
    before = anonymous_kib()
    tensor = store.get(key)
    if copy:
        tensor = tensor.clone()  # the control: what a private copy looks like
    total = float(tensor.sum())
    after = anonymous_kib()
    print(total, (after - before) * 1024)
    """
)


def test_200mb_tensor_resolved_in_another_process_without_a_private_copy(shm_dir: str) -> None:
    name = f"tensor-big-{uuid.uuid4().hex[:8]}"
    store = init_store("file", name, store_dir=shm_dir)
    try:
        tensor = torch.ones(200 * 2**20 // 4, dtype=torch.float32)
        key = store.set(tensor)
        del tensor
        ctx = multiprocessing.get_context("spawn")
        assert ctx  # the child is a fresh interpreter, as a spawn worker is
        growth = {}
        for mode in ("zero-copy", "copy"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, shm_dir, key, mode],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout.split()
            assert float(out[0]) == 200 * 2**20 // 4
            growth[mode] = int(out[1])
        assert growth["zero-copy"] < 10 * 2**20, growth
        assert growth["copy"] > 150 * 2**20, growth  # the measure sees a copy when there is one
    finally:
        store.cleanup()
        unregister_store(name)
