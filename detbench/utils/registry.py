"""Name -> builder tables, one per extension point that a config selects by name."""

from __future__ import annotations

import difflib
from typing import Callable, Iterator, TypeVar

T = TypeVar("T", bound=Callable)


class Registry:
    """Maps the names used in config files to the callables that build the part.

    Each registry documents its contract (what a builder takes and returns) where
    it is created. Lookup of an unknown name raises ``KeyError`` naming the config
    key it came from (when given), the known names and the closest matches.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._table: dict[str, Callable] = {}

    def register(self, key: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REG.register()`` uses the object's ``__name__``; ``register("R-50-C4")`` a given name."""

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

    def __contains__(self, key: str) -> bool:
        return key in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._table))

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {sorted(self._table)})"
