"""The set of idle clients, with O(1) add, remove and pick-by-index (array + position map)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from asyncfl.types import ClientId


class IdleSet:
    """Client ids in an array; ``pos[c]`` is c's index in it or -1. Removal swaps the last element
    into the hole, so the array's order depends on history: it is part of the engine state (a
    random pick is ``items[index]``) and is saved in snapshots as is."""

    __slots__ = ("items", "pos")

    def __init__(self, num_clients: int, items: Iterable[int] | None = None) -> None:
        self.items = cast(list[ClientId], list(range(num_clients)) if items is None else list(items))
        self.pos: list[int] = [-1] * num_clients
        for i, c in enumerate(self.items):
            self.pos[c] = i

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, client: int) -> bool:
        return self.pos[client] >= 0

    def add(self, client: ClientId) -> None:
        """Append ``client`` (which must not be in the set)."""
        self.pos[client] = len(self.items)
        self.items.append(client)

    def pop_at(self, index: int) -> ClientId:
        """Remove and return the client at ``index``."""
        items = self.items
        client = items[index]
        last = items.pop()
        if last != client:
            items[index] = last
            self.pos[last] = index
        self.pos[client] = -1
        return client

    def remove(self, client: ClientId) -> None:
        self.pop_at(self.pos[client])


__all__ = ["IdleSet"]
