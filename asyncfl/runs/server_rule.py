"""The server rule of a scenario as ONE object, composed from its ``server`` keys the way the
papers write it (FedAsync, FedBuff, FedAvg, PersA-FL)::

    on arrival of an update with staleness tau:          ServerPolicy (asyncfl.sim.policy)
        bound tau with the policy (drop it, or wait)        server.max_staleness, staleness_policy
        weight it by s(tau)                                 server.staleness_weight
        buffer it; with K buffered:                         server.mode, buffer_size
    server step:                                          ServerStep (asyncfl.algorithms.server)
        c_k = lr s(tau_k) p_k                               server.lr, server.aggregation
        x <- x + sum_k c_k Delta_k (delta)                  the client rule's server_rule
          or x + sum_k c_k (x_k - x) (mixing)

The engine asks ``policy`` what to do with an arrival; the backend asks ``step`` for the step.
Runs build both here (:func:`asyncfl.runs.runner.build`), and the server tests use this same
function. The two halves live in their layers (the simulator never imports torch).
"""

from __future__ import annotations

from typing import NamedTuple

from asyncfl.algorithms.base import ServerRule as StepKindName
from asyncfl.algorithms.server import ServerStep
from asyncfl.config.schema import ServerConfig
from asyncfl.sim.policy import ServerPolicy


class ServerRule(NamedTuple):
    """``policy``: what to do with an arrival (drop / weight / buffer / when to step);
    ``step``: the server step itself (lr, aggregation, delta or mixing)."""

    policy: ServerPolicy
    step: ServerStep


def server_rule(server: ServerConfig, kind: StepKindName) -> ServerRule:
    """The server rule of the ``server`` section for a client rule whose ``server_rule`` is
    ``kind`` (``delta``, ``mixing`` or ``none``)."""
    return ServerRule(ServerPolicy.from_config(server), ServerStep.from_config(server, kind))


__all__ = ["ServerRule", "server_rule"]
