"""Reference-counted store of model versions.

A version (a flat parameter tensor) is held only while something needs it: the current server
model, or an in-flight client that pulled it and has not been applied or discarded. Memory thus
follows the number of distinct live versions, not the number of clients: with ``c`` clients in
flight at most ``c + 1`` versions are alive (async), plus those pinned by updates waiting in a
buffer. ``peak`` reports the most versions held at once, ``peak_bytes`` their bytes.

A client task holds a reference, not a copy: every task that pulled version v shares its one
tensor (and so does the executor's job for it, until its update is computed).
"""

from __future__ import annotations

from torch import Tensor

from asyncfl.types import ModelVersion


class VersionStore:
    """Versions by number, each with a reference count; see the module docstring."""

    def __init__(self) -> None:
        self._tensors: dict[int, Tensor] = {}
        self._refs: dict[int, int] = {}
        self._bytes = 0
        self.peak = 0
        self.peak_bytes = 0

    def put(self, version: ModelVersion, w: Tensor) -> None:
        """Add ``version`` with one reference (the holder that created it)."""
        if version in self._tensors:
            raise KeyError(f"version {version} already stored")
        self._tensors[version] = w
        self._refs[version] = 1
        self._bytes += w.numel() * w.element_size()
        if len(self._tensors) > self.peak:
            self.peak = len(self._tensors)
        if self._bytes > self.peak_bytes:
            self.peak_bytes = self._bytes

    def acquire(self, version: ModelVersion) -> Tensor:
        """One more reference to ``version``; returns its tensor."""
        self._refs[version] += 1
        return self._tensors[version]

    def get(self, version: ModelVersion) -> Tensor:
        return self._tensors[version]

    def release(self, version: ModelVersion) -> None:
        """Drop one reference; the tensor is freed when none remain."""
        n = self._refs[version] - 1
        if n == 0:
            del self._refs[version]
            w = self._tensors.pop(version)
            self._bytes -= w.numel() * w.element_size()
        else:
            self._refs[version] = n

    def refs(self, version: ModelVersion) -> int:
        return self._refs.get(version, 0)

    def live(self) -> list[int]:
        return sorted(self._tensors)

    @property
    def nbytes(self) -> int:
        """Bytes of the versions held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._tensors)

    def __contains__(self, version: object) -> bool:
        return version in self._tensors


__all__ = ["VersionStore"]
