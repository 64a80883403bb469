"""Zero-copy pickling of CPU torch tensors (private; imported only once torch is in use).

:mod:`proxystore.serialize` registers :func:`reducers` for pickling only when ``torch`` is
already in ``sys.modules``, so ``import proxystore`` never imports torch; a stream that holds a
tensor names :func:`rebuild_tensor`, so loading it imports this module, and torch, on demand.

A plain CPU tensor (exact ``torch.Tensor``, strided, not quantized, no conjugate or negative
bit, no names, no Python attributes) is pickled as its storage's bytes, handed to pickle 5 as
one out-of-band buffer, plus its dtype, storage offset, size, stride and ``requires_grad``:
torch's own pickling keeps the same fields (the whole storage, the view's geometry), so a
non-contiguous view comes back with the same strides and offset. Tensors of one storage in one
object (tied weights in a state dict) come back sharing one storage. Everything else (other
devices, sparse, quantized, meta and nested tensors, subclasses) keeps torch's own pickling;
``nn.Parameter`` pickles its data, a plain tensor, through here and comes back a Parameter.

On the way back the tensor is built on the buffer without a copy. Torch has no read-only
tensors: a tensor over read-only memory that its user writes crashes the process, and
``torch.frombuffer`` warns on such memory. So a read-only buffer never reaches torch: a buffer
of a read-only file mapping (a zero-copy FileStore or the host tier with ``readonly=True``) is
replaced by a private copy-on-write mapping of the same file pages (still no copy; writes stay
private to this process); any other read-only buffer is copied once.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import pickle
from collections.abc import Callable
from typing import Any

import torch

try:
    import numpy as _numpy
except ImportError:  # pragma: no cover - torch installed without numpy
    _numpy = None  # type: ignore[assignment]

__all__ = ["rebuild_tensor", "reducers", "storage_from_buffer"]

_FLAT = torch.strided


@functools.lru_cache(maxsize=64)
def _export_type(length: int) -> type[Any]:
    # A Python subclass of a ctypes array: it may carry an attribute (the storage it shows).
    return type(f"_StorageBytes{length}", (ctypes.c_char * length,), {})


def _storage_bytes(storage: torch.UntypedStorage) -> Any:
    """A writable buffer over ``storage``'s bytes that keeps the storage alive (no copy)."""
    length = storage.nbytes()
    export = _export_type(length).from_address(storage.data_ptr())
    export.storage = storage
    return export


class _Storage:
    """One storage in one pickle stream: pickled once, memoized for every tensor on it."""

    __slots__ = ("storage",)

    def __init__(self, storage: torch.UntypedStorage) -> None:
        self.storage = storage

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if self.storage.nbytes() == 0:
            return storage_from_buffer, (b"",)
        return storage_from_buffer, (pickle.PickleBuffer(_storage_bytes(self.storage)),)


def _plain(tensor: torch.Tensor) -> bool:
    return (
        tensor.device.type == "cpu"
        and tensor.layout == _FLAT
        and not tensor.is_quantized
        and not tensor.is_nested
        and not tensor.is_conj()
        and not tensor.is_neg()
        and not any(getattr(tensor, "names", ()))  # named tensors (older torch)
        and not torch._utils._get_obj_state(tensor)  # type: ignore[no-untyped-call]
    )


class _Reducer:
    """Reduces the tensors of one pickling call (shared storages pickled once)."""

    __slots__ = ("storages",)

    def __init__(self) -> None:
        self.storages: dict[tuple[int, int], _Storage] = {}

    def __call__(self, tensor: torch.Tensor) -> Any:
        try:
            plain = _plain(tensor)
            if plain:
                storage = tensor.untyped_storage()
        except Exception:  # a wrapper tensor without a real storage (functorch and the like)
            plain = False
        if not plain:
            return tensor.__reduce_ex__(5)  # type: ignore[no-untyped-call]
        ident = (storage.data_ptr(), storage.nbytes())
        holder = self.storages.get(ident) if ident[0] else None
        if holder is None:
            holder = _Storage(storage)
            if ident[0]:
                self.storages[ident] = holder
        dtype = str(tensor.dtype).rpartition(".")[2]
        return rebuild_tensor, (
            holder,
            dtype,
            tensor.storage_offset(),
            tuple(tensor.size()),
            tuple(tensor.stride()),
            tensor.requires_grad,
        )


def reducers() -> dict[type, Callable[[Any], Any]]:
    """The dispatch-table entries for one pickling call (a fresh state each call)."""
    return {torch.Tensor: _Reducer()}


class _PrivateMap(mmap.mmap):
    """A private (copy-on-write) mapping of a file, keeping the read-only view it aliases."""

    keep: Any


def _address(view: memoryview) -> int | None:
    """The address of a (read-only) buffer: ctypes only takes writable ones."""
    if _numpy is None:  # pragma: no cover - torch without numpy: read-only buffers are copied
        return None
    return int(_numpy.frombuffer(view, dtype=_numpy.uint8).ctypes.data)


def _file_region(address: int) -> tuple[str, int, int, int] | None:
    """The file mapped at ``address`` in this process: path, file offset, device, inode."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if not start <= address < end:
                    continue
                if len(fields) < 6 or not fields[5].startswith("/"):
                    return None
                major, minor = (int(x, 16) for x in fields[3].split(":"))
                path = fields[5].rstrip("\n")
                offset = int(fields[2], 16) + address - start
                return path, offset, os.makedev(major, minor), int(fields[4])
    except (OSError, ValueError):
        return None
    return None


def _private_alias(view: memoryview) -> memoryview | None:
    """A writable copy-on-write view of the same file pages as the read-only ``view``.

    ``None`` unless ``view`` is memory of a file mapping (found in ``/proc/self/maps``) whose
    file is still the one mapped (same device and inode). The alias keeps ``view`` alive: a
    store holds its read lock on the file for as long as the mapping it gave is alive, so the
    pages are not reused under the tensor.
    """
    address = _address(view)
    region = _file_region(address) if address is not None else None
    if address is None or region is None:
        return None
    path, offset, device, inode = region
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (device, inode) or info.st_size < offset + view.nbytes:
            return None
        start = offset % mmap.ALLOCATIONGRANULARITY
        alias = _PrivateMap(
            fd,
            start + view.nbytes,
            flags=mmap.MAP_PRIVATE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=offset - start,
        )
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    alias.keep = view
    return memoryview(alias)[start : start + view.nbytes]


def storage_from_buffer(buffer: Any) -> torch.UntypedStorage:
    """Rebuild an untyped storage on ``buffer`` (no copy unless it is read-only, see above)."""
    view = memoryview(buffer)
    if view.nbytes == 0:
        return torch.empty(0, dtype=torch.uint8).untyped_storage()
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    if view.readonly:
        alias = _private_alias(view)
        view = alias if alias is not None else memoryview(bytearray(view))
    return torch.frombuffer(view, dtype=torch.uint8).untyped_storage()


def rebuild_tensor(
    storage: torch.UntypedStorage,
    dtype: str,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
) -> torch.Tensor:
    """Rebuild a tensor pickled by :func:`reducers` on its storage."""
    kind = getattr(torch, dtype)
    if not isinstance(kind, torch.dtype):
        raise pickle.UnpicklingError(f"not a torch dtype: {dtype!r}")
    tensor = torch.empty((0,), dtype=kind).set_(storage, offset, size, stride)
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor
