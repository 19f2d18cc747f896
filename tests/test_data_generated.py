"""The generated data sets: Synthetic(alpha, beta) statistics and the quadratic problem's exactness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import grad

from asyncfl.config.schema import (
    ClassesPerClientPartition,
    IidPartition,
    QuadraticData,
    QuadraticModel,
    QuantitySkew,
    SyntheticData,
)
from asyncfl.data import DATASETS, build_data
from asyncfl.data.pack import pack, split_clients
from asyncfl.data.partition import holdout_count
from asyncfl.data.synthetic import feature_variances, generate
from asyncfl.errors import ScenarioError
from asyncfl.models import build_model

HERE = Path(".")


def test_every_dataset_is_registered() -> None:
    assert DATASETS.names() == ["cifar10", "emnist", "fashion_mnist", "leaf", "mnist", "quadratic", "synthetic"]


# ------------------------------------------------------------------------------------------------
# Synthetic
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"iid": True}, {"test_fraction": 0.3, "mean_samples": 30.0}])
def test_synthetic_in_place_build_equals_pool_then_pack(kw: dict[str, object]) -> None:
    """The natural build writes each client's rows straight into place (for memory at 100,000
    clients); it must give exactly the pool -> per-client split -> pack pipeline's data."""
    cfg = SyntheticData.model_validate(kw)
    x, y, sizes, extras = generate(cfg, 23, 7)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    parts = [np.arange(s, s + n, dtype=np.int64) for s, n in zip(starts, sizes, strict=True)]
    train, test = split_clients(parts, y, cfg.test_fraction, 7)
    ref = pack(x, y, train, test, num_classes=cfg.classes, input_shape=(cfg.dimension,), name="ref", extras=extras)
    got = build_data(cfg, 23, 7, HERE)
    for field in (
        "train_x",
        "train_y",
        "train_offsets",
        "train_sizes",
        "test_x",
        "test_y",
        "test_offsets",
        "test_sizes",
    ):
        assert torch.equal(getattr(got, field), getattr(ref, field)), field
    assert got.global_x is got.test_x and got.global_y is got.test_y
    for key in ("W", "b", "v", "train_index", "test_index"):
        np.testing.assert_array_equal(got.extras[key], ref.extras[key])


def test_synthetic_shapes_sizes_and_split() -> None:
    cfg = SyntheticData()
    d = build_data(cfg, 200, 0, HERE)
    assert d.num_clients == 200 and d.input_shape == (60,) and d.num_classes == 10
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    total = d.train_sizes_np + d.test_sizes_np
    assert total.min() >= cfg.min_samples
    # lognormal sizes with mean 100 (flooring costs ~0.5); the sample mean of 200 draws with
    # sigma 1 has a standard error of ~9
    assert 70 < total.mean() < 130
    assert total.max() > 3 * np.median(total)  # heavy tail
    assert all(d.test_sizes_np[i] == holdout_count(int(total[i]), cfg.test_fraction) for i in range(200))
    assert 0 <= int(d.train_y.min()) and int(d.train_y.max()) <= 9
    # global test set = the union of the client test sets (the same tensor)
    assert d.global_x is d.test_x and d.global_y is d.test_y


def test_synthetic_features_and_labels_follow_the_generator() -> None:
    """x ~ N(v_k, diag(j^-1.2)) and y = argmax(W_k^T x + b_k), with W_k, b_k, v_k in extras."""
    cfg = SyntheticData(mean_samples=4000, sigma_samples=0.0, alpha=1.0, beta=1.0)
    d = build_data(cfg, 3, 1, HERE)
    for k in range(3):
        x = torch.cat([d.client_train(k)[0], d.client_test(k)[0]]).double().numpy()
        y = torch.cat([d.client_train(k)[1], d.client_test(k)[1]]).numpy()
        assert len(x) == 4000 - 1 or len(x) == 4000
        np.testing.assert_allclose(x.var(axis=0), feature_variances(60), rtol=0.15)
        np.testing.assert_allclose(x.mean(axis=0), d.extras["v"][k], atol=0.1)
        pred = np.argmax(x @ d.extras["W"][k] + d.extras["b"][k], axis=1)
        assert (pred == y).mean() > 0.995  # float32 storage may flip exact near-ties only


def test_synthetic_heterogeneity_follows_alpha_beta() -> None:
    """u_k ~ N(0, alpha^2) is the mean of W_k's entries; with alpha = beta = 0 and iid, every
    client shares W, b and v = 0 (FedProx's Synthetic-IID)."""
    het = build_data(SyntheticData(alpha=1.0, beta=1.0, mean_samples=20), 300, 0, HERE)
    u = het.extras["W"].mean(axis=(1, 2))
    assert 0.8 < u.std() < 1.2
    iid = build_data(SyntheticData(alpha=0.0, beta=0.0, iid=True, mean_samples=20), 5, 0, HERE)
    w = iid.extras["W"]
    assert np.array_equal(w[0], w[4]) and np.array_equal(iid.extras["b"][0], iid.extras["b"][3])
    assert np.all(iid.extras["v"] == 0.0)


def test_synthetic_is_seeded_and_per_client() -> None:
    cfg = SyntheticData(mean_samples=30)
    a = build_data(cfg, 5, 7, HERE)
    b = build_data(cfg, 5, 7, HERE)
    more = build_data(cfg, 8, 7, HERE)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    for k in range(5):  # adding clients changes no one else's data or split
        assert torch.equal(a.client_train(k)[0], more.client_train(k)[0])
        assert torch.equal(a.client_test(k)[1], more.client_test(k)[1])
    c = build_data(cfg, 5, 8, HERE)
    assert not torch.equal(a.train_x[:10], c.train_x[:10])


def test_synthetic_pooled_partition_and_skew_rule() -> None:
    d = build_data(SyntheticData(mean_samples=100, partition=ClassesPerClientPartition(k=2)), 5, 0, HERE)
    for k in range(5):
        assert len(torch.unique(torch.cat([d.client_train(k)[1], d.client_test(k)[1]]))) == 2
    with pytest.raises(ScenarioError, match=r"data\.quantity_skew"):
        build_data(SyntheticData(quantity_skew=QuantitySkew(name="lognormal")), 4, 0, HERE)


# ------------------------------------------------------------------------------------------------
# Quadratic
# ------------------------------------------------------------------------------------------------


def test_quadratic_realises_a_and_c_exactly() -> None:
    """With a_j = sqrt(d lambda_j) u_j and b_j = a_j^T c_i:
    1/2 mean_j (a_j^T w - b_j)^2 = 1/2 (w - c_i)^T A_i (w - c_i), and its gradient is A_i (w - c_i)."""
    cfg = QuadraticData(dimension=6, mu=0.5, L=8.0, spread=2.0)
    d = build_data(cfg, 4, 3, HERE)
    model = build_model(QuadraticModel(), d)
    assert d.task == "regression" and d.num_classes == 0 and model.num_params == 6
    big_a, c = d.extras["A"], d.extras["c"]
    assert big_a.shape == (4, 6, 6) and c.shape == (4, 6)
    rng = np.random.default_rng(0)
    for i in range(4):
        lam = np.linalg.eigvalsh(big_a[i])
        np.testing.assert_allclose(big_a[i], big_a[i].T)
        assert lam.min() == pytest.approx(0.5) and lam.max() == pytest.approx(8.0)
        x, y = d.client_train(i)
        xt, yt = d.client_test(i)
        assert torch.equal(x, xt) and torch.equal(y, yt) and len(y) == 6
        for _ in range(3):
            w = rng.normal(size=6)
            closed = 0.5 * (w - c[i]) @ big_a[i] @ (w - c[i])
            wt = torch.tensor(w, dtype=torch.float64)
            m = torch.ones(6, dtype=torch.float64)
            got = model.loss(wt, x.double(), y.double(), m).item()
            assert got == pytest.approx(closed, rel=1e-5, abs=1e-5)
            g = grad(model.loss)(wt, x.double(), y.double(), m).numpy()
            np.testing.assert_allclose(g, big_a[i] @ (w - c[i]), rtol=1e-4, atol=1e-4)


def test_quadratic_rejects_other_partitions_and_bad_curvature() -> None:
    with pytest.raises(ScenarioError, match=r"data\.partition"):
        build_data(QuadraticData(partition=IidPartition()), 3, 0, HERE)
    with pytest.raises(ScenarioError, match=r"data\.L"):
        build_data(QuadraticData(mu=2.0, L=1.0), 3, 0, HERE)


def test_to_keeps_shared_tensors_shared() -> None:
    d = build_data(SyntheticData(mean_samples=20), 3, 0, HERE).to("cpu", torch.float64)
    assert d.train_x.dtype == torch.float64 and d.train_y.dtype == torch.int64
    assert d.global_x is d.test_x
    assert d.nbytes() == sum(t.element_size() * t.numel() for t in (d.train_x, d.train_y, d.test_x, d.test_y))
