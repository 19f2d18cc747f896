"""Staleness weights s(tau), in pure Python, one function and one registry line each.

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

Adding a weight: its config class in :mod:`asyncfl.config.schema` (a subclass of
``StalenessWeightBase`` listed in ``WEIGHT_UNION.register``) and here one function registered
under the same ``name``: ``WEIGHTS.add(name, fn)`` with ``fn(cfg) -> (tau -> s(tau))``. A schema
member without a registered function (or the reverse) fails when this module is imported, never
silently at run time; a plug-in (entry-point group ``asyncfl.staleness_weights``) brings both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from asyncfl.config.schema import WEIGHT_CONFIGS, ConstantWeight, StalenessWeight
from asyncfl.registry import Registry

WeightFn = Callable[[int], float]

WEIGHTS: Registry[Callable[[Any], WeightFn]] = Registry(
    "staleness weight", "server.staleness_weight.name", plugin_part="build"
)
"""name -> (its config -> s(tau)); plug-ins of entry-point group ``asyncfl.staleness_weights`` join."""


@WEIGHTS.register("constant")
def constant(cfg: ConstantWeight | None = None) -> WeightFn:
    return lambda tau: 1.0


def polynomial(a: float) -> WeightFn:
    return lambda tau: (tau + 1.0) ** (-a)


def hinge(a: float, b: int) -> WeightFn:
    return lambda tau: 1.0 if tau <= b else 1.0 / (a * (tau - b) + 1.0)


def exponential(a: float) -> WeightFn:
    return lambda tau: math.exp(-a * tau)


WEIGHTS.add("polynomial", lambda cfg: polynomial(cfg.a))
WEIGHTS.add("hinge", lambda cfg: hinge(cfg.a, cfg.b))
WEIGHTS.add("exponential", lambda cfg: exponential(cfg.a))


def weight_fn(cfg: StalenessWeight) -> WeightFn:
    """s(tau) for a ``server.staleness_weight`` config (looked up by its ``name``)."""
    return WEIGHTS.get(cfg.name)(cfg)


def schema_names() -> set[str]:
    """The weight names the scenario schema accepts (registered in ``WEIGHT_CONFIGS``; plug-ins
    are not loaded for this)."""
    return set(WEIGHT_CONFIGS.own_names())


def _check_complete() -> None:
    """The schema's names and the registered ones agree (run at import; tests call it after an
    in-process registration)."""
    WEIGHTS.check_same_names(WEIGHT_CONFIGS, "asyncfl.sim.staleness")


_check_complete()

__all__ = ["WEIGHTS", "WeightFn", "constant", "exponential", "hinge", "polynomial", "schema_names", "weight_fn"]
