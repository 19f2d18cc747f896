"""A Fenwick (binary indexed) tree of non-negative integer weights over ids 0 .. n-1.

``add(i, delta)`` and ``find(u)`` (the id whose cumulative-weight interval holds ``u``) take
O(log n) steps, so a weighted pick among n clients costs ~20 Python steps instead of a scan of all
n. Weights are integers so that the sums are exact: the tree built from scratch (a restored run)
and the tree updated pick by pick (the original run) answer every ``find`` alike.
"""

from __future__ import annotations

from collections.abc import Sequence


class Fenwick:
    """Integer weights w_0 .. w_{n-1} (all 0 at first); ``total`` = sum of w_i."""

    __slots__ = ("_n", "_top", "_tree", "total")

    def __init__(self, n: int) -> None:
        self._n = int(n)
        self._tree = [0] * (self._n + 1)  # 1-based: _tree[j] sums w over (j - lowbit(j), j]
        self._top = 1 << (self._n.bit_length() - 1) if self._n > 0 else 0
        self.total = 0

    @classmethod
    def of(cls, weights: Sequence[int]) -> Fenwick:
        """A tree holding ``weights`` (built in O(n))."""
        f = cls(len(weights))
        tree = f._tree
        for i, w in enumerate(weights, start=1):
            tree[i] += w
            j = i + (i & -i)
            if j <= f._n:
                tree[j] += tree[i]
        f.total = sum(weights)
        return f

    def add(self, i: int, delta: int) -> None:
        """w_i += delta."""
        self.total += delta
        tree, n = self._tree, self._n
        j = i + 1
        while j <= n:
            tree[j] += delta
            j += j & -j

    def find(self, u: int) -> int:
        """The id i with w_0 + ... + w_{i-1} <= u < w_0 + ... + w_i, for 0 <= u < total (so
        w_i > 0): the inverse of the cumulative weight, in id order."""
        tree, n = self._tree, self._n
        pos, step = 0, self._top
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] <= u:
                pos = nxt
                u -= tree[nxt]
            step >>= 1
        return pos


__all__ = ["Fenwick"]
