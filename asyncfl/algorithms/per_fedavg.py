"""Per-FedAvg: personalized FL with model-agnostic meta-learning (the MAML framework of PersA-FL).

Fallah, Mokhtari, Ozdaglar, "Personalized Federated Learning with Theoretical Guarantees: A
Model-Agnostic Meta-Learning Approach", NeurIPS 2020 (Algorithm 1, Per-FedAvg (FO) and (HF));
used as the MAML client of PersA-FL: Toghani, Lee, Uribe, "PersA-FL: Personalized Asynchronous
Federated Learning", arXiv:2210.01176, 2022.

Objective (client i, step alpha): F_i(w) = f_i(w - alpha grad f_i(w)), F = (1/n) sum_i F_i, with
exact gradient grad F_i(w) = (I - alpha nabla^2 f_i(w)) grad f_i(w - alpha grad f_i(w)).

Client rule, for local steps t = 0, ..., S - 1 (S = ``local_steps``), each with three independent
minibatches D_t, D'_t, D''_t of B = ``batch_size`` samples from the client's own training data::

    w_tmp = w_t - alpha grad f_i(w_t; D_t)                      (inner, adaptation step)
    g     = grad f_i(w_tmp; D'_t)                               (outer gradient at w_tmp)
    fo:    w_{t+1} = w_t - beta g
    hf:    w_{t+1} = w_t - beta (g - alpha d_t),
           d_t = [grad f_i(w_t + delta g; D''_t) - grad f_i(w_t - delta g; D''_t)] / (2 delta)
    exact: w_{t+1} = w_t - beta (g - alpha nabla^2 f_i(w_t; D''_t) g)       (autograd HVP)
    send Delta = w_S - w_0

Points the literature gets wrong and this module does not: the Hessian(-vector product) is taken
at w_t (not at w_tmp) on its own batch D''_t (not D'_t); the beta step starts from w_t (w_tmp is
only a probe); the next local step chains from w_{t+1}, never from w_tmp. ``hf``'s central
difference equals ``exact`` up to O(delta^2) (and exactly, up to rounding, for a quadratic f_i).

Personalized evaluation: ``adapt_steps`` full-batch gradient steps of step alpha on the client's
TRAINING data; grad F_i(w) on the full training data by exact autograd through the inner step.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor
from torch.func import grad

from asyncfl.algorithms.base import Batches, Rule, ServerRule, check_batches, samples_per_draw
from asyncfl.algorithms.functional import gradient_descent, hvp, loss_grad
from asyncfl.config.schema import PerFedAvgConfig
from asyncfl.config.schema import PerFedAvgVariant as Variant
from asyncfl.models.base import LossFn


class PerFedAvg(PerFedAvgConfig, Rule):
    """Per-FedAvg client (variants fo | hf | exact). Hyperparameters (variant, alpha, beta, delta,
    local_steps, batch_size): those of :class:`~asyncfl.config.schema.PerFedAvgConfig`."""

    server_rule: ClassVar[ServerRule] = "delta"
    personal_step: ClassVar[str | None] = "alpha"

    @property
    def steps(self) -> int:
        """S = local_steps."""
        return self.local_steps

    @property
    def draws_per_step(self) -> int:
        """D, D' (and D'' for hf / exact): 2 for fo, 3 otherwise. Draw index 0 is D, 1 is D',
        2 is D''; fo never reads a third draw, so it is not drawn."""
        return 2 if self.variant == "fo" else 3

    def work(self, n_samples: int) -> float:
        """Per-sample gradient evaluations: per step, grad on D and on D' (fo: 2 S b); hf adds
        two gradients on D'' (4 S b); exact adds one reverse-over-reverse Hessian-vector product
        on D'', counted as two gradients (4 S b). b = min(B, n)."""
        per_step = 2 if self.variant == "fo" else 4
        return float(per_step * self.local_steps * samples_per_draw(self.batch_size, n_samples))

    def hessian_term(self, loss: LossFn, w: Tensor, g: Tensor, x2: Tensor, y2: Tensor, m2: Tensor) -> Tensor:
        """d ~ nabla^2 f_i(w; D'') g: central difference (hf) or exact autograd product (exact)."""
        if self.variant == "hf":
            gp = loss_grad(loss, w + self.delta * g, x2, y2, m2)
            gm = loss_grad(loss, w - self.delta * g, x2, y2, m2)
            return (gp - gm) / (2.0 * self.delta)
        return hvp(loss, w, g, x2, y2, m2)

    def local_step(self, loss: LossFn, w: Tensor, batches: Batches, t: int) -> Tensor:
        """w_{t+1} from w_t with the minibatches of step t (see the module docstring)."""
        x0, y0, m0 = batches.draw(t, 0)
        x1, y1, m1 = batches.draw(t, 1)
        w_tmp = w - self.alpha * loss_grad(loss, w, x0, y0, m0)
        g = loss_grad(loss, w_tmp, x1, y1, m1)
        if self.variant == "fo" or self.alpha == 0.0:
            return w - self.beta * g
        x2, y2, m2 = batches.draw(t, 2)
        d = self.hessian_term(loss, w, g, x2, y2, m2)
        return w - self.beta * (g - self.alpha * d)

    def client_update(self, loss: LossFn, w: Tensor, batches: Batches) -> Tensor:
        """Delta = w_S - w_0 after S Per-FedAvg local steps (chained from w_t, never w_tmp)."""
        check_batches(batches, self.steps, self.draws_per_step)
        w0 = w
        for t in range(self.local_steps):
            w = self.local_step(loss, w, batches, t)
        return w - w0

    def personalize(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor, adapt_steps: int) -> Tensor:
        """``adapt_steps`` full-batch gradient steps of step alpha on the client's training data
        (one step: w - alpha grad f_i(w), the model F_i scores)."""
        return gradient_descent(loss, w, x, y, m, self.alpha, adapt_steps)

    def objective_grad(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        """grad F_i(w), F_i(w) = f_i(w - alpha grad f_i(w)), by autograd through the inner step
        (full training data for both the inner and the outer f_i)."""
        alpha = self.alpha

        def meta_loss(v: Tensor) -> Tensor:
            return loss(v - alpha * grad(loss)(v, x, y, m), x, y, m)

        return grad(meta_loss)(w)


__all__ = ["PerFedAvg", "Variant"]
