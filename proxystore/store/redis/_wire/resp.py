"""RESP2 encoding of commands.

:func:`encode` turns commands into the pieces ``socket.sendmsg`` sends, copying small
arguments into shared pieces and passing large ones through as views of the caller's memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from proxystore.buffers import byte_view
from proxystore.secret import Secret
from proxystore.serialize import Buffer

__all__ = ["CRLF", "SMALL_ARGUMENT", "Argument", "Encoded", "encode"]

Argument = Union[bytes, bytearray, memoryview, str, int, Sequence[Buffer]]
"""A command argument: a buffer, a ``str`` (UTF-8; lone surrogates ``\udc80``-``\udcff`` stand
for the non-UTF-8 bytes they escape, as ``os.fsencode`` does), an ``int``, or a list of buffers
that make up one value together."""

SMALL_ARGUMENT = 16 * 1024
"""Argument pieces shorter than this are copied into the command buffer; longer ones are sent
from the caller's memory."""

CRLF = b"\r\n"


class Encoded(list):  # type: ignore[type-arg]  # list[Buffer]
    """The pieces of encoded commands, whose ``repr`` gives sizes only.

    They may hold an ``AUTH`` password, and a traceback's captured locals show every ``repr``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} encoded pieces, {sum(len(byte_view(p)) for p in self)} bytes>"


def encode(commands: Sequence[Sequence[Argument | Secret]]) -> list[Buffer]:
    """Encode ``commands`` as RESP arrays of bulk strings; return the pieces to send in order.

    Small arguments are copied into shared pieces; argument pieces of at least
    :data:`SMALL_ARGUMENT` bytes appear in the result as views of the caller's memory. A
    :class:`~proxystore.secret.Secret` is sent as its value.

    Raises:
        TypeError: If an argument has an unsupported type.
    """
    pieces: list[Buffer] = Encoded()
    current = bytearray()
    for command in commands:
        current += b"*%d\r\n" % len(command)
        for arg in command:
            if isinstance(arg, str):
                arg = arg.encode("utf-8", "surrogateescape")
            elif isinstance(arg, int) and not isinstance(arg, bool):
                arg = b"%d" % arg
            elif isinstance(arg, Secret):
                current += b"$%d\r\n%s\r\n" % (len(arg.reveal().encode()), arg.reveal().encode())
                continue
            if isinstance(arg, bytes) and len(arg) < SMALL_ARGUMENT:
                # The common case, kept short: a small argument copied into the buffer.
                current += b"$%d\r\n" % len(arg)
                current += arg
                current += CRLF
                continue
            if isinstance(arg, (bytes, bytearray, memoryview)):
                views = [byte_view(arg)]
            elif isinstance(arg, (list, tuple)):
                views = [byte_view(part) for part in arg]
            else:
                raise TypeError(f"cannot send a {type(arg).__name__} as a Redis argument")
            current += b"$%d\r\n" % sum(view.nbytes for view in views)
            for view in views:
                if view.nbytes < SMALL_ARGUMENT:
                    current += view
                else:
                    if current:
                        pieces.append(bytes(current))
                        current = bytearray()
                    pieces.append(view)
            current += CRLF
    if current:
        pieces.append(bytes(current))
    return pieces
