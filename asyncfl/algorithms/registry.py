"""The algorithm registry: ``algorithm.name`` -> client-rule class, and :func:`build_rule`.

Names: fedavg, fedasync, fedbuff, local (local SGD), per_fedavg (variants fo | hf | exact),
pfedme, plus plug-ins of entry-point group ``asyncfl.algorithms``. A registered class has a
``server_rule`` class attribute and a ``from_config(cfg)`` constructor; its config model (the
scenario's ``algorithm`` mapping) is registered in :data:`asyncfl.config.schema.ALGORITHM_CONFIGS`
under the same name. The built-in rules subclass their config model (:class:`~.base.Rule`), so
each hyperparameter is written once, in the schema.
"""

from __future__ import annotations

from typing import Any, Protocol

from asyncfl.algorithms.base import ClientRule, ServerRule
from asyncfl.algorithms.per_fedavg import PerFedAvg
from asyncfl.algorithms.pfedme import PFedMe
from asyncfl.algorithms.sgd import FedAsync, FedAvg, FedBuff, Local
from asyncfl.config.schema import AlgorithmConfig
from asyncfl.registry import Registry


class RuleClass(Protocol):
    """A client-rule class as registered: its server rule and its config constructor."""

    @property
    def server_rule(self) -> ServerRule: ...

    def from_config(self, cfg: Any) -> ClientRule: ...


ALGORITHMS: Registry[RuleClass] = Registry("algorithm", "algorithm.name", plugin_part="build")
ALGORITHMS.add("fedavg", FedAvg)
ALGORITHMS.add("fedasync", FedAsync)
ALGORITHMS.add("fedbuff", FedBuff)
ALGORITHMS.add("local", Local)
ALGORITHMS.add("per_fedavg", PerFedAvg)
ALGORITHMS.add("pfedme", PFedMe)


def build_rule(cfg: AlgorithmConfig) -> ClientRule:
    """The client rule for an ``algorithm`` config block, hyperparameters bound.

    Raises :class:`~asyncfl.errors.ScenarioError` (key ``algorithm.name``) for an unknown name."""
    cls = ALGORITHMS.get(cfg.name)
    rule: ClientRule = cls.from_config(cfg)
    return rule


__all__ = ["ALGORITHMS", "RuleClass", "build_rule"]
