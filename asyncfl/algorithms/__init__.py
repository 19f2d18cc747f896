"""Client rules and server updates as pure torch.func functions. No simpy here.

- :mod:`.base`: the :class:`ClientRule` protocol and :class:`Batches`.
- :mod:`.sgd`: local SGD for FedAvg, FedAsync, FedBuff and local training.
- :mod:`.per_fedavg`: Per-FedAvg (MAML; fo | hf | exact).
- :mod:`.pfedme`: pFedMe (Moreau envelope).
- :mod:`.server`: server steps (delta and mixing) and their coefficients.
- :mod:`.evaluation`: personalized evaluation and ||grad F(w)||^2, vmapped over clients.
- :mod:`.registry`: ``algorithm.name`` -> rule class; :func:`build_rule`.
"""

from asyncfl.algorithms.base import Batches, ClientRule, Rule, ServerRule
from asyncfl.algorithms.evaluation import evaluate, evaluate_client_models, personalized_models
from asyncfl.algorithms.per_fedavg import PerFedAvg
from asyncfl.algorithms.pfedme import PFedMe
from asyncfl.algorithms.registry import ALGORITHMS, build_rule
from asyncfl.algorithms.server import apply_step, delta_step, mixing_step, step_coefficients
from asyncfl.algorithms.sgd import FedAsync, FedAvg, FedBuff, Local, LocalSGD

__all__ = [
    "ALGORITHMS",
    "Batches",
    "ClientRule",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "Local",
    "LocalSGD",
    "PFedMe",
    "PerFedAvg",
    "Rule",
    "ServerRule",
    "apply_step",
    "build_rule",
    "delta_step",
    "evaluate",
    "evaluate_client_models",
    "mixing_step",
    "personalized_models",
    "step_coefficients",
]
