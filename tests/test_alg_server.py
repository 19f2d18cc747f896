"""Server steps and their coefficients, by hand (FedAvg, FedAsync, FedBuff, pFedMe)."""

from __future__ import annotations

import pytest
import torch

from asyncfl.algorithms.server import apply_step, delta_step, mixing_step, step_coefficients
from asyncfl.config.schema import PolynomialWeight, ServerConfig
from asyncfl.staleness import hinge, polynomial, weight_fn

D64 = torch.float64


def test_delta_step_adds_the_weighted_deltas() -> None:
    x = torch.tensor([1.0, 2.0], dtype=D64)
    deltas = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=D64)
    assert torch.equal(delta_step(x, deltas, [0.5, 0.25]), torch.tensor([1.5, 3.0], dtype=D64))
    assert torch.equal(delta_step(x, deltas, torch.tensor([0.5, 0.25], dtype=D64)), torch.tensor([1.5, 3.0], dtype=D64))


def test_fedasync_single_update_is_the_convex_mix() -> None:
    """Xie et al.: x_t = (1 - alpha_t) x_{t-1} + alpha_t x_new, alpha_t = a s(tau)."""
    server = ServerConfig(lr=0.6, staleness_weight=PolynomialWeight(a=0.5))
    s = weight_fn(server.staleness_weight)(3)  # (3 + 1)^-0.5 = 0.5
    assert s == pytest.approx(0.5)
    coeffs = step_coefficients(server, [s], [37], "mixing")
    assert coeffs == pytest.approx([0.3])
    x = torch.tensor([1.0, -1.0, 2.0], dtype=D64)
    x_client = torch.tensor([3.0, 1.0, 0.0], dtype=D64)
    expected = (1 - 0.3) * x + 0.3 * x_client
    assert torch.allclose(mixing_step(x, x_client[None], coeffs), expected, atol=1e-15)
    # apply_step builds the client model from the pulled (stale) base and the delta
    base = torch.tensor([0.0, 0.0, 1.0], dtype=D64)
    got = apply_step("mixing", x, (x_client - base)[None], base[None], coeffs)
    assert torch.allclose(got, expected, atol=1e-15)
    with pytest.raises(ValueError, match="bases"):
        apply_step("mixing", x, (x_client - base)[None], None, coeffs)


def test_fedbuff_uniform_staleness_weighted_coefficients() -> None:
    """FedBuff: x <- x + eta_g (1/K) sum_k s(tau_k) Delta_k, here K = 3, eta_g = 2, s polynomial(1)."""
    server = ServerConfig(mode="buffered", buffer_size=3, concurrency=3, lr=2.0, aggregation="uniform")
    s = polynomial(1.0)
    taus = [0, 1, 3]
    weights = [s(t) for t in taus]  # 1, 1/2, 1/4
    coeffs = step_coefficients(server, weights, [10, 20, 70], "delta")
    assert coeffs == pytest.approx([2.0 / 3, 1.0 / 3, 1.0 / 6])
    x = torch.zeros(2, dtype=D64)
    deltas = torch.tensor([[3.0, 0.0], [0.0, 3.0], [6.0, 6.0]], dtype=D64)
    assert torch.allclose(delta_step(x, deltas, coeffs), torch.tensor([3.0, 2.0], dtype=D64))


def test_samples_aggregation_is_fedavg_weighting() -> None:
    """FedAvg: p_k = n_k / sum_j n_j, times s(tau_k) and the server lr."""
    server = ServerConfig(mode="sync", lr=1.0, aggregation="samples")
    assert step_coefficients(server, [1.0, 1.0, 1.0], [10, 30, 60]) == pytest.approx([0.1, 0.3, 0.6])
    w = hinge(10.0, 2)
    coeffs = step_coefficients(server, [w(0), w(4)], [50, 50], "delta")
    assert coeffs == pytest.approx([0.5, 0.5 / 21])
    # no samples at all falls back to uniform; nothing to aggregate gives nothing
    assert step_coefficients(server, [1.0, 1.0], [0, 0]) == pytest.approx([0.5, 0.5])
    assert step_coefficients(server, [], []) == []
    with pytest.raises(ValueError, match="sample counts"):
        step_coefficients(server, [1.0], [1, 2])


def test_local_training_has_no_server_step() -> None:
    server = ServerConfig()
    assert step_coefficients(server, [1.0, 0.5], [3, 4], "none") == [0.0, 0.0]
    x = torch.ones(3)
    assert torch.equal(apply_step("none", x, torch.ones(2, 3), None, [1.0, 1.0]), x)


def test_pfedme_sync_mixing_is_a_delta_step_with_lr_beta() -> None:
    """(1 - beta) x + beta mean_i w_i = x + beta mean_i (w_i - x) for clients that started at x."""
    beta = 0.7
    server = ServerConfig(mode="sync", lr=beta, aggregation="uniform", clients_per_round=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, generator=g, dtype=D64)
    models = torch.randn(4, 5, generator=g, dtype=D64)
    coeffs = step_coefficients(server, [1.0] * 4, [5, 9, 2, 7], "delta")
    expected = (1 - beta) * x + beta * models.mean(0)
    assert torch.allclose(delta_step(x, models - x, coeffs), expected, atol=1e-14)
    assert torch.allclose(mixing_step(x, models, coeffs), expected, atol=1e-14)


def test_weights_are_per_update_not_cumulative() -> None:
    """Applying the same stale update twice uses the same coefficient both times."""
    server = ServerConfig(lr=0.5, staleness_weight=PolynomialWeight(a=0.5))
    s = weight_fn(server.staleness_weight)
    first = step_coefficients(server, [s(8)], [1], "mixing")
    second = step_coefficients(server, [s(8)], [1], "mixing")
    assert first == second == pytest.approx([0.5 / 3.0])
