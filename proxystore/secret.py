"""``Secret``: a value (a password) that travels with pickles but never shows.

Store descriptions carry connection settings to workers, passwords included: a worker cannot
connect without them. Wrapped in a :class:`Secret`, a password still pickles (workers need
it), but its ``repr`` and ``str`` are ``'***'``, so it shows neither in the ``repr`` or
``__dict__`` of the objects that hold it (factories, descriptions, backends, connection pools)
nor in the locals a traceback captures (``traceback.TracebackException(...,
capture_locals=True)``). Code unwraps it with :meth:`Secret.reveal` only at the moment it
connects.
"""

from __future__ import annotations

from typing import Any, Union

__all__ = ["Secret", "reveal", "wrap"]


class Secret:
    """A secret string: pickles with its value, shows as ``'***'``.

    Args:
        value: The secret.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret wraps a str, got {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """Return the secret (only where it is used: when connecting)."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))


def wrap(value: Union[str, Secret, None]) -> Secret | None:
    """Return ``value`` as a :class:`Secret` (``None`` stays ``None``)."""
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


def reveal(value: Union[str, Secret, None]) -> str | None:
    """Return the plain string of ``value`` (a :class:`Secret`, a ``str`` or ``None``)."""
    return value.reveal() if isinstance(value, Secret) else value
