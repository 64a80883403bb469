"""``StoreDescription``: what a store is, as plain data that travels to other processes.

A description holds a store's type (``"module:ClassName"``), its name, the constructor
arguments that re-create it, and whether statistics are on. Proxies carry one (inside their
:class:`~proxystore.store.base.StoreFactory`), and so do the engine adapters' worker-side
tasks; in a process without the store, :meth:`StoreDescription.get_or_create` creates and
registers it once, from the description.

Constructor arguments may hold secrets (a Redis password, a Globus client): they travel with
the description, since workers need them, but its ``repr`` never shows their values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from proxystore.store.base import Store

__all__ = ["StoreDescription", "is_secret", "set_locator"]

_SECRET = re.compile(r"pass|secret|token|credential|auth|client|key", re.IGNORECASE)
_Locator = Callable[["StoreDescription"], "Store"]
_locator: _Locator | None = None


def is_secret(argument: str) -> bool:
    """Return whether a constructor argument's value may be a secret (never shown)."""
    return _SECRET.search(argument) is not None


def set_locator(locator: _Locator) -> None:
    """Install the function that finds or creates a described store (the registry does)."""
    global _locator
    _locator = locator


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

    def get_or_create(self) -> Store:
        """Return the store registered under :attr:`name`, creating it from here if needed."""
        # Installed by proxystore.store.registry, which the package imports before this module.
        assert _locator is not None, "proxystore.store.registry is not imported"
        return _locator(self)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{arg}={'***' if is_secret(arg) else repr(value)}"
            for arg, value in self.kwargs.items()
        )
        stats = ", stats=True" if self.stats else ""
        args = f", {shown}" if shown else ""
        return f"StoreDescription({self.type_name}({self.name!r}{args}){stats})"
