"""Name -> builder tables, one per extension point that a config selects by name."""

from __future__ import annotations

import difflib
from typing import Callable, ItemsView, Iterator, KeysView, TypeVar, ValuesView

T = TypeVar("T", bound=Callable)


class Registry:
    """Maps the names used in config files to the callables that build the part.

    Each registry documents its contract (what a builder takes and returns) where
    it is created. Lookup of an unknown name raises ``KeyError`` naming the config
    key it came from (when given), the known names and the closest matches.

    It also reads as maskrcnn-benchmark's dict-based registry: ``REG[name]``, ``name in REG``,
    ``len(REG)``, ``REG.items()`` / ``.keys()`` / ``.values()``, and ``REG.register(name, obj)``
    as well as the decorator form ``@REG.register(name)``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._table: dict[str, Callable] = {}

    def register(self, key: str | None = None, obj: Callable | None = None) -> Callable:
        """Decorator: ``@REG.register()`` uses the object's ``__name__``; ``register("R-50-C4")`` a
        given name. ``register("name", obj)`` registers ``obj`` at once and returns it."""
        if obj is not None:
            return self.register(key)(obj)

        def add(obj: T) -> T:
            name = key or obj.__name__
            if name in self._table:
                raise KeyError(f"{self.name}: '{name}' is registered twice")
            self._table[name] = obj
            return obj

        return add

    def get(self, key: str, config_key: str | None = None) -> Callable:
        """The builder registered as ``key``; ``config_key`` names the config entry for the error."""
        if key in self._table:
            return self._table[key]
        where = f" (from {config_key})" if config_key else ""
        close = difflib.get_close_matches(str(key), self._table, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(
            f"{self.name} has no entry '{key}'{where}.{hint} Known: {', '.join(sorted(self._table))}"
        )

    def __getitem__(self, key: str) -> Callable:
        return self.get(key)

    def keys(self) -> KeysView[str]:
        return self._table.keys()

    def values(self) -> ValuesView[Callable]:
        return self._table.values()

    def items(self) -> ItemsView[str, Callable]:
        return self._table.items()

    def __contains__(self, key: str) -> bool:
        return key in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._table))

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {sorted(self._table)})"
