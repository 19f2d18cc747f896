"""pFedMe: personalized FL with Moreau envelopes (the Moreau framework of PersA-FL).

Dinh, Tran, Nguyen, "Personalized Federated Learning with Moreau Envelopes", NeurIPS 2020
(Algorithm 1); used as the Moreau-envelope client of PersA-FL: Toghani, Lee, Uribe, "PersA-FL:
Personalized Asynchronous Federated Learning", arXiv:2210.01176, 2022.

Objective (client i, regularization lambda): the Moreau envelope

    F_i(w) = min_theta { f_i(theta) + lambda/2 ||theta - w||^2 },   F = (1/n) sum_i F_i,
    theta_i(w) = argmin of the above (client i's personalized model),
    grad F_i(w) = lambda (w - theta_i(w)).

Client rule, for local rounds r = 0, ..., R - 1 (R = ``local_rounds``), each with one fresh
minibatch D_r of B = ``batch_size`` samples, K = ``inner_steps``, personal step p = ``personal_lr``,
local step eta and weight decay mu (``weight_decay``)::

    theta^0 = w_r
    theta^{k+1} = theta^k - p (grad f_i(theta^k; D_r) + lambda (theta^k - w_r) + mu theta^k),
                  k = 0, ..., K - 1                      (theta_tilde ~ theta_i(w_r) on D_r)
    w_{r+1} = w_r - eta lambda (w_r - theta^K)
    send Delta = w_R - w_0

Choice documented: the paper's Algorithm 1 only asks that theta_tilde solve the inner problem to
accuracy nu and leaves its starting point open; we start every round's inner solve at theta^0 = w_r,
the point the inner objective is centred on. (The authors' code instead warm-starts theta from the
previous round's personal model, initialised at the server model; the two coincide for R = 1.)
``weight_decay`` is the reference code's extra mu/2 ||theta||^2 (it uses mu = 0.001); default 0.
The sync server's mixing x <- (1 - beta) x + beta mean_i(w_i) is ``server.delta_step`` with
beta = ``server.lr``.

Personalized evaluation solves the inner problem accurately on the client's full TRAINING data,
WITHOUT weight decay (the paper's F_i): gradient descent from theta = w with step
1 / (lambda + L_hat), L_hat = ||nabla^2 f_i(w) v|| after ``power_iters`` steps of power iteration
(an estimate of the largest |eigenvalue|), for max(K, ``eval_steps``) steps. For convex f_i this
contracts the error by at least 1 - lambda / (lambda + L) per step; with the defaults (100 steps)
the closed form theta* = (A + lambda I)^{-1} (A c + lambda w) of a quadratic with L / lambda <= 10 is
met to ~1e-4 relative, and to rounding for L / lambda <= 2.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from asyncfl.algorithms.base import Batches, Rule, ServerRule, check_batches, samples_per_draw
from asyncfl.algorithms.functional import curvature_bound, moreau_inner
from asyncfl.config.schema import PFedMeConfig, PositiveInt
from asyncfl.models.base import LossFn


class PFedMe(PFedMeConfig, Rule):
    """pFedMe client. Hyperparameters (lam, inner_steps, personal_lr, eta, local_rounds, batch_size,
    weight_decay): those of :class:`~asyncfl.config.schema.PFedMeConfig`. ``eval_steps`` /
    ``power_iters``: the evaluation solver's budget (the rule's own, not scenario keys)."""

    server_rule: ClassVar[ServerRule] = "delta"
    personal_step: ClassVar[str | None] = None  # theta_i(w) is solved, not stepped to

    eval_steps: PositiveInt = 100
    power_iters: PositiveInt = 10

    @property
    def steps(self) -> int:
        """S = local_rounds (R)."""
        return self.local_rounds

    @property
    def draws_per_step(self) -> int:
        """One minibatch per local round, reused by its K inner steps."""
        return 1

    def work(self, n_samples: int) -> float:
        """R K b per-sample gradient evaluations (the w step needs none), b = min(B, n)."""
        return float(self.local_rounds * self.inner_steps * samples_per_draw(self.batch_size, n_samples))

    def client_update(self, loss: LossFn, w: Tensor, batches: Batches) -> Tensor:
        """Delta = w_R - w_0 after R pFedMe local rounds."""
        check_batches(batches, self.steps, self.draws_per_step)
        w0 = w
        for r in range(self.local_rounds):
            x, y, m = batches.draw(r, 0)
            theta = moreau_inner(loss, w, x, y, m, self.lam, self.personal_lr, self.inner_steps, self.weight_decay)
            w = w - self.eta * self.lam * (w - theta)
        return w - w0

    def solve_theta(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        """theta_i(w) = argmin_theta f_i(theta) + lam/2 ||theta - w||^2 on (x, y, m), accurately
        (see the module docstring for the solver and its budget)."""
        curvature = curvature_bound(loss, w, x, y, m, self.power_iters)
        step = 1.0 / (self.lam + curvature)
        return moreau_inner(loss, w, x, y, m, self.lam, step, max(self.inner_steps, self.eval_steps))

    def personalize(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor, adapt_steps: int) -> Tensor:
        """theta_i(w) on the client's training data; ``adapt_steps`` does not apply (the Moreau
        family's personal model is the inner minimiser, not a few fine-tuning steps)."""
        return self.solve_theta(loss, w, x, y, m)

    def objective_grad(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        """grad F_i(w) = lam (w - theta_i(w)) on the full training data."""
        return self.lam * (w - self.solve_theta(loss, w, x, y, m))

    def personalize_and_objective_grad(
        self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor, adapt_steps: int
    ) -> tuple[Tensor, Tensor]:
        """(personalize, objective_grad) from ONE inner solve: the evaluator uses it when it
        scores every client and needs grad F as well (half the evaluation cost)."""
        theta = self.solve_theta(loss, w, x, y, m)
        return theta, self.lam * (w - theta)


__all__ = ["PFedMe"]
