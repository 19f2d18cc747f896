"""The counter-based hash of :mod:`asyncfl.rng` on torch int64 tensors, for draws on the device.

torch has no uint64 arithmetic on every device, so the same bits are computed in int64: addition
and multiplication wrap modulo 2**64 identically, and a logical right shift is an arithmetic shift
followed by a mask. Results are bit-identical to :func:`asyncfl.rng.bits` (tested).
"""

from __future__ import annotations

import torch

from asyncfl.rng import _M1, _M2, GOLDEN


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= (1 << 63) else x


_GOLDEN_S = _signed(GOLDEN)
_M1_S = _signed(_M1)
_M2_S = _signed(_M2)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64_t(x: torch.Tensor) -> torch.Tensor:
    """:func:`asyncfl.rng.mix64` on int64 tensors holding uint64 bit patterns."""
    x = x + _GOLDEN_S
    x = (x ^ _shr(x, 30)) * _M1_S
    x = (x ^ _shr(x, 27)) * _M2_S
    return x ^ _shr(x, 31)


def as_int64_key(key: int) -> int:
    """A 64-bit key from :func:`asyncfl.rng.stream_key` as the signed int torch stores."""
    return _signed(key)


def bits_t(keys: torch.Tensor, counters: torch.Tensor | int, j: torch.Tensor | int = 0) -> torch.Tensor:
    """:func:`asyncfl.rng.bits` on broadcast int64 tensors (keys as from :func:`as_int64_key`)."""
    return mix64_t(mix64_t(keys ^ counters) ^ j)


def uniform_t(
    keys: torch.Tensor, counters: torch.Tensor | int, j: torch.Tensor | int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Uniform in (0, 1) from the top 24 bits (float32) or 53 bits (float64)."""
    b = bits_t(keys, counters, j)
    if dtype == torch.float64:
        return (_shr(b, 11).to(torch.float64) + 0.5) * 2.0**-53
    return (_shr(b, 40).to(torch.float32) + 0.5) * 2.0**-24


__all__ = ["as_int64_key", "bits_t", "mix64_t", "uniform_t"]
