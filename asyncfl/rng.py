"""Counter-based random streams: every draw is a pure function of (seed, purpose, client, counter).

No global state and no stream objects to carry around: a draw is ``uniform(key, counter, j)`` where
``key = stream_key(seed, purpose, client)``. Adding a client, reordering a batch or resuming from a
checkpoint therefore never changes anyone else's numbers, and a checkpoint needs only the counters.

The hash is SplitMix64's finaliser (Steele, Lea, Flood 2014), applied in a chain. Three bit-identical
implementations exist: scalar Python ints here (engine hot path), numpy ``uint64`` arrays here (bulk
draws), and torch ``int64`` tensors in :mod:`asyncfl.exec.tensor_rng` (minibatch indices on the device).
Tests check that all three agree bit for bit.

This module imports numpy only: the simulator layer uses it and must not import torch.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import numpy.typing as npt

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_TWO_M53 = 2.0**-53


def mix64(x: int) -> int:
    """SplitMix64 step on a Python int in [0, 2**64): adds the golden gamma, then finalises."""
    x = (x + GOLDEN) & MASK64
    x = ((x ^ (x >> 30)) * _M1) & MASK64
    x = ((x ^ (x >> 27)) * _M2) & MASK64
    return x ^ (x >> 31)


def purpose_id(purpose: str) -> int:
    """Stable 32-bit id of a purpose name (CRC-32; Python's ``hash`` is salted per process)."""
    return zlib.crc32(purpose.encode("utf-8"))


def stream_key(seed: int, purpose: str, client: int = 0) -> int:
    """64-bit key of the stream (seed, purpose, client). ``client`` may be any int >= 0."""
    return mix64(mix64(mix64(seed & MASK64) ^ purpose_id(purpose)) ^ (client & MASK64))


def bits(key: int, counter: int, j: int = 0) -> int:
    """Raw 64 random bits number ``j`` of draw ``counter`` in stream ``key``."""
    return mix64(mix64(key ^ (counter & MASK64)) ^ (j & MASK64))


def uniform(key: int, counter: int, j: int = 0) -> float:
    """Uniform in the open interval (0, 1) with 53 random bits."""
    return ((bits(key, counter, j) >> 11) + 0.5) * _TWO_M53


def normal(key: int, counter: int, j: int = 0) -> float:
    """Standard normal by Box-Muller from uniforms ``2j`` and ``2j+1``
    (``uniform(key, counter, 2j)`` and ``uniform(key, counter, 2j + 1)``, bit for bit).

    Both uniforms share the first SplitMix64 round, mix64(key ^ counter), computed once here: a
    scalar round is ~0.2 us of 128-bit integer work, and the engine draws up to three lognormal
    jitters per task."""
    inner = mix64(key ^ (counter & MASK64))
    u1 = ((mix64(inner ^ ((2 * j) & MASK64)) >> 11) + 0.5) * _TWO_M53
    u2 = ((mix64(inner ^ ((2 * j + 1) & MASK64)) >> 11) + 0.5) * _TWO_M53
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


# ----------------------------------------------------------------------------------------------
# numpy, vectorised over keys and/or counters (uint64 arithmetic wraps modulo 2**64)
# ----------------------------------------------------------------------------------------------

U64 = npt.NDArray[np.uint64]


def mix64_np(x: U64) -> U64:
    """Vectorised :func:`mix64` on uint64 arrays."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(GOLDEN)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(_M1)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(_M2)
        return x ^ (x >> np.uint64(31))


def stream_keys_np(seed: int, purpose: str, clients: npt.ArrayLike) -> U64:
    """Vectorised :func:`stream_key` over an array of client ids."""
    base = np.uint64(mix64(mix64(seed & MASK64) ^ purpose_id(purpose)))
    return mix64_np(base ^ np.asarray(clients, dtype=np.uint64))


def bits_np(keys: npt.ArrayLike, counters: npt.ArrayLike, j: npt.ArrayLike = 0) -> U64:
    """Vectorised :func:`bits` (broadcasting keys, counters and j)."""
    k = np.asarray(keys, dtype=np.uint64)
    c = np.asarray(counters, dtype=np.uint64)
    jj = np.asarray(j, dtype=np.uint64)
    return mix64_np(mix64_np(k ^ c) ^ jj)


def uniform_np(keys: npt.ArrayLike, counters: npt.ArrayLike, j: npt.ArrayLike = 0) -> npt.NDArray[np.float64]:
    """Vectorised :func:`uniform`: open interval (0, 1)."""
    b = bits_np(keys, counters, j) >> np.uint64(11)
    return (b.astype(np.float64) + 0.5) * _TWO_M53


def normal_np(keys: npt.ArrayLike, counters: npt.ArrayLike, j: npt.ArrayLike = 0) -> npt.NDArray[np.float64]:
    """Vectorised :func:`normal`."""
    jj = np.asarray(j, dtype=np.uint64)
    u1 = uniform_np(keys, counters, jj * np.uint64(2))
    u2 = uniform_np(keys, counters, jj * np.uint64(2) + np.uint64(1))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class Draws:
    """Draws ``counter`` = 0, 1, 2, ... of one stream ``key`` (``j`` = 0), for a caller that makes
    one scalar draw after another (client selection: one per task).

    ``below(counter, n)`` is ``bits(key, counter) * n >> 64`` (Lemire's multiply-shift: an integer
    in [0, n)), bit for bit. The bits are computed :data:`BLOCK` counters at a time with
    :func:`bits_np` and kept as Python ints: a scalar :func:`bits` is ~0.8 us of 128-bit integer
    work, a block costs ~0.02 us a draw. Any counter may be asked for (a restored run resumes at
    its saved counter); one outside the block in hand computes the block that starts there. The
    block is a cache, not state: snapshots need only the counter."""

    BLOCK = 1024

    __slots__ = ("_bits", "_start", "key")

    def __init__(self, key: int) -> None:
        self.key = key & MASK64
        self._start = 0
        self._bits: list[int] = []

    def below(self, counter: int, n: int) -> int:
        """Integer in [0, n): ``bits(key, counter) * n >> 64``."""
        i = counter - self._start
        if not 0 <= i < len(self._bits):
            self._start, i = counter, 0
            with np.errstate(over="ignore"):  # counters wrap modulo 2**64, as in bits()
                block = np.arange(self.BLOCK, dtype=np.uint64) + np.uint64(counter & MASK64)
            self._bits = bits_np(self.key, block).tolist()
        return (self._bits[i] * n) >> 64


def numpy_generator(seed: int, purpose: str, client: int = 0) -> np.random.Generator:
    """A numpy Generator seeded from the stream (seed, purpose, client), for one-off setup work
    (data generation, partitions) where numpy's distributions are convenient."""
    return np.random.default_rng(stream_key(seed, purpose, client))


__all__ = [
    "Draws",
    "bits",
    "bits_np",
    "mix64",
    "mix64_np",
    "normal",
    "normal_np",
    "numpy_generator",
    "purpose_id",
    "stream_key",
    "stream_keys_np",
    "uniform",
    "uniform_np",
]
