"""Server steps as pure functions of flat parameter vectors.

One server step takes K client results (K = 1 for FedAsync / async, K = buffer_size for FedBuff /
buffered, the round's cohort for sync) and their staleness weights s(tau_k) in (0, 1] (see
:mod:`asyncfl.sim.staleness`; each weight is a function of that update's own tau_k only), and
applies one of two rules:

- ``delta`` (FedAvg, FedBuff, Per-FedAvg, pFedMe)::

      x <- x + sum_k c_k Delta_k,          Delta_k = w_k - w_{k,0} (the client's model change)

- ``mixing`` (FedAsync: Xie, Koyejo, Gupta 2019, x_t = (1 - alpha_t) x_{t-1} + alpha_t x_new)::

      x <- x + sum_k c_k (x_k - x),        x_k = w_{k,0} + Delta_k (the client's final model)

  which for one update is (1 - c) x + c x_client.

with coefficients (:func:`step_coefficients`), for the m updates of one step::

      c_k = eta_g s(tau_k) p_k,     p_k = (m / K) n_k / sum_j n_j   (server.aggregation = samples)
                                    p_k = 1 / K                     (server.aggregation = uniform)

where eta_g = ``server.lr``, n_k the client's training-set size (the sum over the step's m
updates) and K the number of updates a step is made for: the round's arrivals m (sync), the
buffer size (buffered) or 1 (async). Each update thus carries eta_g s(tau_k) / K on average. A
step holds m = K updates except under policy ``wait``, where the updates that waited for a slow
client are applied together: async then applies each at full weight (delta: their sum; mixing:
one mix after another, in arrival order, :func:`sequential_mixing_step`), as FedAsync and
PersA-FL apply every update, and buffered gives each its 1/K share, as FedBuff does.
``aggregation: auto`` (the default) is ``samples`` for sync (FedAvg) and ``uniform`` otherwise
(FedBuff's 1/K). Special cases:

- FedAvg (McMahan et al. 2017), sync: eta_g = 1, s = 1, samples: x + sum_k (n_k / n) Delta_k.
- FedAsync (Xie et al. 2019), K = 1: c = a s(tau) = alpha_t with a = ``server.lr`` (keep a <= 1 for a
  convex combination).
- FedBuff (Nguyen et al. 2022, Algorithm 1): x <- x + eta_g (1/K) sum_k s(tau_k) Delta_k is the
  ``uniform`` aggregation (their Delta has the opposite sign: x - eta_g Delta_bar).
- pFedMe (Dinh et al. 2020), sync: x <- (1 - beta) x + beta (1/S) sum_i w_i equals
  x + beta (1/S) sum_i Delta_i when every client started from x: ``delta`` with beta = ``server.lr``,
  ``uniform`` (or ``samples`` for the authors' code, which weighs by training-set size).
- PersA-FL (Toghani et al. 2022): the personalized client rules under an async / buffered server:
  the same ``delta`` rule with K = 1 or K = buffer_size.
- ``none`` (local training): all coefficients are 0; there is no shared model to move.

:class:`ServerStep` is this rule as one object, built from the scenario's ``server`` keys and the
client rule's ``server_rule``; runs use it through :func:`asyncfl.runs.server_rule.server_rule`
(with the engine's half, :class:`asyncfl.sim.policy.ServerPolicy`). Adding a step kind: one
function below and one line in :data:`STEPS` (its name a member of
:data:`asyncfl.algorithms.base.ServerRule`; a kind without its function fails at import).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import get_args

import torch
from torch import Tensor

from asyncfl.algorithms.base import ServerRule
from asyncfl.config.schema import ServerConfig
from asyncfl.registry import Registry


def _as_coeffs(coeffs: Tensor | Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(coeffs, dtype=like.dtype, device=like.device)


def delta_step(x: Tensor, deltas: Tensor, coeffs: Tensor | Sequence[float]) -> Tensor:
    """x + sum_k coeffs_k deltas_k. ``x`` [P], ``deltas`` [K, P], ``coeffs`` [K]; returns a new [P]."""
    return x + _as_coeffs(coeffs, x) @ deltas


def mixing_step(x: Tensor, client_models: Tensor, coeffs: Tensor | Sequence[float]) -> Tensor:
    """x + sum_k coeffs_k (x_k - x). ``client_models`` [K, P] are the clients' final models
    x_k = (pulled model) + Delta_k, not their deltas. One update: (1 - c) x + c x_client."""
    c = _as_coeffs(coeffs, x)
    return x + c @ (client_models - x)


def aggregation(server: ServerConfig) -> str:
    """``server.aggregation`` with ``auto`` resolved: ``samples`` for sync, else ``uniform``."""
    if server.aggregation != "auto":
        return server.aggregation
    return "samples" if server.mode == "sync" else "uniform"


def updates_per_step(server: ServerConfig, m: int) -> int:
    """K, the number of updates a step is made for: the round's m arrivals (sync), the buffer
    size (buffered) or 1 (async)."""
    if server.mode == "sync":
        return m
    return server.buffer_size if server.mode == "buffered" else 1


def step_coefficients(
    server: ServerConfig,
    weights: Sequence[float],
    sample_counts: Sequence[float],
    rule: ServerRule = "delta",
) -> list[float]:
    """c_k = server.lr * s(tau_k) * p_k for the m updates of one server step (module docstring).

    ``weights``: s(tau_k) per update; ``sample_counts``: n_k, the updating clients' training-set
    sizes (used by ``samples`` aggregation; all-zero counts fall back to uniform); ``rule``: the
    client rule's ``server_rule`` (``delta`` and ``mixing`` share the formula; ``none`` gives
    zeros). Returns m Python floats."""
    m = len(weights)
    if len(sample_counts) != m:
        raise ValueError(f"{m} weights but {len(sample_counts)} sample counts")
    if m == 0 or rule == "none":
        return [0.0] * m
    share = m / updates_per_step(server, m)  # 1.0 exactly unless a wait step holds m != K updates
    total = float(sum(sample_counts))
    if aggregation(server) == "samples" and total > 0:
        p = [float(n) / total * share for n in sample_counts]
    else:
        p = [1.0 / m * share] * m
    return [server.lr * float(s) * pk for s, pk in zip(weights, p, strict=True)]


def sequential_mixing_step(x: Tensor, client_models: Tensor, coeffs: Tensor | Sequence[float]) -> Tensor:
    """One mix after another, in order: x <- x + c_k (x_k - x) for k = 1..m (FedAsync's updater
    applying m arrivals one at a time). Equals :func:`mixing_step` for m = 1."""
    c = _as_coeffs(coeffs, x)
    for k in range(client_models.shape[0]):
        x = x + c[k] * (client_models[k] - x)
    return x


def apply_step(
    rule: ServerRule, x: Tensor, deltas: Tensor, bases: Tensor | None, coeffs: Tensor | Sequence[float]
) -> Tensor:
    """One server step for any rule: ``delta`` uses ``deltas``; ``mixing`` mixes in the client
    models ``bases + deltas`` (``bases`` [K, P] or [P]: the models the clients pulled; required);
    ``none`` returns ``x`` unchanged."""
    return STEPS.get(rule).fn(x, deltas, bases, coeffs, False)


# ------------------------------------------------------------------------------------------------
# the step kinds and the server step as one object
# ------------------------------------------------------------------------------------------------

Coeffs = Tensor | Sequence[float]
StepFn = Callable[[Tensor, Tensor, Tensor | None, Coeffs, bool], Tensor]
"""(x, deltas [m, P], bases [m, P] or None, coeffs [m], one_at_a_time) -> the new x."""


@dataclass(frozen=True, slots=True)
class StepKind:
    """A server step rule: ``fn`` (see :data:`StepFn`); ``needs_bases``: whether it needs the
    models the clients pulled (the backend stacks them only then)."""

    fn: StepFn
    needs_bases: bool = False


def _delta(x: Tensor, deltas: Tensor, bases: Tensor | None, coeffs: Coeffs, one_at_a_time: bool) -> Tensor:
    return delta_step(x, deltas, coeffs)  # one at a time or together: the same sum


def _mixing(x: Tensor, deltas: Tensor, bases: Tensor | None, coeffs: Coeffs, one_at_a_time: bool) -> Tensor:
    if bases is None:
        raise ValueError("mixing needs the models the clients pulled (bases)")
    if one_at_a_time:
        return sequential_mixing_step(x, bases + deltas, coeffs)
    return mixing_step(x, bases + deltas, coeffs)


def _none(x: Tensor, deltas: Tensor, bases: Tensor | None, coeffs: Coeffs, one_at_a_time: bool) -> Tensor:
    return x


STEPS: Registry[StepKind] = Registry("server step", "algorithm.name")
STEPS.add("delta", StepKind(_delta))
STEPS.add("mixing", StepKind(_mixing, needs_bases=True))
STEPS.add("none", StepKind(_none))

if set(STEPS.names()) != set(get_args(ServerRule)):
    raise ImportError(f"server steps {STEPS.names()} differ from ServerRule {sorted(get_args(ServerRule))}")


@dataclass(frozen=True)
class ServerStep:
    """One server step as the scenario describes it: ``x <- step(x, updates, c)`` with
    c_k = lr s(tau_k) p_k (module docstring). ``kind``: the client rule's ``server_rule``;
    ``config``: the ``server`` section (mode, lr, aggregation, buffer_size)."""

    config: ServerConfig
    kind: ServerRule

    @classmethod
    def from_config(cls, server: ServerConfig, kind: ServerRule) -> ServerStep:
        STEPS.get(kind)  # an unknown kind fails here, at build time
        return cls(server, kind)

    @property
    def rule(self) -> StepKind:
        return STEPS.get(self.kind)

    @property
    def lr(self) -> float:
        return self.config.lr

    @property
    def needs_bases(self) -> bool:
        return self.rule.needs_bases

    def coefficients(self, weights: Sequence[float], sample_counts: Sequence[float]) -> list[float]:
        """c_k for the m updates of one step (:func:`step_coefficients`)."""
        return step_coefficients(self.config, weights, sample_counts, self.kind)

    def one_at_a_time(self, m: int) -> bool:
        """Are the step's m updates applied one after the other? Async under policy wait applies
        the updates that waited each as its own FedAsync step (m > 1 only then)."""
        return self.config.mode == "async" and m > 1

    def __call__(self, x: Tensor, deltas: Tensor, bases: Tensor | None, coeffs: Tensor | Sequence[float]) -> Tensor:
        """The new server model from ``x``, the m updates' ``deltas`` [m, P], the models they
        pulled ``bases`` [m, P] (needed when :attr:`needs_bases`) and their coefficients."""
        return self.rule.fn(x, deltas, bases, coeffs, self.one_at_a_time(deltas.shape[0]))


__all__ = [
    "STEPS",
    "ServerStep",
    "StepKind",
    "aggregation",
    "apply_step",
    "delta_step",
    "mixing_step",
    "sequential_mixing_step",
    "step_coefficients",
    "updates_per_step",
]
