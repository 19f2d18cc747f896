"""The client-rule interface: pure torch.func functions of a flat parameter vector.

A client rule turns (w, the client's minibatches) into the update it sends. It is written for ONE
client; the executor vmaps it over many. So a rule must be vmappable: no ``.item()``, no data-
dependent Python control flow, no in-place ops on inputs. Randomness never happens inside a rule:
the executor draws all minibatches up front from the client's own stream (see ``Batches``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel
from torch import Tensor

from asyncfl.config.schema import AlgorithmBase
from asyncfl.models.base import LossFn

ServerRule = Literal["delta", "mixing", "none"]
_R = TypeVar("_R", bound="Rule")


@dataclass(frozen=True)
class Batches:
    """One client's minibatches for one task: S local steps, D draws per step, B samples each.

    x: [S, D, B, *features]; y: [S, D, B]; m: [S, D, B] per-sample weights (0 = padding, used when
    a client has fewer than B samples or for full-batch steps)."""

    x: Tensor
    y: Tensor
    m: Tensor

    def draw(self, step: int, d: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.x[step, d], self.y[step, d], self.m[step, d]


class ClientRule(Protocol):
    """What the executor and evaluator need from an algorithm.

    ``server_rule``: ``delta`` (x += sum c_k delta_k), ``mixing`` (FedAsync: x += sum c_k
    (x_client_k - x)), ``none`` (local training, no shared model). ``personal_step``: the field
    holding the step of :meth:`personalize`'s gradient steps (``alpha`` for the MAML family, ``lr``
    for fine-tuning the non-personalized rules), or None where personalization has no step (pFedMe
    solves theta_i(w)); ``eval.adapt_lr`` overrides that field for scoring only."""

    server_rule: ClassVar[ServerRule]
    personal_step: ClassVar[str | None]

    @property
    def steps(self) -> int:
        """S: local steps (or local rounds) per task."""
        ...

    @property
    def draws_per_step(self) -> int:
        """D: independent minibatches per local step (Per-FedAvg: 3)."""
        ...

    @property
    def batch_size(self) -> int | None:
        """B, or None for the client's full training set each step."""
        ...

    def work(self, n_samples: int) -> float:
        """Per-sample gradient evaluations one task costs a client holding ``n_samples``; the
        system model turns it into compute seconds (work / speed)."""
        ...

    def client_update(self, loss: LossFn, w: Tensor, batches: Batches) -> Tensor:
        """The update the client sends: its model delta (w_local - w), shape [P]."""
        ...

    def personalize(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor, adapt_steps: int) -> Tensor:
        """The client's personalised model from server model ``w`` and its TRAINING data."""
        ...

    def objective_grad(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        """grad F_i(w) of the objective the paper analyses, exact autograd, full training data."""
        ...


class Rule(AlgorithmBase):
    """Base of the rule classes that subclass their own config model (``class FedAvg(LocalSGD,
    FedAvgConfig)``): the hyperparameters are the config's fields, written once in
    :mod:`asyncfl.config.schema`; a rule instance is a validated, immutable config with methods."""

    @classmethod
    def from_config(cls: type[_R], cfg: BaseModel) -> _R:
        """The rule bound to a scenario's ``algorithm`` mapping (its config model's instance)."""
        return cls.model_validate(cfg.model_dump())


def samples_per_draw(batch_size: int | None, n_samples: int) -> int:
    """Samples in one minibatch of a client holding ``n_samples``: min(B, n), or n when B is None
    (full-batch steps). The unit of :meth:`ClientRule.work`."""
    return n_samples if batch_size is None else min(batch_size, n_samples)


def check_batches(batches: Batches, steps: int, draws_per_step: int) -> None:
    """Raise ValueError unless ``batches`` holds at least ``steps`` x ``draws_per_step`` draws and
    x, y, m agree on [S, D, B]. Shape checks only, so it is safe under vmap (static shapes)."""
    x, y, m = batches.x, batches.y, batches.m
    if y.dim() != 3 or m.shape != y.shape or tuple(x.shape[:3]) != tuple(y.shape):
        raise ValueError(
            f"Batches must be x [S, D, B, ...], y and m [S, D, B]; got x {tuple(x.shape)}, "
            f"y {tuple(y.shape)}, m {tuple(m.shape)}"
        )
    if y.shape[0] < steps or y.shape[1] < draws_per_step:
        raise ValueError(
            f"Batches hold {y.shape[0]} steps x {y.shape[1]} draws; the rule needs {steps} x {draws_per_step}"
        )


__all__ = ["Batches", "ClientRule", "Rule", "ServerRule", "check_batches", "samples_per_draw"]
