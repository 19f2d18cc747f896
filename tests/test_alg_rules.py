"""Client rules against closed forms, hand-written references and each other.

The quadratic test problem, built here (asyncfl.data.quadratic is someone else's): for a client with
f(w) = 1/2 (w - c)^T A (w - c), A = U diag(lambda) U^T, the d samples a_j = sqrt(d lambda_j) u_j,
b_j = a_j^T c under the linear model w -> a^T w (no bias) with loss 1/2 (a^T w - b)^2 give
(1/d) sum_j 1/2 (a_j^T (w - c))^2 = 1/2 (w - c)^T A (w - c) exactly, so full batches give exact
gradients A (w - c) and Hessian A.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from asyncfl.algorithms import ALGORITHMS, Batches, FedAsync, FedAvg, FedBuff, Local, PerFedAvg, PFedMe, build_rule
from asyncfl.algorithms.base import ClientRule, check_batches
from asyncfl.algorithms.functional import curvature_bound, hvp
from asyncfl.config.schema import (
    ALGORITHM_CONFIGS,
    FedAsyncConfig,
    FedAvgConfig,
    FedBuffConfig,
    LocalConfig,
    PerFedAvgConfig,
    PFedMeConfig,
)
from asyncfl.errors import ScenarioError
from asyncfl.models.base import FlatModel

D64 = torch.float64


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------


def quadratic(d: int, seed: int, mu: float = 1.0, L: float = 4.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(A, c, a, b): A with eigenvalues spread over [mu, L], and its d exact samples (a_j, b_j)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D64))
    lam = torch.linspace(mu, L, d, dtype=D64)
    A = q @ torch.diag(lam) @ q.T
    c = torch.randn(d, generator=g, dtype=D64)
    a = torch.sqrt(d * lam)[:, None] * q.T  # row j: sqrt(d lambda_j) u_j
    return A, c, a, a @ c


def linear_model(d: int) -> FlatModel:
    return FlatModel.wrap(nn.Linear(d, 1, bias=False, dtype=D64), task="regression")


def full_batches(a: Tensor, b: Tensor, steps: int, draws: int) -> Batches:
    """Every draw of every step is the client's full (exact) data set."""
    n = a.shape[0]
    x = a.expand(steps, draws, *a.shape).clone()
    y = b.expand(steps, draws, n).clone()
    return Batches(x, y, torch.ones(steps, draws, n, dtype=a.dtype))


def mlp(dtype: torch.dtype = D64, seed: int = 0) -> tuple[FlatModel, Tensor]:
    torch.manual_seed(seed)
    fm = FlatModel.wrap(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype), "classification")
    return fm, fm.init(seed, dtype=dtype)


def random_batches(steps: int, draws: int, b: int, seed: int, dtype: torch.dtype = D64, pad: int = 0) -> Batches:
    """Distinct random classification minibatches; the last ``pad`` samples of each are padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, draws, b, 4, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (steps, draws, b), generator=g)
    m = torch.ones(steps, draws, b, dtype=dtype)
    if pad:
        m[..., b - pad :] = 0.0
    return Batches(x, y, m)


def ag(fm: FlatModel, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
    """Reference gradient by plain torch.autograd (independent of torch.func)."""
    w = w.detach().clone().requires_grad_(True)
    return torch.autograd.grad(fm.loss(w, x, y, m), w)[0]


# ------------------------------------------------------------------------------------------------
# The test problem itself
# ------------------------------------------------------------------------------------------------


def test_quadratic_samples_realise_the_quadratic_exactly() -> None:
    """loss(w) = 1/2 (w-c)^T A (w-c) and grad = A (w - c) for the d samples of the fixture."""
    A, c, a, b = quadratic(5, 0)
    fm = linear_model(5)
    w = torch.randn(5, dtype=D64)
    m = torch.ones(5, dtype=D64)
    assert torch.allclose(fm.loss(w, a, b, m), 0.5 * (w - c) @ A @ (w - c), atol=1e-12)
    assert torch.allclose(grad(fm.loss)(w, a, b, m), A @ (w - c), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Local SGD
# ------------------------------------------------------------------------------------------------


def test_sgd_steps_closed_form() -> None:
    """Two steps of w <- w - lr (A (w - c) + mu w), then Delta = w_2 - w_0."""
    A, c, a, b = quadratic(4, 1)
    fm = linear_model(4)
    rule = FedAvg(lr=0.1, local_steps=2, batch_size=None, weight_decay=0.05)
    w0 = torch.randn(4, dtype=D64)
    w = w0
    for _ in range(2):
        w = w - 0.1 * (A @ (w - c) + 0.05 * w)
    delta = rule.client_update(fm.loss, w0, full_batches(a, b, 2, 1))
    assert torch.allclose(delta, w - w0, atol=1e-12)


def test_fedasync_prox_term_closed_form() -> None:
    """FedAsync's local objective f(x) + rho/2 ||x - x_tau||^2: three steps of
    w <- w - lr (A (w - c) + rho (w - w_0)) on the quadratic, in closed form, then by hand for
    A = 1, c = 0, w_0 = 1, lr = 0.1, rho = 2: w_1 = 0.9, w_2 = 0.9 - 0.1 (0.9 - 0.2) = 0.83."""
    A, c, a, b = quadratic(4, 2)
    fm = linear_model(4)
    rule = FedAsync(lr=0.1, local_steps=3, batch_size=None, prox=2.0)
    w0 = torch.randn(4, dtype=D64)
    w = w0
    for _ in range(3):
        w = w - 0.1 * (A @ (w - c) + 2.0 * (w - w0))
    torch.testing.assert_close(rule.client_update(fm.loss, w0, full_batches(a, b, 3, 1)), w - w0, rtol=0, atol=1e-12)
    one = linear_model(1)  # f(w) = 1/2 w^2: the single sample a = 1, b = 0
    two = FedAsync(lr=0.1, local_steps=2, batch_size=None, prox=2.0)
    x1, y1 = torch.ones(1, 1, dtype=D64), torch.zeros(1, dtype=D64)
    delta = two.client_update(one.loss, torch.ones(1, dtype=D64), full_batches(x1, y1, 2, 1))
    assert delta.item() == pytest.approx(0.83 - 1.0, abs=1e-15)
    assert build_rule(FedAsyncConfig(prox=0.5)).prox == 0.5  # type: ignore[attr-defined]


def test_sgd_uses_one_fresh_batch_per_step() -> None:
    """Step s reads draw 0 of step s: a reference loop with torch.autograd on distinct batches."""
    fm, w0 = mlp()
    batches = random_batches(3, 1, 5, seed=3)
    rule = FedAvg(lr=0.3, local_steps=3, batch_size=5)
    w = w0
    for s in range(3):
        w = w - 0.3 * ag(fm, w, *batches.draw(s, 0))
    assert torch.allclose(rule.client_update(fm.loss, w0, batches), w - w0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Per-FedAvg: closed forms on the quadratic
# ------------------------------------------------------------------------------------------------

ALPHA, BETA = 0.1, 0.2


def per_fedavg(
    variant: str, alpha: float = ALPHA, beta: float = BETA, delta: float = 1e-3, steps: int = 1
) -> PerFedAvg:
    return PerFedAvg(variant=variant, alpha=alpha, beta=beta, delta=delta, local_steps=steps, batch_size=None)  # type: ignore[arg-type]


def maml_grad(A: Tensor, c: Tensor, w: Tensor, alpha: float) -> Tensor:
    """grad F(w) = (I - alpha A) A (w - alpha A (w - c) - c)."""
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    return (eye - alpha * A) @ A @ (w - alpha * A @ (w - c) - c)


def test_per_fedavg_exact_step_is_the_maml_gradient_step() -> None:
    """One exact step, full batches: Delta = -beta (I - alpha A) A (w - alpha A (w - c) - c)."""
    A, c, a, b = quadratic(5, 2)
    fm = linear_model(5)
    w = torch.randn(5, dtype=D64)
    delta = per_fedavg("exact").client_update(fm.loss, w, full_batches(a, b, 1, 3))
    assert torch.allclose(delta, -BETA * maml_grad(A, c, w, ALPHA), atol=1e-12)


def test_per_fedavg_fo_drops_the_hessian_factor() -> None:
    """FO: Delta = -beta A (w - alpha A (w - c) - c) (no (I - alpha A) factor)."""
    A, c, a, b = quadratic(5, 3)
    fm = linear_model(5)
    w = torch.randn(5, dtype=D64)
    delta = per_fedavg("fo").client_update(fm.loss, w, full_batches(a, b, 1, 2))
    expected = -BETA * A @ (w - ALPHA * A @ (w - c) - c)
    assert torch.allclose(delta, expected, atol=1e-12)
    assert not torch.allclose(delta, -BETA * maml_grad(A, c, w, ALPHA), atol=1e-3)


def test_per_fedavg_hf_is_exact_on_a_quadratic() -> None:
    """The gradient of a quadratic is affine, so the central difference is the exact Hessian
    product (up to rounding, ~eps / delta)."""
    A, c, a, b = quadratic(5, 4)
    fm = linear_model(5)
    w = torch.randn(5, dtype=D64)
    batches = full_batches(a, b, 1, 3)
    hf = per_fedavg("hf", delta=1e-4).client_update(fm.loss, w, batches)
    assert torch.allclose(hf, -BETA * maml_grad(A, c, w, ALPHA), atol=1e-9)


def test_per_fedavg_multi_step_chains_the_closed_form() -> None:
    """Three exact steps with full batches = three steps of w <- w - beta grad F(w)."""
    A, c, a, b = quadratic(3, 5)
    fm = linear_model(3)
    w0 = torch.randn(3, dtype=D64)
    w = w0
    for _ in range(3):
        w = w - BETA * maml_grad(A, c, w, ALPHA)
    delta = per_fedavg("exact", steps=3).client_update(fm.loss, w0, full_batches(a, b, 3, 3))
    assert torch.allclose(delta, w - w0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Per-FedAvg on a nonlinear model: HF against autograd, and the pitfalls
# ------------------------------------------------------------------------------------------------


def test_hf_finite_difference_converges_to_the_autograd_hvp_at_rate_delta_squared() -> None:
    """Central difference error = delta^2/6 D^3 f[g,g,g] + O(delta^4): shrinking delta 10x shrinks
    it ~100x (tanh MLP, float64, so rounding ~1e-16/delta stays far below)."""
    fm, w = mlp()
    batches = random_batches(1, 3, 8, seed=1)
    x2, y2, m2 = batches.draw(0, 2)
    g = torch.randn(w.shape[0], dtype=D64, generator=torch.Generator().manual_seed(7))
    exact = hvp(fm.loss, w, g, x2, y2, m2)
    # independent reference: the Hessian by torch.autograd.functional
    H = torch.autograd.functional.hessian(lambda v: fm.loss(v, x2, y2, m2), w)
    assert torch.allclose(exact, H @ g, atol=1e-12)
    errs = []
    for delta in (1e-1, 1e-2, 1e-3):
        rule = per_fedavg("hf", delta=delta)
        errs.append(float((rule.hessian_term(fm.loss, w, g, x2, y2, m2) - exact).norm()))
    assert errs[0] > 1e-6  # a real third derivative, not a degenerate case
    for big, small in itertools.pairwise(errs):
        assert 50.0 < big / small < 200.0


def test_hf_step_matches_exact_step_within_delta_squared() -> None:
    fm, w = mlp()
    batches = random_batches(2, 3, 8, seed=2)
    exact = per_fedavg("exact", steps=2).client_update(fm.loss, w, batches)
    e2 = float((per_fedavg("hf", delta=1e-2, steps=2).client_update(fm.loss, w, batches) - exact).norm())
    e3 = float((per_fedavg("hf", delta=1e-3, steps=2).client_update(fm.loss, w, batches) - exact).norm())
    assert e3 < 1e-8
    assert 30.0 < e2 / e3 < 300.0


def _ref_step(fm: FlatModel, w: Tensor, batches: Batches, t: int, *, at: str = "w", dd: int = 2) -> Tensor:
    """Hand-written HF step (torch.autograd); ``at``/``dd`` select the correct or a wrong variant."""
    D, D1, D2 = batches.draw(t, 0), batches.draw(t, 1), batches.draw(t, dd)
    w_tmp = w - ALPHA * ag(fm, w, *D)
    g = ag(fm, w_tmp, *D1)
    p = w if at == "w" else w_tmp
    delta = 1e-4
    d = (ag(fm, p + delta * g, *D2) - ag(fm, p - delta * g, *D2)) / (2 * delta)
    return w - BETA * (g - ALPHA * d)


def test_hf_product_is_at_w_on_its_own_batch_d2() -> None:
    """HF matches the reference with the product at w on D''; it does not match the two public
    mistakes: the product at w_tmp, or on D' reused."""
    fm, w = mlp()
    batches = random_batches(1, 3, 6, seed=11)
    ours = w + per_fedavg("hf", delta=1e-4).client_update(fm.loss, w, batches)
    assert torch.allclose(ours, _ref_step(fm, w, batches, 0), atol=1e-10)
    for wrong in (_ref_step(fm, w, batches, 0, at="w_tmp"), _ref_step(fm, w, batches, 0, dd=1)):
        assert float((ours - wrong).norm()) > 1e-5


def test_local_steps_chain_from_w_not_w_tmp() -> None:
    """Three HF steps = the reference chained from w_{t+1}; chaining from w_tmp differs."""
    fm, w0 = mlp()
    batches = random_batches(3, 3, 6, seed=12)
    ours = w0 + per_fedavg("hf", delta=1e-4, steps=3).client_update(fm.loss, w0, batches)
    w = w0
    for t in range(3):
        w = _ref_step(fm, w, batches, t)
    assert torch.allclose(ours, w, atol=1e-10)
    # the mistake: restart each step from w_tmp (never restoring w before the beta step)
    bad = w0
    for t in range(3):
        w_tmp = bad - ALPHA * ag(fm, bad, *batches.draw(t, 0))
        bad = w_tmp - BETA * ag(fm, w_tmp, *batches.draw(t, 1))
    assert float((ours - bad).norm()) > 1e-4


@pytest.mark.parametrize("variant", ["fo", "hf", "exact"])
def test_per_fedavg_alpha_zero_is_local_sgd_with_lr_beta(variant: str) -> None:
    """alpha = 0: w_tmp = w and the Hessian term vanishes, so each step is w - beta grad f(w; D'):
    FedAvg's local SGD with lr beta on the D' batches."""
    fm, w = mlp()
    batches = random_batches(4, 3, 6, seed=13)
    ours = per_fedavg(variant, alpha=0.0, steps=4).client_update(fm.loss, w, batches)
    d1 = Batches(batches.x[:, 1:2], batches.y[:, 1:2], batches.m[:, 1:2])
    sgd = FedAvg(lr=BETA, local_steps=4, batch_size=6).client_update(fm.loss, w, d1)
    assert torch.equal(ours, sgd)


# ------------------------------------------------------------------------------------------------
# pFedMe
# ------------------------------------------------------------------------------------------------


def moreau_theta(A: Tensor, c: Tensor, w: Tensor, lam: float) -> Tensor:
    """theta* = (A + lam I)^-1 (A c + lam w)."""
    return torch.linalg.solve(A + lam * torch.eye(A.shape[0], dtype=A.dtype), A @ c + lam * w)


def test_pfedme_one_inner_step_by_hand() -> None:
    """K = 1 from theta^0 = w: the proximal term is 0 there, so theta^1 = w - p (A (w - c) + mu w)
    and w_1 = w - eta lam (w - theta^1) = w - eta lam p (A (w - c) + mu w)."""
    A, c, a, b = quadratic(4, 6)
    fm = linear_model(4)
    w = torch.randn(4, dtype=D64)
    rule = PFedMe(
        lam=15.0, inner_steps=1, personal_lr=0.01, eta=0.05, local_rounds=1, batch_size=None, weight_decay=0.1
    )
    delta = rule.client_update(fm.loss, w, full_batches(a, b, 1, 1))
    expected = -0.05 * 15.0 * 0.01 * (A @ (w - c) + 0.1 * w)
    assert torch.allclose(delta, expected, atol=1e-13)


def test_pfedme_inner_solver_converges_to_the_moreau_minimiser() -> None:
    """K large: theta^K -> (A + lam I)^-1 (A c + lam w), so w_1 = w - eta lam (w - theta*) =
    w - eta grad F(w); a second round repeats it from w_1."""
    A, c, a, b = quadratic(5, 7)
    fm = linear_model(5)
    lam, eta = 2.0, 0.1
    w0 = torch.randn(5, dtype=D64)
    rule = PFedMe(lam=lam, inner_steps=400, personal_lr=1.0 / (lam + 4.0), eta=eta, local_rounds=2, batch_size=None)
    w = w0
    for _ in range(2):
        w = w - eta * lam * (w - moreau_theta(A, c, w, lam))
    delta = rule.client_update(fm.loss, w0, full_batches(a, b, 2, 1))
    assert torch.allclose(delta, w - w0, atol=1e-12)


def test_pfedme_evaluation_solver_and_objective_grad_closed_form() -> None:
    """personalize = theta*(w); objective_grad = lam (w - theta*(w)) (the envelope's gradient),
    whatever the training-time personal_lr (deliberately tiny here)."""
    A, c, a, b = quadratic(5, 8, mu=0.5, L=6.0)
    fm = linear_model(5)
    lam = 3.0
    rule = PFedMe(lam=lam, inner_steps=5, personal_lr=1e-4, eta=0.01, local_rounds=1, batch_size=None)
    w = torch.randn(5, dtype=D64)
    m = torch.ones(5, dtype=D64)
    theta = moreau_theta(A, c, w, lam)
    assert torch.allclose(rule.personalize(fm.loss, w, a, b, m, 1), theta, atol=1e-9)
    assert torch.allclose(rule.objective_grad(fm.loss, w, a, b, m), lam * (w - theta), atol=1e-8)


def test_curvature_bound_finds_the_largest_eigenvalue() -> None:
    _, _, a, b = quadratic(6, 9, mu=0.1, L=7.0)
    fm = linear_model(6)
    est = float(curvature_bound(fm.loss, torch.zeros(6, dtype=D64), a, b, torch.ones(6, dtype=D64), 30))
    assert 0.9 * 7.0 < est <= 7.0 + 1e-9


# ------------------------------------------------------------------------------------------------
# Batched = one at a time
# ------------------------------------------------------------------------------------------------

RULES_F32: dict[str, ClientRule] = {
    "fedavg": FedAvg(lr=0.1, local_steps=3, batch_size=5, weight_decay=0.01),
    "per_fedavg_fo": PerFedAvg(variant="fo", alpha=0.05, beta=0.1, delta=1e-3, local_steps=3, batch_size=5),
    "per_fedavg_hf": PerFedAvg(variant="hf", alpha=0.05, beta=0.1, delta=1e-3, local_steps=3, batch_size=5),
    "per_fedavg_exact": PerFedAvg(variant="exact", alpha=0.05, beta=0.1, delta=1e-3, local_steps=3, batch_size=5),
    "pfedme": PFedMe(
        lam=15.0, inner_steps=3, personal_lr=0.01, eta=0.05, local_rounds=3, batch_size=5, weight_decay=0.001
    ),
}


@pytest.mark.parametrize("key", sorted(RULES_F32))
def test_vmapped_client_update_equals_a_loop(key: str) -> None:
    """vmap over 4 clients (own models, own batches, some padded samples) = 4 separate calls."""
    rule = RULES_F32[key]
    fm, _ = mlp(torch.float32)
    ws = torch.stack([fm.init(s) for s in range(4)])
    bs = [random_batches(3, rule.draws_per_step, 5, seed=20 + i, dtype=torch.float32, pad=i % 3) for i in range(4)]
    X, Y, M = (torch.stack([getattr(b, f) for b in bs]) for f in ("x", "y", "m"))

    def one(w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        return rule.client_update(fm.loss, w, Batches(x, y, m))

    batched = vmap(one)(ws, X, Y, M)
    looped = torch.stack([one(ws[i], X[i], Y[i], M[i]) for i in range(4)])
    assert torch.allclose(batched, looped, atol=1e-6, rtol=0)
    assert float(looped.abs().max()) > 1e-4  # the updates are not trivially zero


# ------------------------------------------------------------------------------------------------
# Registry, config binding, work, shapes
# ------------------------------------------------------------------------------------------------


def test_registry_names_and_class_attributes() -> None:
    assert ALGORITHMS.names() == ["fedasync", "fedavg", "fedbuff", "local", "per_fedavg", "pfedme"]
    expected: dict[str, tuple[type[Any], str]] = {
        "fedavg": (FedAvg, "delta"),
        "fedasync": (FedAsync, "mixing"),
        "fedbuff": (FedBuff, "delta"),
        "local": (Local, "none"),
        "per_fedavg": (PerFedAvg, "delta"),
        "pfedme": (PFedMe, "delta"),
    }
    for name, (cls, server_rule) in expected.items():
        assert ALGORITHMS.get(name) is expected[name][0]
        assert (cls.model_fields["name"].default, cls.server_rule) == (name, server_rule)
        # the rule IS its schema config (hyperparameters written once): same fields, same defaults
        config = ALGORITHM_CONFIGS.get(name)
        assert issubclass(cls, config)
        assert {k: f.default for k, f in config.model_fields.items()}.items() <= {
            k: f.default for k, f in cls.model_fields.items()
        }.items()
    with pytest.raises(ScenarioError, match=r"algorithm\.name.*allowed: fedasync"):
        ALGORITHMS.get("fedprox")


def test_build_rule_binds_config_hyperparameters() -> None:
    sgd = build_rule(FedBuffConfig(lr=0.3, local_steps=4, batch_size=None, weight_decay=0.01))
    assert isinstance(sgd, FedBuff) and (sgd.lr, sgd.steps, sgd.batch_size, sgd.weight_decay) == (0.3, 4, None, 0.01)
    assert isinstance(build_rule(FedAvgConfig()), FedAvg)
    assert isinstance(build_rule(FedAsyncConfig()), FedAsync)
    assert isinstance(build_rule(LocalConfig()), Local)
    pf = build_rule(PerFedAvgConfig(variant="fo", alpha=0.02, beta=0.3, delta=1e-4, local_steps=2, batch_size=8))
    assert isinstance(pf, PerFedAvg)
    assert (pf.variant, pf.alpha, pf.beta, pf.delta, pf.steps, pf.batch_size) == ("fo", 0.02, 0.3, 1e-4, 2, 8)
    assert pf.draws_per_step == 2
    assert build_rule(PerFedAvgConfig(variant="hf")).draws_per_step == 3
    pm = build_rule(PFedMeConfig(lam=5.0, inner_steps=3, personal_lr=0.02, eta=0.1, local_rounds=7, batch_size=16))
    assert isinstance(pm, PFedMe)
    assert (pm.lam, pm.inner_steps, pm.personal_lr, pm.eta, pm.steps, pm.batch_size) == (5.0, 3, 0.02, 0.1, 7, 16)
    assert pm.draws_per_step == 1 and pm.weight_decay == 0.0


def test_work_counts_per_sample_gradients() -> None:
    """sgd S min(B, n); per_fedavg fo 2 S b, hf / exact 4 S b; pfedme R K b."""
    assert FedAvg(lr=0.1, local_steps=10, batch_size=32).work(100) == 320
    assert FedAvg(lr=0.1, local_steps=10, batch_size=32).work(20) == 200
    assert FedAvg(lr=0.1, local_steps=2, batch_size=None).work(57) == 114
    assert per_fedavg("fo", steps=5).work(40) == 2 * 5 * 40
    pf = PerFedAvg(variant="hf", alpha=0.1, beta=0.1, delta=1e-3, local_steps=5, batch_size=32)
    assert pf.work(100) == 4 * 5 * 32
    assert math.isclose(per_fedavg("exact", steps=5).work(40), 4 * 5 * 40)
    pm = PFedMe(lam=15.0, inner_steps=5, personal_lr=0.01, eta=0.01, local_rounds=10, batch_size=32)
    assert pm.work(100) == 10 * 5 * 32


def test_batches_too_small_for_the_rule_is_a_clear_error() -> None:
    fm, w = mlp()
    with pytest.raises(ValueError, match="needs 2 x 3"):
        per_fedavg("hf", steps=2).client_update(fm.loss, w, random_batches(2, 2, 4, seed=0))
    with pytest.raises(ValueError, match=r"x \[S, D, B"):
        check_batches(Batches(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3)), 1, 1)
