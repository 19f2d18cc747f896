"""Client rules through the production loss against independent torch.autograd references,
with a different random minibatch for every local step and every draw.

tests/test_alg_rules.py pins the rules down with closed forms on a quadratic (full batches) and on
an MLP with alpha = 0 or one HF step. What it leaves open is checked here, on a small ELU MLP
(:func:`asyncfl.models.dense.mlp`) whose loss the client rules receive from
:func:`asyncfl.exec.executor.fast_loss`, i.e. the executor's :class:`~asyncfl.exec.executor.DenseLoss` with
its hand-written gradient (the exact variant's Hessian-vector product goes through torch.func on
the same DenseLoss forward):

- Per-FedAvg (Fallah, Mokhtari, Ozdaglar, NeurIPS 2020, Algorithm 1) with alpha > 0 over S local
  steps, each with its own three minibatches D_s, D'_s, D''_s (draws d = 0, 1, 2 of step s)::

      w~    = w_s - alpha grad f(w_s; D_s)
      g     = grad f(w~; D'_s)
      fo:     w_{s+1} = w_s - beta g
      exact:  w_{s+1} = w_s - beta (g - alpha H(w_s; D''_s) g)
      hf:     w_{s+1} = w_s - beta (g - alpha [grad f(w_s + delta g; D''_s)
                                               - grad f(w_s - delta g; D''_s)] / (2 delta))
      send w_S - w_0

  to 1e-12 (fo, exact) and 1e-10 (hf) in float64; hf is within O(delta^2) of exact.
- pFedMe (Dinh, Tran, Nguyen, NeurIPS 2020, Algorithm 1) over R local rounds, each with its own
  minibatch D_r, K inner steps from theta^0 = w_r (the convention asyncfl/algorithms/pfedme.py
  documents; the paper leaves the start open, the authors' code warm-starts)::

      theta^{k+1} = theta^k - p (grad f(theta^k; D_r) + lam (theta^k - w_r) + mu theta^k)
      w_{r+1}     = w_r - eta lam (w_r - theta^K)
      send w_R - w_0

- Local SGD of the FedAvg family (asyncfl/algorithms/sgd.py) with weight decay mu and FedAsync's
  proximal term rho (Xie et al. 2019, g(w) = f(w) + rho/2 ||w - w_0||^2)::

      w_{s+1} = w_s - lr (grad f(w_s; D_s) + mu w_s + rho (w_s - w_0)),   send w_S - w_0

- Per-FedAvg's evaluation pieces on a client's full (padded) training data:
  objective_grad = (I - alpha H(w)) grad f(w - alpha grad f(w)) with the Hessian at w (on the
  quadratic of tests/test_alg_evaluation.py the Hessian is constant, so only a nonlinear model
  tells w from w~), and personalize = adapt_steps steps of w <- w - alpha grad f(w).

Padding: every minibatch's last (s + d) mod 3 samples have mask 0 and hold large garbage inputs;
the references never see them (they use the unpadded samples only), so every comparison also
checks that a padded batch gives the mask-weighted mean loss of its real samples.

The references are written independently of asyncfl's rule code: plain
``torch.nn.functional.cross_entropy`` (mean over the real samples) on the network through
``torch.func.functional_call`` with the flat vector cut into the module's own parameter shapes,
``torch.autograd.grad`` for gradients and ``torch.autograd.functional.hvp`` for Hessian-vector
products.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from asyncfl.algorithms import Batches, FedAsync, FedAvg, PerFedAvg, PFedMe
from asyncfl.algorithms.functional import loss_grad
from asyncfl.algorithms.per_fedavg import Variant
from asyncfl.algorithms.sgd import LocalSGD
from asyncfl.exec.executor import fast_loss
from asyncfl.models.base import FlatModel, LossFn
from asyncfl.models.dense import mlp

D64 = torch.float64
IN, HIDDEN, CLASSES = 5, [7, 6], 3
STEPS, DRAWS, WIDTH = 3, 3, 6  # S local steps (rounds), D draws per step, B samples per draw

with torch.random.fork_rng(devices=[]):  # building the module draws from the global generator
    NET = mlp(IN, HIDDEN, CLASSES, "elu").to(D64)
MODEL = FlatModel.wrap(NET, "classification")
W0 = MODEL.init(0, dtype=D64)
LOSS: LossFn = fast_loss(MODEL)
PARAMS = [(name, p.shape) for name, p in NET.named_parameters()]

Sample = tuple[Tensor, Tensor]
"""(x [n, IN], y [n]): the real (unpadded) samples of one minibatch, as the references see them."""


# ------------------------------------------------------------------------------------------------
# Data and the independent reference
# ------------------------------------------------------------------------------------------------


def padded_batches(seed: int, steps: int = STEPS, draws: int = DRAWS, width: int = WIDTH) -> Batches:
    """Distinct random minibatches [steps, draws, width]; draw d of step s has its last
    (s + d) mod 3 samples padded (mask 0, inputs 50x larger, so any leak would show)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, draws, width, IN, generator=g, dtype=D64)
    y = torch.randint(0, CLASSES, (steps, draws, width), generator=g)
    m = torch.ones(steps, draws, width, dtype=D64)
    for s in range(steps):
        for d in range(draws):
            pad = (s + d) % 3
            if pad:
                m[s, d, width - pad :] = 0.0
                x[s, d, width - pad :] *= 50.0
    return Batches(x, y, m)


def real(batches: Batches, s: int, d: int) -> Sample:
    """The unpadded samples of draw d of step s."""
    keep = batches.m[s, d] > 0
    return batches.x[s, d][keep], batches.y[s, d][keep]


def unflatten(w: Tensor) -> dict[str, Tensor]:
    """The flat vector cut into the network's parameters, in ``named_parameters`` order."""
    out: dict[str, Tensor] = {}
    i = 0
    for name, shape in PARAMS:
        n = shape.numel()
        out[name] = w[i : i + n].view(shape)
        i += n
    assert i == w.numel()
    return out


def ref_loss(w: Tensor, sample: Sample) -> Tensor:
    """f(w; D): mean cross-entropy of the network's logits over the real samples."""
    x, y = sample
    return F.cross_entropy(functional_call(NET, unflatten(w), (x,)), y)


def ref_grad(w: Tensor, sample: Sample) -> Tensor:
    """grad f(w; D) by torch.autograd.grad."""
    w = w.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref_loss(w, sample), w)
    return g


def ref_hvp(w: Tensor, sample: Sample, v: Tensor) -> Tensor:
    """H(w; D) v by torch.autograd.functional.hvp."""
    return torch.autograd.functional.hvp(lambda u: ref_loss(u, sample), w, v)[1]


def ref_per_fedavg(
    variant: str,
    w0: Tensor,
    batches: Batches,
    alpha: float,
    beta: float,
    delta: float,
    roles: tuple[int, int, int] = (0, 1, 2),
    probe_at_w_tilde: bool = False,
) -> Tensor:
    """Per-FedAvg's w_S - w_0 (module docstring). ``roles``: the draws used as (D, D', D'');
    ``probe_at_w_tilde``: hf's difference (exact's product) at w~ instead of w_s. Both exist only
    to show that the common mistakes are far outside the tolerances."""
    w = w0
    for s in range(batches.y.shape[0]):
        d0, d1, d2 = (real(batches, s, d) for d in roles)
        w_tilde = w - alpha * ref_grad(w, d0)
        g = ref_grad(w_tilde, d1)
        at = w_tilde if probe_at_w_tilde else w
        if variant == "fo":
            w = w - beta * g
        elif variant == "exact":
            w = w - beta * (g - alpha * ref_hvp(at, d2, g))
        else:
            fd = (ref_grad(at + delta * g, d2) - ref_grad(at - delta * g, d2)) / (2.0 * delta)
            w = w - beta * (g - alpha * fd)
    return w - w0


def ref_pfedme(
    w0: Tensor, batches: Batches, lam: float, k: int, p: float, eta: float, mu: float, warm_start: bool = False
) -> Tensor:
    """pFedMe's w_R - w_0 (module docstring), theta^0 = w_r each round; ``warm_start``: theta^0 =
    the previous round's theta^K (the authors' code), only to show the two differ."""
    w, theta = w0, w0
    for r in range(batches.y.shape[0]):
        sample = real(batches, r, 0)
        if not warm_start:
            theta = w
        for _ in range(k):
            theta = theta - p * (ref_grad(theta, sample) + lam * (theta - w) + mu * theta)
        w = w - eta * lam * (w - theta)
    return w - w0


def ref_local_sgd(w0: Tensor, batches: Batches, lr: float, mu: float, rho: float) -> Tensor:
    """Local SGD's w_S - w_0 with weight decay mu and proximal term rho (module docstring)."""
    w = w0
    for s in range(batches.y.shape[0]):
        w = w - lr * (ref_grad(w, real(batches, s, 0)) + mu * w + rho * (w - w0))
    return w - w0


def max_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


# ------------------------------------------------------------------------------------------------
# The production loss
# ------------------------------------------------------------------------------------------------


def test_rules_receive_the_dense_loss_and_it_ignores_padding() -> None:
    """fast_loss of the ELU MLP is the DenseLoss; its value and hand-written gradient (what
    ``loss_grad``, and so every rule, uses) on a padded batch are the reference's on the real
    samples only."""
    assert type(LOSS).__name__ == "DenseLoss"
    batches = padded_batches(seed=0)
    w = W0 * 2.0
    for s, d in ((0, 0), (0, 2), (1, 1), (2, 2)):
        x, y, m = batches.draw(s, d)
        assert float(m.sum()) == WIDTH - (s + d) % 3
        torch.testing.assert_close(LOSS(w, x, y, m), ref_loss(w, real(batches, s, d)), rtol=0, atol=1e-13)
        torch.testing.assert_close(loss_grad(LOSS, w, x, y, m), ref_grad(w, real(batches, s, d)), rtol=0, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# Per-FedAvg
# ------------------------------------------------------------------------------------------------

ALPHA, BETA, DELTA = 0.1, 0.3, 1e-4
TOL: dict[str, float] = {"fo": 1e-12, "exact": 1e-12, "hf": 1e-10}


def per_fedavg(variant: Variant, delta: float = DELTA) -> PerFedAvg:
    return PerFedAvg(variant=variant, alpha=ALPHA, beta=BETA, delta=delta, local_steps=STEPS, batch_size=WIDTH)


@pytest.mark.parametrize("variant", ["fo", "hf", "exact"])
def test_per_fedavg_matches_the_reference_with_distinct_draws(variant: Variant) -> None:
    """S = 3 steps, alpha > 0, D / D' / D'' = draws 0 / 1 / 2 of each step, padded."""
    batches = padded_batches(seed=1)
    got = per_fedavg(variant).client_update(LOSS, W0, batches)
    ref = ref_per_fedavg(variant, W0, batches, ALPHA, BETA, DELTA)
    assert float(ref.norm()) > 0.1  # a real update
    assert max_diff(got, ref) < TOL[variant]


def test_per_fedavg_hf_is_exact_up_to_delta_squared() -> None:
    """The central difference's error is delta^2/6 D^3 f[g, g, g] + O(delta^4): hf's update
    approaches the exact reference's, 10x smaller delta giving ~100x smaller error."""
    batches = padded_batches(seed=2)
    exact = ref_per_fedavg("exact", W0, batches, ALPHA, BETA, DELTA)
    errs = [float((per_fedavg("hf", delta).client_update(LOSS, W0, batches) - exact).norm()) for delta in (1e-2, 1e-3)]
    assert errs[1] < 1e-8
    assert 30.0 < errs[0] / errs[1] < 300.0


@pytest.mark.parametrize("variant", ["hf", "exact"])
def test_per_fedavg_mixups_are_far_outside_the_tolerance(variant: Variant) -> None:
    """The reference tells the roles apart on these batches: D reused as D', D' reused as D'', and
    the Hessian term at w~ instead of w_s all move the update by far more than the tolerance."""
    batches = padded_batches(seed=3)
    got = per_fedavg(variant).client_update(LOSS, W0, batches)
    assert max_diff(got, ref_per_fedavg(variant, W0, batches, ALPHA, BETA, DELTA)) < TOL[variant]
    wrong = {
        "D as D'": ref_per_fedavg(variant, W0, batches, ALPHA, BETA, DELTA, roles=(0, 0, 2)),
        "D' as D''": ref_per_fedavg(variant, W0, batches, ALPHA, BETA, DELTA, roles=(0, 1, 1)),
        "at w~": ref_per_fedavg(variant, W0, batches, ALPHA, BETA, DELTA, probe_at_w_tilde=True),
    }
    for name, ref in wrong.items():
        assert max_diff(got, ref) > 1e3 * TOL[variant], name


@pytest.mark.parametrize("kind", ["model.loss", "fast_loss"])
def test_per_fedavg_objective_grad_and_personalize_on_padded_full_data(kind: str) -> None:
    """objective_grad = (I - alpha H(w)) grad f(w~), w~ = w - alpha grad f(w), all on the client's
    full training data (padded as the evaluator pads it); personalize with adapt_steps = 3 is three
    steps w <- w - alpha grad f(w). For both losses a rule may receive (the evaluator passes
    model.loss, the executor the DenseLoss)."""
    loss = MODEL.loss if kind == "model.loss" else LOSS
    batches = padded_batches(seed=4, steps=1, draws=3, width=9)
    x, y, m = batches.draw(0, 2)  # 2 padded samples
    data = real(batches, 0, 2)
    w = W0 * 2.0
    rule = PerFedAvg(variant="hf", alpha=0.2, beta=BETA, delta=DELTA, local_steps=1, batch_size=None)
    g_tilde = ref_grad(w - 0.2 * ref_grad(w, data), data)
    ref = g_tilde - 0.2 * ref_hvp(w, data, g_tilde)
    got = rule.objective_grad(loss, w, x, y, m)
    assert max_diff(got, ref) < 1e-12
    w_tilde = w - 0.2 * ref_grad(w, data)
    assert max_diff(got, g_tilde - 0.2 * ref_hvp(w_tilde, data, g_tilde)) > 1e-6  # H at w, not w~
    theta = w
    for _ in range(3):
        theta = theta - 0.2 * ref_grad(theta, data)
    assert max_diff(rule.personalize(loss, w, x, y, m, 3), theta) < 1e-12


# ------------------------------------------------------------------------------------------------
# pFedMe
# ------------------------------------------------------------------------------------------------


def test_pfedme_matches_the_reference_with_a_fresh_batch_per_round() -> None:
    """R = 3 rounds, each on its own minibatch (draw 0 of round r), K = 4 inner steps from
    theta^0 = w_r, weight decay mu > 0; the warm-started variant differs visibly."""
    lam, k, p, eta, mu = 15.0, 4, 0.05, 0.05, 0.01
    batches = padded_batches(seed=5, draws=1)
    rule = PFedMe(lam=lam, inner_steps=k, personal_lr=p, eta=eta, local_rounds=STEPS, batch_size=WIDTH, weight_decay=mu)
    got = rule.client_update(LOSS, W0, batches)
    ref = ref_pfedme(W0, batches, lam, k, p, eta, mu)
    assert float(ref.norm()) > 0.05
    assert max_diff(got, ref) < 1e-12
    assert max_diff(got, ref_pfedme(W0, batches, lam, k, p, eta, mu, warm_start=True)) > 1e-6


# ------------------------------------------------------------------------------------------------
# Local SGD (FedAvg, FedAsync, FedBuff, local)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls,mu,rho", [(FedAvg, 0.0, 0.0), (FedAvg, 0.05, 0.0), (FedAsync, 0.0, 2.0), (FedAsync, 0.05, 2.0)]
)
def test_local_sgd_matches_the_reference_with_decay_and_prox(cls: type[LocalSGD], mu: float, rho: float) -> None:
    """S = 3 steps on distinct padded minibatches, weight decay mu and proximal term rho."""
    lr = 0.3
    batches = padded_batches(seed=6, draws=1)
    got = cls(lr=lr, local_steps=STEPS, batch_size=WIDTH, weight_decay=mu, prox=rho).client_update(LOSS, W0, batches)
    ref = ref_local_sgd(W0, batches, lr, mu, rho)
    assert float(ref.norm()) > 0.1
    assert max_diff(got, ref) < 1e-12
    if rho:  # the proximal pull toward w_0 is visible (steps >= 1)
        assert max_diff(got, ref_local_sgd(W0, batches, lr, mu, -rho)) > 1e-4
