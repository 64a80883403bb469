r"""Serialization of objects to bytes and back.

Layout of serialized data (the first byte names the format)::

    b"\x01" + data                       bytes, passed through
    b"\x02" + utf-8 text                 str
    b"\x03" + frame                      pickle protocol 5 with out-of-band buffers
    b"\x04" + frame                      the same, pickled by cloudpickle (lambdas, closures)

    frame: uint8[3] padding, uint32 buffer count n, uint64 pickle length,
           uint64[n] buffer lengths, the pickle stream, then each buffer starting
           at a 64-byte aligned offset (from the start of the data)

Large numpy arrays (anything exposing the buffer protocol to pickle 5) are not copied into the
pickle stream: they are laid out after it, aligned, and on the way back the arrays are rebuilt on
memory views of the input. Writable input (``bytearray``, a writable ``memoryview`` or ``mmap``)
gives arrays that share its memory without any copy; read-only input (``bytes``) gives arrays
backed by one private copy of each buffer, so they stay writable like the original.

CPU torch tensors get the same treatment although torch's own pickling copies them through
``torch.save``: a private codec (``proxystore._torch_codec``) hands each tensor's storage to
pickle 5 as one out-of-band buffer, and rebuilds the tensor on the input's memory. It is used
only when ``torch`` is already imported as an object is pickled (``import proxystore`` never
imports torch), and loaded on demand by a stream that holds a tensor. Torch has no read-only
tensors, so read-only input never reaches one: a read-only file mapping is aliased by a private
copy-on-write one (still no copy), other read-only input is copied once.

:func:`serialize_parts` returns the pieces without joining them, so a backend that can write a
list of buffers (``os.writev``, a Redis pipeline) never makes the joined copy at all.
"""

from __future__ import annotations

import copyreg
import importlib
import pickle
import struct
import sys
from collections import ChainMap
from collections.abc import Callable, Sequence
from types import FunctionType, ModuleType
from typing import Any, Union

import cloudpickle

from proxystore.exceptions import SerializationError

__all__ = [
    "Buffer",
    "Pickled",
    "SerializationError",
    "deserialize",
    "has_buffers",
    "pickle_once",
    "rebuilds_writable",
    "serialize",
    "serialize_parts",
    "serialized_size",
]

Buffer = Union[bytes, bytearray, memoryview]
"""Anything :func:`deserialize` accepts."""

_BYTES = 0x01
_STR = 0x02
_PICKLE = 0x03
_CLOUDPICKLE = 0x04

_ALIGN = 64
_FRAME_HEAD = struct.Struct("<3xIQ")  # padding, buffer count, pickle length (after the tag byte)
_LENGTH = struct.Struct("<Q")
_MAIN = b"__main__"


# Per-library codecs: (library, codec module). A codec module's ``reducers()`` returns
# dispatch-table entries (type -> reduce function) for one pickling call. They are used only
# when the library is already imported (in ``sys.modules``) as the object is pickled, so
# ``import proxystore`` never imports the library; the stream names the codec's rebuild
# function, so loading imports it (and the library) on demand.
_CODECS: tuple[tuple[str, str], ...] = (("torch", "proxystore._torch_codec"),)
_LOADED: dict[str, ModuleType] = {}
_DISPATCH_SLOT = vars(pickle.Pickler)["dispatch_table"]  # the C pickler's table (a member)


def _reducers() -> dict[type, Callable[[Any], Any]] | None:
    """Dispatch-table entries of the codecs whose library is in use, or ``None``."""
    entries: dict[type, Callable[[Any], Any]] | None = None
    for library, name in _CODECS:
        if library not in sys.modules:
            continue
        codec = _LOADED.get(name)
        if codec is None:
            try:
                codec = _LOADED[name] = importlib.import_module(name)
            except ImportError:  # the library is half there (a stub, a broken install)
                continue
        entries = {**(entries or {}), **codec.reducers()}
    return entries


def _align(offset: int) -> int:
    return (offset + _ALIGN - 1) // _ALIGN * _ALIGN


def _pickle(
    obj: Any, refuse: tuple[type, ...] = ()
) -> tuple[int, bytes, list[pickle.PickleBuffer]]:
    buffers: list[pickle.PickleBuffer] = []
    # Functions and classes defined in __main__ pickle "by reference" without error, wherever
    # they sit in the object (an instance of a __main__ class, a list of functions, a
    # functools.partial), yet another process cannot load them: such objects are shipped by
    # value with cloudpickle instead. The probing pickler spots them as it goes; after a plain
    # pickle.dumps the module name is looked for in the stream (a false positive, "__main__"
    # in the data itself, only costs the cloudpickle detour).
    reducers = _reducers()
    try:
        if refuse:
            pickler = _ProbingPickler(refuse, buffers)
            if reducers:
                pickler.dispatch_table = {**copyreg.dispatch_table, **reducers}
            pickler.dump(obj)
            stream = pickler.stream()
            refers_to_main = pickler.refers_to_main
        elif reducers:
            chunks = _Chunks()
            plain = pickle.Pickler(chunks, protocol=5, buffer_callback=buffers.append)
            plain.dispatch_table = {**copyreg.dispatch_table, **reducers}
            plain.dump(obj)
            stream = chunks.join()
            refers_to_main = _MAIN in stream
        else:
            stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
            refers_to_main = _MAIN in stream
    except _Refused:
        raise
    except Exception as exc:  # lambdas, closures, local classes: pickle refuses them
        first: Exception = exc
    else:
        if not refers_to_main:
            return _PICKLE, stream, buffers
        first = pickle.PicklingError("the object refers to definitions in __main__")
    buffers.clear()
    try:
        if reducers:
            chunks = _Chunks()
            by_value = cloudpickle.CloudPickler(chunks, protocol=5, buffer_callback=buffers.append)
            # CloudPickler's class attribute shadows the C pickler's own slot: set the slot.
            _DISPATCH_SLOT.__set__(
                by_value, ChainMap(_reducers() or {}, cloudpickle.CloudPickler.dispatch_table)
            )
            by_value.dump(obj)
            data = chunks.join()
        else:
            data = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize object of type {type(obj).__name__}: {exc} (pickle said: {first})"
        ) from exc
    return _CLOUDPICKLE, data, buffers


def serialize_parts(obj: Any) -> list[Buffer]:
    """Serialize ``obj`` into a list of buffers whose concatenation is ``serialize(obj)``.

    Large buffers of the object (numpy arrays, ``bytes``) appear in the list as memory views of
    the object itself, without a copy.

    Args:
        obj: Object to serialize.

    Returns:
        The pieces, in order.

    Raises:
        SerializationError: If the object cannot be pickled, even by cloudpickle.
    """
    # issubclass on the real type, not isinstance: isinstance would resolve a proxy, which
    # must travel as its factory (see proxystore.proxy) rather than be fetched to be stored.
    if issubclass(type(obj), bytes):
        return [b"\x01", obj]
    if issubclass(type(obj), str):
        return [b"\x02" + obj.encode("utf-8", "surrogatepass")]
    tag, stream, buffers = _pickle(obj)
    return _frame(tag, stream, buffers)


def _frame(tag: int, stream: bytes, buffers: Sequence[pickle.PickleBuffer]) -> list[Buffer]:
    raws: list[memoryview] = []
    for buffer in buffers:
        try:
            raws.append(buffer.raw())
        except BufferError:
            # Non-contiguous buffer: pickle 5 only hands those out when the exporter allows
            # it; copy it into a contiguous one.
            raws.append(memoryview(bytes(memoryview(buffer))))
    head = bytearray([tag])
    head += _FRAME_HEAD.pack(len(raws), len(stream))
    for raw in raws:
        head += _LENGTH.pack(raw.nbytes)
    parts: list[Buffer] = [bytes(head), stream]
    offset = len(head) + len(stream)
    for raw in raws:
        start = _align(offset)
        if start > offset:
            parts.append(bytes(start - offset))
        parts.append(raw)
        offset = start + raw.nbytes
    return parts


class Pickled:
    """An object pickled once, to measure it and then ship or store those same bytes.

    Attributes:
        stream: The pickle stream (protocol 5; by cloudpickle when plain pickle cannot).
        buffers: The object's out-of-band buffers (numpy arrays and the like), not copied.
        size: Bytes of the stream plus the buffers: what storing the object costs.
        plain: Whether ``stream`` alone rebuilds the object with plain :func:`pickle.loads`
            in any process (plain pickle, no out-of-band buffers): it can travel as is.
    """

    __slots__ = ("buffers", "plain", "size", "stream", "tag")

    def __init__(self, tag: int, stream: bytes, buffers: list[pickle.PickleBuffer]) -> None:
        self.tag = tag
        self.stream = stream
        self.buffers = buffers
        self.size = len(stream) + sum(memoryview(b).nbytes for b in buffers)
        self.plain = tag == _PICKLE and not buffers

    def parts(self) -> list[Buffer]:
        """The serialized form (:func:`serialize_parts`'s layout), without pickling again."""
        return _frame(self.tag, self.stream, self.buffers)


class _Refused(Exception):
    """Raised inside the pickler when it meets an instance of a refused type."""


class _Chunks(list[bytes]):
    """A pickler's file that keeps what it is given: the pickler's own buffers, not copies."""

    write = list.append

    def join(self) -> bytes:
        """Everything written, as one bytes object (no copy when it is one chunk)."""
        if len(self) == 1 and type(self[0]) is bytes:
            return self[0]
        return b"".join(self)


class _ProbingPickler(pickle.Pickler):
    """Pickles to a list of chunks, refusing some types and noting references to __main__.

    ``reducer_override`` is not called for None, bools and exact int, float, bytes, str, list,
    tuple, dict, set and frozenset, so plain data pickles at full C speed; every other object
    passes by here once (memoized objects are not looked at again), in particular every class
    and function the stream names, and every object whose class it names.
    """

    def __init__(self, refuse: tuple[type, ...], buffers: list[Any]) -> None:
        self.chunks = _Chunks()
        super().__init__(self.chunks, protocol=5, buffer_callback=buffers.append)
        self.refuse = refuse
        self.refers_to_main = False

    def reducer_override(self, obj: Any) -> Any:
        # type(), not isinstance(): isinstance() would resolve a proxy to read __class__.
        kind = type(obj)
        if issubclass(kind, self.refuse):
            raise _Refused
        if kind.__module__ == "__main__" or (
            (kind is FunctionType or issubclass(kind, type))
            and getattr(obj, "__module__", None) == "__main__"
        ):
            self.refers_to_main = True
        return NotImplemented

    def stream(self) -> bytes:
        """The pickle stream written so far (one chunk needs no copy)."""
        return self.chunks.join()


def pickle_once(obj: Any, *, refuse: tuple[type, ...] = ()) -> Pickled | None:
    """Pickle ``obj`` once (as :func:`serialize` would), to measure it and reuse the bytes.

    Args:
        obj: The object.
        refuse: Types whose instances, at any depth, make this return ``None`` (futures and
            proxies, which an engine must see for itself).

    Returns:
        The pickled object, or ``None`` if it holds an instance of a refused type.

    Raises:
        SerializationError: If the object cannot be pickled, even by cloudpickle.
    """
    try:
        tag, stream, buffers = _pickle(obj, refuse)
    except _Refused:
        return None
    return Pickled(tag, stream, buffers)


def serialized_size(parts: Sequence[Buffer]) -> int:
    """Total size in bytes of the pieces returned by :func:`serialize_parts`."""
    return sum(memoryview(part).nbytes for part in parts)


def serialize(obj: Any) -> bytes:
    """Serialize ``obj`` to bytes.

    ``bytes`` and ``str`` pass through with a one-byte tag; other objects use pickle protocol 5
    with out-of-band buffers (cloudpickle for lambdas, closures and ``__main__`` definitions).

    Args:
        obj: Object to serialize.

    Returns:
        The serialized bytes.

    Raises:
        SerializationError: If the object cannot be pickled, even by cloudpickle.
    """
    parts = serialize_parts(obj)
    if len(parts) == 1 and isinstance(parts[0], bytes):
        return parts[0]
    return b"".join(parts)


def has_buffers(data: Buffer) -> bool:
    """Return whether serialized ``data`` carries out-of-band buffers (e.g. numpy arrays)."""
    view = memoryview(data)
    if view.nbytes < 1 + _FRAME_HEAD.size or view[0] not in (_PICKLE, _CLOUDPICKLE):
        return False
    count, _ = _FRAME_HEAD.unpack_from(view, 1)
    return bool(count)


def rebuilds_writable(data: Buffer) -> bool:
    """Return whether ``data`` holds objects rebuilt writable even from read-only input.

    Torch tensors (torch has no read-only tensors): where numpy arrays on read-only memory come
    back read-only, a tensor comes back over a private copy-on-write alias (or a copy), so a
    store that shares what it rebuilt on read-only memory must not share these.
    """
    view = memoryview(data)
    if not has_buffers(view):
        return False
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    count, stream_len = _FRAME_HEAD.unpack_from(view, 1)
    start = 1 + _FRAME_HEAD.size + count * _LENGTH.size
    stream = bytes(view[start : start + stream_len])
    return any(name.encode() in stream for _, name in _CODECS)


def deserialize(data: Buffer, *, copy_readonly: bool = True) -> Any:
    """Rebuild an object from the output of :func:`serialize`.

    Args:
        data: Serialized data. Writable buffers are shared by the rebuilt arrays (no copy).
        copy_readonly: Give read-only input's buffers a private, writable copy (the default),
            so rebuilt arrays are writable like the originals. ``False`` shares read-only
            memory with the arrays, which are then read-only (for memory-mapped files).

    Returns:
        The object.

    Raises:
        SerializationError: If ``data`` is not a bytes-like object, is empty, carries an
            unknown format tag, or is truncated or corrupt.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(
            f"deserialize() expects bytes, bytearray or memoryview, got {type(data).__name__}"
        )
    view = memoryview(data)
    if not view.c_contiguous:
        raise SerializationError("deserialize() needs a contiguous buffer")
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    if view.nbytes == 0:
        raise SerializationError("cannot deserialize empty data")
    tag = view[0]
    if tag == _BYTES:
        return bytes(view[1:])
    if tag == _STR:
        try:
            return str(view[1:], "utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise SerializationError(f"corrupt serialized str: {exc}") from exc
    if tag in (_PICKLE, _CLOUDPICKLE):
        return _load_frame(view, copy=copy_readonly and view.readonly)
    raise SerializationError(
        f"unknown serialization tag {tag:#04x}: the data was not produced by "
        "proxystore.serialize.serialize() (or was written raw with serialize=False)"
    )


def _load_frame(view: memoryview, *, copy: bool) -> Any:
    size = view.nbytes
    head_end = 1 + _FRAME_HEAD.size
    if size < head_end:
        raise SerializationError(f"truncated serialized data ({size} bytes)")
    count, stream_len = _FRAME_HEAD.unpack_from(view, 1)
    lengths_end = head_end + count * _LENGTH.size
    if lengths_end > size:
        raise SerializationError(f"truncated serialized data ({size} bytes, {count} buffers)")
    lengths = [_LENGTH.unpack_from(view, head_end + i * _LENGTH.size)[0] for i in range(count)]
    offset = lengths_end + stream_len
    if offset > size:
        raise SerializationError(f"truncated serialized data ({size} bytes)")
    stream = view[lengths_end:offset]
    buffers: list[Buffer] = []
    for length in lengths:
        start = _align(offset)
        offset = start + length
        if offset > size:
            raise SerializationError(f"truncated serialized data ({size} bytes)")
        piece = view[start:offset]
        buffers.append(bytearray(piece) if copy else piece)
    try:
        return pickle.loads(stream, buffers=buffers)
    except ModuleNotFoundError as exc:  # e.g. a tensor loaded where torch is not installed
        raise SerializationError(
            f"cannot deserialize: the object needs module {exc.name!r}, which is not "
            f"installed in this process's environment (install it where the object is loaded)"
        ) from exc
    except Exception as exc:
        raise SerializationError(f"corrupt serialized data: {exc}") from exc
