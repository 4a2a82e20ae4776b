"""One generic registry class; each plug-in kind (encoders, MIL heads, probes) owns one instance."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from slidemil.core.errors import UnknownPluginError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → factory mapping for one kind of plug-in.

    ``register`` is a decorator; a duplicate name raises ``ValueError``; ``get`` of an unknown name
    raises ``UnknownPluginError`` (a ``KeyError`` and a ``SlidemilError``) listing the known names and the closest match.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``. Raises ``ValueError`` if the name is taken."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry registered as ``name``. Raises ``UnknownPluginError`` naming the registered ones and the closest."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownPluginError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._entries))}.{hint}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
