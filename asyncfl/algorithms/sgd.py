"""Local SGD, the client rule of the non-personalized baselines: FedAvg, FedAsync, FedBuff, local.

- FedAvg: McMahan, Moore, Ramage, Hampson, Aguera y Arcas, "Communication-Efficient Learning of
  Deep Networks from Decentralized Data", AISTATS 2017 (ClientUpdate, Algorithm 1).
- FedAsync: Xie, Koyejo, Gupta, "Asynchronous Federated Optimization", arXiv:1903.03934, 2019
  (the worker runs local SGD from the stale model x_tau on g_{x_tau}(x; z) = f(x; z) +
  rho/2 ||x - x_tau||^2, ``prox`` = rho; the server mixes x <- (1 - a_t) x + a_t x_new with
  a_t = a s(t - tau)).
- FedBuff: Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba, "Federated Learning with
  Buffered Asynchronous Aggregation", AISTATS 2022 (the client sends Delta = y_0 - y_Q after Q local
  SGD steps and the server subtracts the mean of K staleness-weighted Deltas; here Delta has the
  opposite sign and is added, which is the same step).
- local: each client trains alone on its own data (no server model).

Client rule (the same for all four), with S = ``local_steps``, eta_l = ``lr``, mu = ``weight_decay``,
rho = ``prox`` and one fresh minibatch D_s of B = ``batch_size`` samples per step (D = 1 draw per
step)::

    w_0 = x                                    (the model the client pulled)
    w_{s+1} = w_s - eta_l (grad f_i(w_s; D_s) + mu w_s + rho (w_s - w_0)),   s = 0, ..., S - 1
    send Delta = w_S - w_0

The four names differ only in how the server uses Delta (``server_rule``): ``delta`` (FedAvg,
FedBuff: x <- x + sum_k c_k Delta_k), ``mixing`` (FedAsync: the client model x_k = w_0 + Delta_k is
mixed into the current x), ``none`` (local). Personalized evaluation of this family
(Jiang, Konecny, Rush, Kannan, "Improving Federated Learning Personalization via Model Agnostic
Meta Learning", 2019: fine-tuned FedAvg is a strong baseline): ``adapt_steps`` full-batch
gradient steps of step eta_l on the client's TRAINING data, without weight decay; the convergence
measure is grad f_i(w) of the plain average loss f = (1/n) sum_i f_i.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from asyncfl.algorithms.base import Batches, Rule, ServerRule, check_batches, samples_per_draw
from asyncfl.algorithms.functional import gradient_descent, loss_grad
from asyncfl.config.schema import FedAsyncConfig, FedAvgConfig, FedBuffConfig, LocalConfig, SGDHyper
from asyncfl.models.base import LossFn


class LocalSGD(SGDHyper, Rule):
    """S = ``local_steps`` steps of w <- w - lr (grad f_i(w; D_s) + weight_decay w + prox (w - w_0));
    sends w_S - w_0. Hyperparameters (lr, local_steps, batch_size, weight_decay, prox): those of
    :class:`~asyncfl.config.schema.SGDHyper`, with their meanings and units there."""

    server_rule: ClassVar[ServerRule] = "delta"
    personal_step: ClassVar[str | None] = "lr"  # fine-tuning with the client step

    @property
    def steps(self) -> int:
        """S = local_steps."""
        return self.local_steps

    @property
    def draws_per_step(self) -> int:
        """One minibatch per step."""
        return 1

    def work(self, n_samples: int) -> float:
        """S min(B, n) per-sample gradient evaluations (B = n when batch_size is None)."""
        return float(self.local_steps * samples_per_draw(self.batch_size, n_samples))

    def client_update(self, loss: LossFn, w: Tensor, batches: Batches) -> Tensor:
        """Delta = w_S - w_0 after S local SGD steps, one minibatch (draw 0) per step."""
        check_batches(batches, self.steps, self.draws_per_step)
        w0 = w
        for s in range(self.local_steps):
            x, y, m = batches.draw(s, 0)
            g = loss_grad(loss, w, x, y, m)
            if self.weight_decay:
                g = g + self.weight_decay * w
            if self.prox:
                g = g + self.prox * (w - w0)
            w = w - self.lr * g
        return w - w0

    def personalize(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor, adapt_steps: int) -> Tensor:
        """Fine-tuning: ``adapt_steps`` full-batch gradient steps of step lr on the training data."""
        return gradient_descent(loss, w, x, y, m, self.lr, adapt_steps)

    def objective_grad(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        """grad f_i(w) on the full training data (the plain average loss has no personalization)."""
        return loss_grad(loss, w, x, y, m)


class FedAvg(LocalSGD, FedAvgConfig):
    """FedAvg (McMahan et al. 2017): local SGD; the server adds the weighted mean of the Deltas."""

    server_rule: ClassVar[ServerRule] = "delta"


class FedAsync(LocalSGD, FedAsyncConfig):
    """FedAsync (Xie et al. 2019): local SGD; the server mixes x <- (1 - a_t) x + a_t x_client."""

    server_rule: ClassVar[ServerRule] = "mixing"


class FedBuff(LocalSGD, FedBuffConfig):
    """FedBuff (Nguyen et al. 2022): local SGD; the server adds eta_g (1/K) sum_k s(tau_k) Delta_k."""

    server_rule: ClassVar[ServerRule] = "delta"


class Local(LocalSGD, LocalConfig):
    """Local training only: every client keeps its own model; nothing is sent to a server."""

    server_rule: ClassVar[ServerRule] = "none"


__all__ = ["FedAsync", "FedAvg", "FedBuff", "Local", "LocalSGD"]
