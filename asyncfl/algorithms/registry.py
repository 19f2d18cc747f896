"""The algorithm registry: ``algorithm.name`` -> client-rule class, and :func:`build_rule`.

Names: fedavg, fedasync, fedbuff, local (local SGD), per_fedavg (variants fo | hf | exact),
pfedme. Every registered class has ``name``, ``family``, ``server_rule`` class attributes and a
``from_config(cfg)`` constructor that binds the hyperparameters of its ``algorithm`` block.
"""

from __future__ import annotations

from typing import Any, Protocol

from asyncfl.algorithms.base import ClientRule, Family, ServerRule
from asyncfl.algorithms.per_fedavg import PerFedAvg
from asyncfl.algorithms.pfedme import PFedMe
from asyncfl.algorithms.sgd import FedAsync, FedAvg, FedBuff, Local
from asyncfl.config.schema import AlgorithmConfig
from asyncfl.registry import Registry


class RuleClass(Protocol):
    """A client-rule class as registered: its class attributes and its config constructor."""

    @property
    def name(self) -> str: ...
    @property
    def family(self) -> Family: ...
    @property
    def server_rule(self) -> ServerRule: ...

    def from_config(self, cfg: Any) -> ClientRule: ...


ALGORITHMS: Registry[RuleClass] = Registry("algorithm", "algorithm.name")
for _cls in (FedAvg, FedAsync, FedBuff, Local, PerFedAvg, PFedMe):
    ALGORITHMS.add(_cls.name, _cls)


def build_rule(cfg: AlgorithmConfig) -> ClientRule:
    """The client rule for an ``algorithm`` config block, hyperparameters bound.

    Raises :class:`~asyncfl.errors.ScenarioError` (key ``algorithm.name``) for an unknown name."""
    cls = ALGORITHMS.get(cfg.name)
    rule: ClientRule = cls.from_config(cfg)
    return rule


__all__ = ["ALGORITHMS", "RuleClass", "build_rule"]
