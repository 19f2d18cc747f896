"""Delay and speed distributions, drawn from counter-based streams (:mod:`asyncfl.rng`).

Each class is built from its scenario config by :func:`make_distribution` and draws by inverse CDF
from uniforms ``u = uniform(key, counter)`` in (0, 1), so a draw is a pure function of
(seed, purpose, client, counter). Units are those of the scenario key that holds the distribution
(speed: samples per second; latency: seconds; bandwidth: bytes per second; jitter: a factor).

Two spellings of the same draw:

- :meth:`sample` is vectorised over numpy arrays of keys and counters (persistent per-client
  quantities, drawn once for all clients; tests);
- :meth:`sample_one` takes one Python-int key and counter. The engine calls it per task: a numpy call
  on a size-1 array costs ~15 us here, the scalar path ~1-2 us. Both use the same uniforms (bit for
  bit); transcendental functions (log, exp) may differ in the last ulp between numpy and ``math``, so
  each quantity is always drawn through the same spelling.

``counter`` is the client id for persistent per-client quantities and the client's task index for
per-task ones; :class:`FromList` returns ``values[counter % len(values)]`` (the deterministic twin).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from asyncfl.config.schema import (
    ConstantDist,
    DistBase,
    ExponentialDist,
    FromListDist,
    LognormalDist,
    ParetoDist,
    UniformDist,
)
from asyncfl.registry import Registry
from asyncfl.rng import normal, normal_np, uniform, uniform_np

Floats = npt.NDArray[np.float64]


class Distribution(Protocol):
    """A non-negative random quantity. ``mean`` and ``variance`` are the exact moments (``inf``
    where they do not exist); ``constant`` is the value every draw returns exactly, when there is
    one (callers then skip drawing), else None."""

    mean: float
    variance: float
    constant: float | None

    def sample(self, keys: npt.ArrayLike, counters: npt.ArrayLike) -> Floats:
        """Draws for each (key, counter) pair (numpy broadcasting)."""
        ...

    def sample_one(self, key: int, counter: int) -> float:
        """One draw; equal to ``sample`` on the same key and counter up to the last ulp."""
        ...


def _shape(keys: npt.ArrayLike, counters: npt.ArrayLike) -> tuple[int, ...]:
    return np.broadcast_shapes(np.shape(keys), np.shape(counters))


class Constant:
    """Always ``value``: mean ``value``, variance 0."""

    def __init__(self, value: float) -> None:
        self.value = float(value)
        self.mean = self.value
        self.variance = 0.0
        self.constant: float | None = self.value

    def sample(self, keys: npt.ArrayLike, counters: npt.ArrayLike) -> Floats:
        return np.full(_shape(keys, counters), self.value, dtype=np.float64)

    def sample_one(self, key: int, counter: int) -> float:
        return self.value


class Uniform:
    """Uniform on [low, high]: x = low + (high - low) u; mean (low+high)/2, variance (high-low)^2/12."""

    def __init__(self, low: float, high: float) -> None:
        self.low = float(low)
        self.width = float(high) - self.low
        self.mean = self.low + self.width / 2.0
        self.variance = self.width**2 / 12.0
        self.constant: float | None = self.low if self.width == 0.0 else None

    def sample(self, keys: npt.ArrayLike, counters: npt.ArrayLike) -> Floats:
        return self.low + self.width * uniform_np(keys, counters)

    def sample_one(self, key: int, counter: int) -> float:
        return self.low + self.width * uniform(key, counter)


class Exponential:
    """Exponential with mean m: x = -m ln u; variance m^2."""

    def __init__(self, mean: float) -> None:
        self.scale = float(mean)
        self.mean = self.scale
        self.variance = self.scale**2
        self.constant: float | None = None

    def sample(self, keys: npt.ArrayLike, counters: npt.ArrayLike) -> Floats:
        return -self.scale * np.log(uniform_np(keys, counters))

    def sample_one(self, key: int, counter: int) -> float:
        return -self.scale * math.log(uniform(key, counter))


class Lognormal:
    """x = exp(mu + sigma z), z standard normal, mu = ln(mean) - sigma^2/2 so that E[x] = mean;
    variance (exp(sigma^2) - 1) mean^2."""

    def __init__(self, mean: float, sigma: float) -> None:
        self.sigma = float(sigma)
        self.mu = math.log(mean) - self.sigma**2 / 2.0
        self.mean = float(mean)
        self.variance = math.expm1(self.sigma**2) * self.mean**2
        self.constant: float | None = None  # exp(ln m) need not be m exactly

    def sample(self, keys: npt.ArrayLike, counters: npt.ArrayLike) -> Floats:
        return np.exp(self.mu + self.sigma * normal_np(keys, counters))

    def sample_one(self, key: int, counter: int) -> float:
        return math.exp(self.mu + self.sigma * normal(key, counter))


class Pareto:
    """Pareto with minimum x_m = ``scale`` and tail index a = ``shape``: x = x_m (1 - u)^(-1/a);
    mean a x_m / (a - 1) (a > 1), variance x_m^2 a / ((a - 1)^2 (a - 2)) (a > 2), else inf."""

    def __init__(self, shape: float, scale: float) -> None:
        self.shape = float(shape)
        self.scale = float(scale)
        self._exponent = -1.0 / self.shape
        a, xm = self.shape, self.scale
        self.mean = a * xm / (a - 1.0) if a > 1.0 else math.inf
        self.variance = xm**2 * a / ((a - 1.0) ** 2 * (a - 2.0)) if a > 2.0 else math.inf
        self.constant: float | None = None

    def sample(self, keys: npt.ArrayLike, counters: npt.ArrayLike) -> Floats:
        return self.scale * (1.0 - uniform_np(keys, counters)) ** self._exponent

    def sample_one(self, key: int, counter: int) -> float:
        return self.scale * (1.0 - uniform(key, counter)) ** self._exponent


class FromList:
    """Deterministic twin: draw number ``counter`` is ``values[counter % len(values)]`` (the key is
    ignored). Moments are those of the list taken as equally likely values."""

    def __init__(self, values: list[float]) -> None:
        self.values = [float(v) for v in values]
        self._array = np.asarray(self.values, dtype=np.float64)
        self.mean = float(self._array.mean())
        self.variance = float(self._array.var())
        self.constant: float | None = self.values[0] if len(set(self.values)) == 1 else None

    def sample(self, keys: npt.ArrayLike, counters: npt.ArrayLike) -> Floats:
        c = np.broadcast_to(np.asarray(counters, dtype=np.int64), _shape(keys, counters))
        return self._array[c % len(self.values)]

    def sample_one(self, key: int, counter: int) -> float:
        return self.values[counter % len(self.values)]


DistConfig = ConstantDist | UniformDist | ExponentialDist | LognormalDist | ParetoDist | FromListDist

DistBuilder = Callable[[Any], Distribution]
"""builder(cfg) -> Distribution; ``cfg`` is the mapping's config model (``{dist: ..., ...}``)."""

DISTRIBUTIONS: Registry[DistBuilder] = Registry("distribution", "dist", plugin_part="build")
"""``dist`` names -> builders; plug-ins of entry-point group ``asyncfl.delays`` join it. The
config models are in :data:`asyncfl.config.schema.DIST_CONFIGS` under the same names."""
DISTRIBUTIONS.add("constant", lambda c: Constant(c.value))
DISTRIBUTIONS.add("uniform", lambda c: Uniform(c.low, c.high))
DISTRIBUTIONS.add("exponential", lambda c: Exponential(c.mean))
DISTRIBUTIONS.add("lognormal", lambda c: Lognormal(c.mean, c.sigma))
DISTRIBUTIONS.add("pareto", lambda c: Pareto(c.shape, c.scale))
DISTRIBUTIONS.add("from_list", lambda c: FromList(list(c.values)))


def make_distribution(cfg: DistConfig) -> Distribution:
    """The distribution a scenario config (``{dist: ..., ...}``) describes."""
    if not isinstance(cfg, DistBase):
        raise TypeError(f"not a distribution config: {cfg!r}")
    return DISTRIBUTIONS.get(cfg.dist)(cfg)


__all__ = [
    "DISTRIBUTIONS",
    "Constant",
    "DistBuilder",
    "Distribution",
    "Exponential",
    "FromList",
    "Lognormal",
    "Pareto",
    "Uniform",
    "make_distribution",
]
