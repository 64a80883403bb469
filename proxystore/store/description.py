"""``StoreDescription``: what a store is, as plain data that travels to other processes.

A description holds a store's type (``"module:ClassName"``), its name, the constructor
arguments that re-create it, and whether statistics are on. Proxies carry one (inside their
:class:`~proxystore.store.base.StoreFactory`), and so do the engine adapters' worker-side
tasks. It is plain data: in a process without the store, the registry creates and registers
the store once from it (:func:`proxystore.store.registry.get_or_create`, which a factory's
``get_store`` calls).

Constructor arguments may hold secrets (a Redis password, a Globus client): they travel with
the description, since workers need them, but its ``repr`` never shows their values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import proxystore.store._table as _table

__all__ = ["StoreDescription", "is_secret"]

_SECRET = re.compile(r"pass|secret|token|credential|auth|client|key", re.IGNORECASE)


def is_secret(argument: str) -> bool:
    """Return whether a constructor argument's value may be a secret (never shown)."""
    return _SECRET.search(argument) is not None


@dataclass(frozen=True, repr=False)
class StoreDescription:
    """A picklable description of a store; another process re-creates the store from it.

    Attributes:
        type_path: ``"module:ClassName"`` of the store's class.
        name: Name the store is registered under.
        kwargs: Constructor arguments besides the name.
        stats: Whether the store records statistics (``init_store(..., stats=True)``).
    """

    type_path: str
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    stats: bool = False

    @property
    def type_name(self) -> str:
        """The class name of the store (``"RedisStore"``)."""
        return self.type_path.rpartition(":")[2]

    def init_kwargs(self) -> dict[str, Any]:
        """The arguments of ``init_store`` besides type and name (``stats`` included if on)."""
        kwargs = dict(self.kwargs)
        if self.stats:
            kwargs["stats"] = True
        return kwargs

    def get_or_create(self) -> Any:
        """Return the store registered under :attr:`name`, creating it from here if needed.

        The same as :func:`proxystore.store.registry.get_or_create` (typed: it returns a
        :class:`~proxystore.store.base.Store`), kept for callers of the method.
        """
        return _table.get_or_create(self)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{arg}={'***' if is_secret(arg) else repr(value)}"
            for arg, value in self.kwargs.items()
        )
        stats = ", stats=True" if self.stats else ""
        args = f", {shown}" if shown else ""
        return f"StoreDescription({self.type_name}({self.name!r}{args}){stats})"
