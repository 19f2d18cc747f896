"""Personalized evaluation and grad_norm_sq against closed forms on the quadratic problem, and
the batched evaluation against a one-client-at-a-time loop on a classifier.

Quadratic clients (see tests/test_alg_rules.py for the construction): training data realise
f_i(w) = 1/2 (w - c_i)^T A_i (w - c_i) exactly; test data realise a DIFFERENT quadratic
g_i(w) = 1/2 (w - c'_i)^T A'_i (w - c'_i), so a personalized loss computed from the wrong data is
visible.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from asyncfl.algorithms import FedAvg, PerFedAvg, PFedMe, evaluate, evaluate_client_models, personalized_models
from asyncfl.algorithms.base import ClientRule
from asyncfl.algorithms.evaluation import (
    METRICS_CLASSIFICATION,
    METRICS_REGRESSION,
    gather_padded,
    majority_accuracy,
)
from asyncfl.data.base import FederatedData, layout
from asyncfl.models.base import FlatModel

D64 = torch.float64
DIM = 3


def quadratic(d: int, seed: int, mu: float = 1.0, L: float = 4.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(A, c, a, b) with A's eigenvalues spread over [mu, L] and its d exact samples."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D64))
    lam = torch.linspace(mu, L, d, dtype=D64)
    A = q @ torch.diag(lam) @ q.T
    c = torch.randn(d, generator=g, dtype=D64)
    a = torch.sqrt(d * lam)[:, None] * q.T
    return A, c, a, a @ c


def federated(
    train: list[tuple[Tensor, Tensor]],
    test: list[tuple[Tensor, Tensor]],
    global_xy: tuple[Tensor, Tensor],
    task: str,
    num_classes: int,
) -> FederatedData:
    tr_off, tr_n = layout(np.array([len(y) for _, y in train]))
    te_off, te_n = layout(np.array([len(y) for _, y in test]))
    return FederatedData(
        train_x=torch.cat([x for x, _ in train]),
        train_y=torch.cat([y for _, y in train]),
        train_offsets=tr_off,
        train_sizes=tr_n,
        test_x=torch.cat([x for x, _ in test]),
        test_y=torch.cat([y for _, y in test]),
        test_offsets=te_off,
        test_sizes=te_n,
        global_x=global_xy[0],
        global_y=global_xy[1],
        input_shape=tuple(train[0][0].shape[1:]),
        num_classes=num_classes,
        task=task,  # type: ignore[arg-type]
    )


class QuadFixture:
    """n clients: training quadratics (A_i, c_i), test quadratics (A'_i, c'_i), a global one."""

    def __init__(self, n: int = 3, seed: int = 0, test_seed: int = 100) -> None:
        self.train = [quadratic(DIM, seed + i, mu=1.0, L=4.0) for i in range(n)]
        self.test = [quadratic(DIM, test_seed + i, mu=0.5, L=2.0) for i in range(n)]
        self.glob = quadratic(DIM, 999)
        self.data = federated(
            [(a, b) for _, _, a, b in self.train],
            [(a, b) for _, _, a, b in self.test],
            (self.glob[2], self.glob[3]),
            "regression",
            0,
        )
        self.model = FlatModel.wrap(nn.Linear(DIM, 1, bias=False, dtype=D64), task="regression")


def qval(A: Tensor, c: Tensor, w: Tensor) -> float:
    return float(0.5 * (w - c) @ A @ (w - c))


def maml_grad(A: Tensor, c: Tensor, w: Tensor, alpha: float) -> Tensor:
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    return (eye - alpha * A) @ A @ (w - alpha * A @ (w - c) - c)


def moreau_theta(A: Tensor, c: Tensor, w: Tensor, lam: float) -> Tensor:
    return torch.linalg.solve(A + lam * torch.eye(A.shape[0], dtype=A.dtype), A @ c + lam * w)


# ------------------------------------------------------------------------------------------------
# Closed forms on the quadratic
# ------------------------------------------------------------------------------------------------


def test_maml_metrics_closed_form() -> None:
    """adapt_steps = 1: theta_i = w - alpha A_i (w - c_i) from TRAINING data; personalized_loss =
    mean_i g_i(theta_i) (equal test sizes); grad_norm_sq = ||(1/n) sum_i (I - alpha A_i) A_i
    (w - alpha A_i (w - c_i) - c_i)||^2; global_loss = f_global(w)."""
    fx = QuadFixture()
    alpha = 0.15
    rule = PerFedAvg(variant="hf", alpha=alpha, beta=0.1, delta=1e-3, local_steps=1, batch_size=None)
    w = torch.tensor([0.3, -1.0, 0.7], dtype=D64)
    out = evaluate(fx.model, rule, fx.data, w, None, 1, True, None)
    assert set(out) == set(METRICS_REGRESSION)
    thetas = [w - alpha * A @ (w - c) for A, c, _, _ in fx.train]
    ploss = np.mean([qval(At, ct, th) for (At, ct, _, _), th in zip(fx.test, thetas, strict=True)])
    grad_f = torch.stack([maml_grad(A, c, w, alpha) for A, c, _, _ in fx.train]).mean(0)
    assert out["personalized_loss"] == pytest.approx(ploss, rel=1e-12)
    assert out["grad_norm_sq"] == pytest.approx(float(grad_f @ grad_f), rel=1e-10)
    assert out["global_loss"] == pytest.approx(qval(fx.glob[0], fx.glob[1], w), rel=1e-12)
    # two adaptation steps chain on the training quadratic
    out2 = evaluate(fx.model, rule, fx.data, w, None, 2, False, None)
    th2 = [t - alpha * A @ (t - c) for (A, c, _, _), t in zip(fx.train, thetas, strict=True)]
    ploss2 = np.mean([qval(At, ct, th) for (At, ct, _, _), th in zip(fx.test, th2, strict=True)])
    assert out2["personalized_loss"] == pytest.approx(ploss2, rel=1e-12)
    assert "grad_norm_sq" not in out2


def test_moreau_metrics_closed_form() -> None:
    """theta_i = (A_i + lam I)^-1 (A_i c_i + lam w); grad_norm_sq = ||lam (w - mean_i theta_i)||^2."""
    fx = QuadFixture(n=4, seed=10)
    lam = 1.0
    rule = PFedMe(lam=lam, inner_steps=5, personal_lr=0.01, eta=0.05, local_rounds=1, batch_size=None)
    w = torch.tensor([1.0, 0.5, -2.0], dtype=D64)
    thetas = torch.stack([moreau_theta(A, c, w, lam) for A, c, _, _ in fx.train])
    assert torch.allclose(personalized_models(fx.model, rule, fx.data, w, None, 1), thetas, atol=1e-8)
    out = evaluate(fx.model, rule, fx.data, w, None, 1, True, 3)
    grad_f = lam * (w - thetas.mean(0))
    assert out["grad_norm_sq"] == pytest.approx(float(grad_f @ grad_f), rel=1e-8)
    ploss = np.mean([qval(At, ct, th) for (At, ct, _, _), th in zip(fx.test, thetas, strict=True)])
    assert out["personalized_loss"] == pytest.approx(ploss, rel=1e-8)


def test_baseline_metrics_closed_form() -> None:
    """none family: grad_norm_sq = ||(1/n) sum_i A_i (w - c_i)||^2 (the average loss); adapt_steps
    = 0 scores the raw model, 1 fine-tunes with the algorithm's lr on training data."""
    fx = QuadFixture(seed=20)
    lr = 0.2
    rule = FedAvg(lr=lr, local_steps=3, batch_size=None, weight_decay=0.5)  # wd plays no part here
    w = torch.tensor([0.1, 0.2, -0.3], dtype=D64)
    out0 = evaluate(fx.model, rule, fx.data, w, None, 0, True, 1)
    grad_f = torch.stack([A @ (w - c) for A, c, _, _ in fx.train]).mean(0)
    assert out0["grad_norm_sq"] == pytest.approx(float(grad_f @ grad_f), rel=1e-12)
    assert out0["personalized_loss"] == pytest.approx(np.mean([qval(A, c, w) for A, c, _, _ in fx.test]), rel=1e-12)
    out1 = evaluate(fx.model, rule, fx.data, w, None, 1, False, None)
    th = [w - lr * A @ (w - c) for A, c, _, _ in fx.train]
    expected = np.mean([qval(At, ct, t) for (At, ct, _, _), t in zip(fx.test, th, strict=True)])
    assert out1["personalized_loss"] == pytest.approx(expected, rel=1e-12)


def test_personalization_uses_training_data_only() -> None:
    """Swapping every client's test set for another leaves the personalized models unchanged, and
    the new personalized loss is the new test quadratic at the SAME (training-adapted) models."""
    a = QuadFixture(seed=30, test_seed=200)
    b = QuadFixture(seed=30, test_seed=300)  # same training data, different test data
    rule = PerFedAvg(variant="fo", alpha=0.2, beta=0.1, delta=1e-3, local_steps=1, batch_size=None)
    w = torch.tensor([2.0, -1.0, 0.5], dtype=D64)
    ma = personalized_models(a.model, rule, a.data, w, None, 1)
    mb = personalized_models(b.model, rule, b.data, w, None, 1)
    assert torch.equal(ma, mb)
    out_b = evaluate(b.model, rule, b.data, w, None, 1, False, None)
    expected = np.mean([qval(At, ct, th) for (At, ct, _, _), th in zip(b.test, ma, strict=True)])
    assert out_b["personalized_loss"] == pytest.approx(expected, rel=1e-12)
    # and adapting on the test quadratic instead would have given something else
    wrong = np.mean([qval(At, ct, w - 0.2 * At @ (w - ct)) for At, ct, _, _ in b.test])
    assert abs(out_b["personalized_loss"] - wrong) > 1e-3


def test_client_subset_scores_only_those_clients_but_grad_norm_uses_all() -> None:
    fx = QuadFixture(n=5, seed=40)
    rule = FedAvg(lr=0.1, local_steps=1, batch_size=None)
    w = torch.tensor([0.5, 0.5, 0.5], dtype=D64)
    full = evaluate(fx.model, rule, fx.data, w, None, 0, True, None)
    sub = evaluate(fx.model, rule, fx.data, w, [1, 3], 0, True, 1)
    expected = np.mean([qval(fx.test[i][0], fx.test[i][1], w) for i in (1, 3)])
    assert sub["personalized_loss"] == pytest.approx(expected, rel=1e-12)
    assert sub["grad_norm_sq"] == pytest.approx(full["grad_norm_sq"], rel=1e-12)
    with pytest.raises(ValueError, match="client ids"):
        evaluate(fx.model, rule, fx.data, w, [5], 0, False, None)


# ------------------------------------------------------------------------------------------------
# Classification: metric names, batched = loop, padding, percentiles
# ------------------------------------------------------------------------------------------------


def classification_fixture(seed: int = 0) -> tuple[FlatModel, FederatedData, Tensor]:
    """6 clients with unequal train (3..17) and test (0..9) sizes, 4 features, 3 classes."""
    g = torch.Generator().manual_seed(seed)
    tr_sizes, te_sizes = [3, 17, 8, 5, 11, 6], [4, 9, 0, 2, 7, 5]

    def part(n: int) -> tuple[Tensor, Tensor]:
        return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)

    data = federated([part(n) for n in tr_sizes], [part(n) for n in te_sizes], part(50), "classification", 3)
    torch.manual_seed(seed)
    fm = FlatModel.wrap(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)), "classification")
    return fm, data, fm.init(seed)


RULES: dict[str, ClientRule] = {
    "fedavg": FedAvg(lr=0.5, local_steps=1, batch_size=None),
    "per_fedavg": PerFedAvg(variant="hf", alpha=0.3, beta=0.1, delta=1e-3, local_steps=1, batch_size=None),
    "pfedme": PFedMe(
        lam=5.0,
        inner_steps=3,
        personal_lr=0.05,
        eta=0.05,
        local_rounds=1,
        batch_size=None,
        eval_steps=30,
        power_iters=4,
    ),
}


@pytest.mark.parametrize("key", sorted(RULES))
def test_batched_evaluation_equals_a_per_client_loop(key: str) -> None:
    """Padded, vmapped and chunked evaluation = personalizing and scoring each client on its own
    unpadded data; accuracy percentiles over clients that hold test data; chunking changes nothing."""
    rule = RULES[key]
    fm, data, w = classification_fixture()
    out = evaluate(fm, rule, data, w, None, 2, True, None)
    assert set(out) == set(METRICS_CLASSIFICATION)
    # chunking, and naming every client (no merged personalize + grad pass) change nothing
    for clients, chunk in ((None, 4), (list(range(data.num_clients)), 1)):
        other = evaluate(fm, rule, data, w, clients, 2, True, chunk)
        for k, v in out.items():
            assert other[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    losses, accs, n_te, grads = [], [], [], []
    for i in range(data.num_clients):
        xtr, ytr = data.client_train(i)
        xte, yte = data.client_test(i)
        ones_tr = torch.ones(len(ytr))
        theta = rule.personalize(fm.loss, w, xtr, ytr, ones_tr, 2)
        grads.append(rule.objective_grad(fm.loss, w, xtr, ytr, ones_tr))
        n_te.append(len(yte))
        if len(yte):
            losses.append(float(fm.loss(theta, xte, yte, torch.ones(len(yte)))))
            accs.append(float(fm.correct(theta, xte, yte).mean()))
    n = np.array([k for k in n_te if k > 0], dtype=np.float64)
    assert out["personalized_loss"] == pytest.approx(float((n * losses).sum() / n.sum()), rel=1e-5)
    assert out["personalized_accuracy"] == pytest.approx(float((n * accs).sum() / n.sum()), rel=1e-6)
    for q in (10, 50, 90):
        assert out[f"personalized_accuracy_p{q}"] == pytest.approx(float(np.percentile(accs, q)), rel=1e-6)
    gf = torch.stack(grads).mean(0)
    assert out["grad_norm_sq"] == pytest.approx(float(gf @ gf), rel=1e-4)
    gl = fm.loss(w, data.global_x, data.global_y, torch.ones(50))
    assert out["global_loss"] == pytest.approx(float(gl), rel=1e-6)
    assert out["global_accuracy"] == pytest.approx(float(fm.correct(w, data.global_x, data.global_y).mean()))
    assert all(0.0 <= out[k] <= 1.0 for k in out if "accuracy" in k)


def test_evaluate_client_models_scores_each_clients_own_model() -> None:
    fm, data, w = classification_fixture(1)
    models = torch.stack([w + 0.1 * i for i in range(data.num_clients)])
    out = evaluate_client_models(fm, data, models, [0, 1, 4])
    n_te = [4, 9, 7]
    losses = []
    for i in (0, 1, 4):
        xte, yte = data.client_test(i)
        losses.append(float(fm.loss(models[i], xte, yte, torch.ones(len(yte)))))
    assert out["personalized_loss"] == pytest.approx(float(np.dot(n_te, losses) / sum(n_te)), rel=1e-6)
    gm = models.mean(0)
    assert out["global_loss"] == pytest.approx(float(fm.loss(gm, data.global_x, data.global_y, torch.ones(50))))
    sq = 0.0
    for i in range(data.num_clients):
        xtr, ytr = data.client_train(i)
        g = torch.func.grad(fm.loss)(models[i], xtr, ytr, torch.ones(len(ytr)))
        sq += float(g @ g)
    assert out["grad_norm_sq"] == pytest.approx(sq / data.num_clients, rel=1e-5)


def test_gather_padded_is_one_gather_with_a_mask() -> None:
    x = torch.arange(10.0).view(10, 1)
    y = torch.arange(10)
    off, n = layout(np.array([3, 0, 5, 2]))
    xs, ys, m = gather_padded(x, y, off, n, torch.tensor([2, 1, 3]), 5, torch.float32)
    assert xs.shape == (3, 5, 1) and ys.shape == (3, 5)
    assert ys[0].tolist() == [3, 4, 5, 6, 7]
    assert m.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert ys[2, :2].tolist() == [8, 9]


# ------------------------------------------------------------------------------------------------
# eval.adapt_lr and the majority_accuracy reference
# ------------------------------------------------------------------------------------------------


def test_adapt_lr_sets_the_personalization_step_but_not_grad_f() -> None:
    """maml: theta_i = w - eta A_i (w - c_i) with eta = adapt_lr, while grad_norm_sq keeps the
    rule's alpha (F_i(w) = f_i(w - alpha grad f_i(w)) is the paper's objective); none family:
    fine-tuning with step adapt_lr instead of lr; moreau: adapt_lr changes nothing."""
    fx = QuadFixture(seed=50)
    alpha, eta = 0.15, 0.05
    rule = PerFedAvg(variant="hf", alpha=alpha, beta=0.1, delta=1e-3, local_steps=1, batch_size=None)
    w = torch.tensor([0.3, -1.0, 0.7], dtype=D64)
    out = evaluate(fx.model, rule, fx.data, w, None, 1, True, None, adapt_lr=eta)
    thetas = [w - eta * A @ (w - c) for A, c, _, _ in fx.train]
    ploss = np.mean([qval(At, ct, th) for (At, ct, _, _), th in zip(fx.test, thetas, strict=True)])
    grad_f = torch.stack([maml_grad(A, c, w, alpha) for A, c, _, _ in fx.train]).mean(0)
    assert out["personalized_loss"] == pytest.approx(ploss, rel=1e-12)
    assert out["grad_norm_sq"] == pytest.approx(float(grad_f @ grad_f), rel=1e-10)
    assert torch.allclose(
        personalized_models(fx.model, rule, fx.data, w, None, 1, adapt_lr=eta), torch.stack(thetas), atol=1e-12
    )

    fedavg = FedAvg(lr=0.2, local_steps=3, batch_size=None)
    out_f = evaluate(fx.model, fedavg, fx.data, w, None, 1, False, None, adapt_lr=eta)
    assert out_f["personalized_loss"] == pytest.approx(ploss, rel=1e-12)  # same step, same thetas

    pf = PFedMe(lam=1.0, inner_steps=5, personal_lr=0.01, eta=0.05, local_rounds=1, batch_size=None)
    a = evaluate(fx.model, pf, fx.data, w, None, 1, True, None)
    b = evaluate(fx.model, pf, fx.data, w, None, 1, True, None, adapt_lr=eta)
    assert a == b
    with pytest.raises(ValueError, match="adapt_lr"):
        evaluate(fx.model, rule, fx.data, w, None, 1, False, None, adapt_lr=0.0)


def test_majority_accuracy_by_hand() -> None:
    """Client 0: train labels 0,0,1 -> predicts 0; test 0,1,0,2 -> 2 hits of 4. Client 1: train
    1,2,2,1 (tie) -> smallest label 1; test 1,2 -> 1 of 2. Client 2: no training data -> label 0;
    test 0,0,1 -> 2 of 3. Client 3: train 2, no test data (adds nothing). Pooled: (2 + 1 + 2) / 9,
    the same test-size weighting as personalized_accuracy; a subset pools only its clients."""

    def xs(labels: list[int]) -> tuple[Tensor, Tensor]:
        return torch.zeros(len(labels), 2), torch.tensor(labels, dtype=torch.int64)

    train = [xs([0, 0, 1]), xs([1, 2, 2, 1]), xs([]), xs([2])]
    test = [xs([0, 1, 0, 2]), xs([1, 2]), xs([0, 0, 1]), xs([])]
    data = federated(train, test, xs([0, 1]), "classification", 3)
    assert majority_accuracy(data) == pytest.approx(5 / 9)
    assert majority_accuracy(data, [1, 2]) == pytest.approx(3 / 5)
    assert majority_accuracy(data, [3]) != majority_accuracy(data, [3])  # nan: no test samples


def test_majority_accuracy_is_reported_and_constant_in_w() -> None:
    fm, data, w = classification_fixture(2)
    a = evaluate(fm, RULES["fedavg"], data, w, None, 1, False, None)
    b = evaluate(fm, RULES["per_fedavg"], data, w * 3.0 + 1.0, [0, 1, 3], 1, False, None)
    assert a["majority_accuracy"] == pytest.approx(majority_accuracy(data))
    assert b["majority_accuracy"] == pytest.approx(majority_accuracy(data, [0, 1, 3]))
    # by hand for the subset: per client, hits of the majority training label on its test labels
    hits = total = 0
    for i in (0, 1, 3):
        ytr = data.client_train(i)[1].numpy()
        yte = data.client_test(i)[1].numpy()
        major = int(np.bincount(ytr, minlength=3).argmax())
        hits += int((yte == major).sum())
        total += len(yte)
    assert b["majority_accuracy"] == pytest.approx(hits / total)
