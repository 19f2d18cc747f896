"""Staleness weights s(tau), in pure Python.

The server multiplies an update of staleness tau by s(tau) in (0, 1]; each weight is a function of
that update's own tau only (never a product accumulated over updates). tau = V - b: server steps
made since the client pulled its model, 0 for a fresh update.

- constant:    s(tau) = 1
- polynomial:  s_a(tau) = (tau + 1)^(-a)                     (FedAsync; FedBuff's 1/sqrt(1 + tau) at a = 1/2)
- hinge:       s_{a,b}(tau) = 1 if tau <= b else 1 / (a (tau - b) + 1)   (FedAsync)
- exponential: s_a(tau) = exp(-a tau)                        (not from FedAsync; a common choice)

Convention: FedAsync (Xie, Koyejo, Gupta 2019, Sec. 5.2) writes s(t - tau) at its epoch t, where
a fresh update has t - tau = 1, so their s(t - tau) is this module's s at tau + 1 for the same
update. Here, as in FedBuff, FedLab and Plato, a fresh update has tau = 0 and weight 1. In
FedAsync's counting the hinge's b is one larger, and its polynomial would read (tau + 2)^(-a).

In float64, exp(-a tau) underflows to 0 once a tau exceeds ~745: such an update is applied with
weight 0 (a server step that leaves the model where it was, as the formula says to rounding).
Bound tau (``server.max_staleness``) to drop such updates instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from asyncfl.config.schema import ConstantWeight, ExponentialWeight, HingeWeight, PolynomialWeight

WeightFn = Callable[[int], float]


def constant() -> WeightFn:
    return lambda tau: 1.0


def polynomial(a: float) -> WeightFn:
    return lambda tau: (tau + 1.0) ** (-a)


def hinge(a: float, b: int) -> WeightFn:
    return lambda tau: 1.0 if tau <= b else 1.0 / (a * (tau - b) + 1.0)


def exponential(a: float) -> WeightFn:
    return lambda tau: math.exp(-a * tau)


def weight_fn(cfg: ConstantWeight | PolynomialWeight | HingeWeight | ExponentialWeight) -> WeightFn:
    """s(tau) for a ``server.staleness_weight`` config."""
    if isinstance(cfg, PolynomialWeight):
        return polynomial(cfg.a)
    if isinstance(cfg, HingeWeight):
        return hinge(cfg.a, cfg.b)
    if isinstance(cfg, ExponentialWeight):
        return exponential(cfg.a)
    return constant()


__all__ = ["WeightFn", "constant", "exponential", "hinge", "polynomial", "weight_fn"]
