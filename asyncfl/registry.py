"""One explicit registry per kind of component (models, datasets, partitions, algorithms, ...).

Scenario files name components by short names; the registry maps those names to classes or
factories at the edge where scenarios are loaded. There are no import strings anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from asyncfl.errors import ScenarioError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> component map for one kind of component; ``key`` is the scenario key it serves."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("fedavg")``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            allowed = ", ".join(sorted(self._items))
            raise ScenarioError(self.key, f"unknown {self.kind} {name!r}; allowed: {allowed}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


__all__ = ["Registry"]
