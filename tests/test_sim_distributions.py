"""Delay distributions: moments match their parameters; scalar and vectorised draws agree."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncfl.config.schema import (
    ConstantDist,
    ExponentialDist,
    FromListDist,
    LognormalDist,
    ParetoDist,
    UniformDist,
)
from asyncfl.rng import stream_key, stream_keys_np
from asyncfl.sim.distributions import (
    Constant,
    Exponential,
    FromList,
    Lognormal,
    Pareto,
    Uniform,
    make_distribution,
)

N = 200_000

CASES = [
    # (config, exact mean, exact variance)
    (ConstantDist(value=3.5), 3.5, 0.0),
    (UniformDist(low=2.0, high=5.0), 3.5, 9.0 / 12.0),
    (ExponentialDist(mean=2.0), 2.0, 4.0),
    (LognormalDist(mean=10.0, sigma=0.5), 10.0, math.expm1(0.25) * 100.0),
    # shape a = 5, x_m = 2: mean a x_m/(a-1) = 2.5; variance x_m^2 a/((a-1)^2 (a-2)) = 20/48
    (ParetoDist(shape=5.0, scale=2.0), 2.5, 20.0 / 48.0),
    (FromListDist(values=[1.0, 2.0, 6.0]), 3.0, 14.0 / 3.0),
]


@pytest.mark.parametrize(("cfg", "mean", "var"), CASES, ids=lambda c: getattr(c, "dist", ""))
def test_sample_moments_match_parameters(cfg: object, mean: float, var: float) -> None:
    """200k draws of one stream (fixed seed): sample mean within 5 standard errors of the exact
    mean, sample variance within 5% (Pareto: shape 5 > 4 so the variance estimate is stable)."""
    dist = make_distribution(cfg)  # type: ignore[arg-type]
    assert dist.mean == pytest.approx(mean)
    assert dist.variance == pytest.approx(var)
    key = stream_key(123, "test", 0)
    x = dist.sample(np.uint64(key), np.arange(N, dtype=np.uint64))
    assert x.shape == (N,)
    assert x.min() >= 0.0
    se = math.sqrt(var / N)
    assert abs(x.mean() - mean) <= 5 * se + 1e-12
    assert x.var() == pytest.approx(var, rel=0.05, abs=1e-12)


@pytest.mark.parametrize(("cfg", "mean", "var"), CASES, ids=lambda c: getattr(c, "dist", ""))
def test_scalar_and_vector_draws_agree(cfg: object, mean: float, var: float) -> None:
    dist = make_distribution(cfg)  # type: ignore[arg-type]
    keys = stream_keys_np(7, "speed", np.arange(50))
    counters = np.arange(50) * 3
    vec = dist.sample(keys, counters)
    one = [dist.sample_one(int(k), int(c)) for k, c in zip(keys.tolist(), counters.tolist(), strict=True)]
    np.testing.assert_allclose(vec, one, rtol=1e-13, atol=0)


def test_make_distribution_classes() -> None:
    assert isinstance(make_distribution(ConstantDist(value=1.0)), Constant)
    assert isinstance(make_distribution(UniformDist(low=0, high=1)), Uniform)
    assert isinstance(make_distribution(ExponentialDist(mean=1)), Exponential)
    assert isinstance(make_distribution(LognormalDist(mean=1)), Lognormal)
    assert isinstance(make_distribution(ParetoDist()), Pareto)
    assert isinstance(make_distribution(FromListDist(values=[1.0])), FromList)
    with pytest.raises(TypeError):
        make_distribution("constant")  # type: ignore[arg-type]


def test_from_list_is_indexed_by_counter() -> None:
    d = FromList([5.0, 7.0])
    assert d.sample(np.zeros(5, dtype=np.uint64), np.arange(5)).tolist() == [5.0, 7.0, 5.0, 7.0, 5.0]
    assert d.sample_one(999, 3) == 7.0
    assert d.constant is None and FromList([2.0, 2.0]).constant == 2.0


def test_pareto_minimum_and_constant_flags() -> None:
    p = Pareto(shape=1.5, scale=3.0)
    x = p.sample(stream_keys_np(1, "p", np.arange(1000)), 0)
    assert x.min() >= 3.0
    assert math.isinf(p.variance) and p.mean == pytest.approx(9.0)
    assert Constant(2.0).constant == 2.0 and Exponential(1.0).constant is None
    assert Uniform(1.0, 1.0).constant == 1.0
