"""The counter-based streams of asyncfl.rng: the scalar, numpy and block (Draws) forms agree bit
for bit, and the hash is SplitMix64's."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncfl.rng import MASK64, Draws, bits, bits_np, mix64, mix64_np, normal, stream_key, uniform, uniform_np

U64 = st.integers(min_value=0, max_value=MASK64)


def test_mix64_is_splitmix64() -> None:
    """SplitMix64 seeded with 0 gives these first outputs (the reference sequence of Vigna's
    splitmix64.c): state += gamma, then the finaliser, which is mix64 of the previous state."""
    state, out = 0, []
    for _ in range(3):
        out.append(mix64(state))
        state = (state + 0x9E3779B97F4A7C15) & MASK64
    assert out == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@settings(max_examples=200, derandomize=True)
@given(key=U64, counter=U64, j=st.integers(min_value=0, max_value=2**40))
def test_scalar_and_numpy_bits_agree(key: int, counter: int, j: int) -> None:
    assert int(bits_np(key, counter, j)) == bits(key, counter, j)
    assert int(mix64_np(np.array([key], dtype=np.uint64))[0]) == mix64(key)
    assert float(uniform_np(key, counter, j)) == uniform(key, counter, j)


@settings(max_examples=100, derandomize=True)
@given(
    key=U64,
    counters=st.lists(st.integers(min_value=0, max_value=MASK64), min_size=1, max_size=20),
    n=st.integers(min_value=1, max_value=2**64),
)
def test_draws_below_is_bits_times_n_shifted(key: int, counters: list[int], n: int) -> None:
    """Any order of counters (forwards, backwards, jumps across blocks, the last ones before
    2**64 where a block's counters wrap): the same integer as the scalar draw, in [0, n)."""
    draws = Draws(key)
    for c in counters:
        got = draws.below(c, n)
        assert got == (bits(key, c) * n) >> 64
        assert 0 <= got < n


def test_draws_sequential_run_crosses_blocks() -> None:
    key = stream_key(3, "selection")
    draws = Draws(key)
    span = 3 * Draws.BLOCK + 5
    got = [draws.below(c, 1000) for c in range(span)]
    assert got == [(bits(key, c) * 1000) >> 64 for c in range(span)]
    # a restored run resumes at its counter: going back gives the same numbers again
    assert [draws.below(c, 1000) for c in range(10)] == got[:10]


@settings(max_examples=200, derandomize=True)
@given(key=U64, counter=U64, j=st.integers(min_value=0, max_value=2**40))
def test_normal_is_box_muller_of_uniforms_2j_and_2j_plus_1(key: int, counter: int, j: int) -> None:
    """normal() computes the uniforms' shared first round once; the result is the textbook
    composition, bit for bit."""
    u1, u2 = uniform(key, counter, 2 * j), uniform(key, counter, 2 * j + 1)
    assert normal(key, counter, j) == math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
