"""Server steps and their coefficients, by hand (FedAvg, FedAsync, FedBuff, pFedMe).

The closed forms are checked on the object runs use: ``server_rule(server, kind)`` (its ``policy``
weighs and bounds arrivals in the engine, its ``step`` makes the step in TorchBackend.apply), and
on TorchBackend.apply itself; a test checks that ``build`` hands that composition to both."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from asyncfl.algorithms.server import (
    STEPS,
    aggregation,
    apply_step,
    delta_step,
    mixing_step,
    sequential_mixing_step,
    step_coefficients,
)
from asyncfl.config.loader import validate
from asyncfl.config.schema import ExponentialWeight, HingeWeight, PolynomialWeight, ServerConfig
from asyncfl.errors import ScenarioError
from asyncfl.exec.torch_backend import TorchBackend
from asyncfl.runs import runner
from asyncfl.runs.runner import build
from asyncfl.runs.server_rule import ServerRule, server_rule
from asyncfl.sim import staleness
from asyncfl.sim.staleness import WEIGHTS, exponential, hinge, polynomial, schema_names
from asyncfl.types import ClientId, ModelVersion, SimTime

D64 = torch.float64


def test_delta_step_adds_the_weighted_deltas() -> None:
    x = torch.tensor([1.0, 2.0], dtype=D64)
    deltas = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=D64)
    assert torch.equal(delta_step(x, deltas, [0.5, 0.25]), torch.tensor([1.5, 3.0], dtype=D64))
    assert torch.equal(delta_step(x, deltas, torch.tensor([0.5, 0.25], dtype=D64)), torch.tensor([1.5, 3.0], dtype=D64))


def test_fedasync_single_update_is_the_convex_mix() -> None:
    """Xie et al.: x_t = (1 - alpha_t) x_{t-1} + alpha_t x_new, alpha_t = a s(tau)."""
    rule = server_rule(ServerConfig(lr=0.6, staleness_weight=PolynomialWeight(a=0.5)), "mixing")
    s = rule.policy.weigh(3)  # (3 + 1)^-0.5 = 0.5
    assert s == pytest.approx(0.5)
    assert s is not None
    coeffs = rule.step.coefficients([s], [37])
    assert coeffs == pytest.approx([0.3])
    x = torch.tensor([1.0, -1.0, 2.0], dtype=D64)
    x_client = torch.tensor([3.0, 1.0, 0.0], dtype=D64)
    expected = (1 - 0.3) * x + 0.3 * x_client
    assert torch.allclose(mixing_step(x, x_client[None], coeffs), expected, atol=1e-15)
    # the step builds the client model from the pulled (stale) base and the delta
    base = torch.tensor([0.0, 0.0, 1.0], dtype=D64)
    assert rule.step.needs_bases
    assert torch.allclose(rule.step(x, (x_client - base)[None], base[None], coeffs), expected, atol=1e-15)
    got = apply_step("mixing", x, (x_client - base)[None], base[None], coeffs)
    assert torch.allclose(got, expected, atol=1e-15)
    with pytest.raises(ValueError, match="bases"):
        rule.step(x, (x_client - base)[None], None, coeffs)
    with pytest.raises(ValueError, match="bases"):
        apply_step("mixing", x, (x_client - base)[None], None, coeffs)


def test_fedbuff_uniform_staleness_weighted_coefficients() -> None:
    """FedBuff: x <- x + eta_g (1/K) sum_k s(tau_k) Delta_k, here K = 3, eta_g = 2, s polynomial(1)."""
    server = ServerConfig(
        mode="buffered",
        buffer_size=3,
        concurrency=3,
        lr=2.0,
        aggregation="uniform",
        staleness_weight=PolynomialWeight(a=1.0),
    )
    rule = server_rule(server, "delta")
    assert rule.policy.buffer_size == 3 and not rule.step.needs_bases
    taus = [0, 1, 3]
    weights = [rule.policy.weight(t) for t in taus]  # 1, 1/2, 1/4
    assert weights == [polynomial(1.0)(t) for t in taus] == [1.0, 0.5, 0.25]
    coeffs = rule.step.coefficients(weights, [10, 20, 70])
    assert coeffs == pytest.approx([2.0 / 3, 1.0 / 3, 1.0 / 6])
    x = torch.zeros(2, dtype=D64)
    deltas = torch.tensor([[3.0, 0.0], [0.0, 3.0], [6.0, 6.0]], dtype=D64)
    assert torch.allclose(rule.step(x, deltas, None, coeffs), torch.tensor([3.0, 2.0], dtype=D64))
    assert torch.allclose(delta_step(x, deltas, coeffs), torch.tensor([3.0, 2.0], dtype=D64))


def test_samples_aggregation_is_fedavg_weighting() -> None:
    """FedAvg: p_k = n_k / sum_j n_j, times s(tau_k) and the server lr."""
    server = ServerConfig(mode="sync", lr=1.0, aggregation="samples", staleness_weight=HingeWeight(a=10.0, b=2))
    step = server_rule(server, "delta").step
    assert step.coefficients([1.0, 1.0, 1.0], [10, 30, 60]) == pytest.approx([0.1, 0.3, 0.6])
    w = server_rule(server, "delta").policy.weight
    assert server_rule(server, "delta").policy.weigh(4) == 1.0  # a sync round's updates are all fresh
    coeffs = step.coefficients([w(0), w(4)], [50, 50])
    assert coeffs == pytest.approx([0.5, 0.5 / 21])
    assert step_coefficients(server, [w(0), w(4)], [50, 50], "delta") == coeffs
    # no samples at all falls back to uniform; nothing to aggregate gives nothing
    assert step_coefficients(server, [1.0, 1.0], [0, 0]) == pytest.approx([0.5, 0.5])
    assert step_coefficients(server, [], []) == []
    with pytest.raises(ValueError, match="sample counts"):
        step_coefficients(server, [1.0], [1, 2])


def test_local_training_has_no_server_step() -> None:
    rule = server_rule(ServerConfig(), "none")
    assert rule.step.coefficients([1.0, 0.5], [3, 4]) == [0.0, 0.0]
    x = torch.ones(3)
    assert torch.equal(rule.step(x, torch.ones(2, 3), None, [1.0, 1.0]), x)
    assert torch.equal(apply_step("none", x, torch.ones(2, 3), None, [1.0, 1.0]), x)


def test_pfedme_sync_mixing_is_a_delta_step_with_lr_beta() -> None:
    """(1 - beta) x + beta mean_i w_i = x + beta mean_i (w_i - x) for clients that started at x."""
    beta = 0.7
    server = ServerConfig(mode="sync", lr=beta, aggregation="uniform", clients_per_round=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, generator=g, dtype=D64)
    models = torch.randn(4, 5, generator=g, dtype=D64)
    coeffs = server_rule(server, "delta").step.coefficients([1.0] * 4, [5, 9, 2, 7])
    expected = (1 - beta) * x + beta * models.mean(0)
    assert torch.allclose(server_rule(server, "delta").step(x, models - x, None, coeffs), expected, atol=1e-14)
    assert torch.allclose(delta_step(x, models - x, coeffs), expected, atol=1e-14)
    # the same as FedAsync-style mixing of the client models that started from x
    mixing = server_rule(server, "mixing").step
    assert torch.allclose(mixing(x, models - x, x.expand(4, 5), coeffs), expected, atol=1e-14)
    assert torch.allclose(mixing_step(x, models, coeffs), expected, atol=1e-14)


def test_weights_are_per_update_not_cumulative() -> None:
    """Applying the same stale update twice uses the same coefficient both times."""
    rule = server_rule(ServerConfig(lr=0.5, staleness_weight=PolynomialWeight(a=0.5)), "mixing")
    s = rule.policy.weight
    first = rule.step.coefficients([s(8)], [1])
    second = rule.step.coefficients([s(8)], [1])
    assert first == second == pytest.approx([0.5 / 3.0])


def test_auto_aggregation_is_fedavg_for_sync_and_fedbuff_otherwise() -> None:
    """Default ``auto``: FedAvg's n_k / n for sync rounds, FedBuff's 1/K for buffered (whatever
    the clients' sizes), a full step for async."""
    assert ServerConfig().aggregation == "auto"
    sync = ServerConfig(mode="sync", clients_per_round=3)
    assert aggregation(sync) == "samples"
    assert step_coefficients(sync, [1.0, 1.0, 1.0], [10, 30, 60]) == pytest.approx([0.1, 0.3, 0.6])
    buffered = ServerConfig(mode="buffered", buffer_size=3, concurrency=3)
    assert aggregation(buffered) == "uniform"
    assert step_coefficients(buffered, [1.0, 0.5, 1.0], [10, 30, 60]) == pytest.approx([1 / 3, 1 / 6, 1 / 3])
    assert step_coefficients(ServerConfig(lr=0.4), [0.5], [17]) == pytest.approx([0.2])


def test_a_wait_step_keeps_each_updates_weight() -> None:
    """Policy wait applies the updates that waited together: m != K. Each keeps its own weight:
    async (K = 1) gives every update a full step, buffered 1/K each (samples: m/K of a step in
    total, shared by size); drop-policy steps (m = K) are unchanged."""
    async_wait = ServerConfig(mode="async", concurrency=4, max_staleness=1, staleness_policy="wait", lr=0.5)
    rule = server_rule(async_wait, "delta")
    assert rule.step.coefficients([1.0, 0.5, 0.25], [5, 5, 5]) == pytest.approx([0.5, 0.25, 0.125])
    assert rule.step.one_at_a_time(3) and not rule.step.one_at_a_time(1)
    # the wait policy never drops: it holds the step while a task would become staler than tau_max
    assert rule.policy.weigh(7) == 1.0 and rule.policy.wait and not rule.policy.drop
    assert rule.policy.step_allowed(version=3, oldest_base=3) and not rule.policy.step_allowed(3, 2)  # 2 + 1 < 4
    assert rule.policy.step_allowed(3, None)
    buffered = ServerConfig(
        mode="buffered", buffer_size=2, concurrency=4, staleness_policy="wait", aggregation="uniform"
    )
    assert step_coefficients(buffered, [1.0, 1.0, 1.0], [1, 2, 3]) == pytest.approx([0.5, 0.5, 0.5])
    by_size = ServerConfig(mode="buffered", buffer_size=4, concurrency=4, aggregation="samples")
    assert step_coefficients(by_size, [1.0, 1.0], [10, 30]) == pytest.approx([2 / 4 * 10 / 40, 2 / 4 * 30 / 40])
    assert step_coefficients(by_size, [1.0] * 4, [10, 30, 40, 20]) == [0.1, 0.3, 0.4, 0.2]  # m = K: exact
    # a sync round renormalises over the clients that arrived (the deadline may have cut some)
    sync = ServerConfig(mode="sync", clients_per_round=5, aggregation="uniform")
    assert step_coefficients(sync, [1.0, 1.0], [3, 9]) == pytest.approx([0.5, 0.5])


def test_sequential_mixing_by_hand() -> None:
    """FedAsync's updater applying two arrivals one after the other: x = 0, client models 1 and 2,
    c = 0.5 each: x_1 = 0.5, x_2 = 0.5 + 0.5 (2 - 0.5) = 1.25. One update: the single mix."""
    x = torch.zeros(1, dtype=D64)
    models = torch.tensor([[1.0], [2.0]], dtype=D64)
    assert sequential_mixing_step(x, models, [0.5, 0.5]).item() == 1.25
    assert torch.equal(sequential_mixing_step(x, models[:1], [0.3]), mixing_step(x, models[:1], [0.3]))


def test_hinge_boundary_and_exponential_values() -> None:
    """hinge(a=10, b=2): 1 up to tau = b inclusive, then 1 / (10 (tau - 2) + 1); exponential exp(-a tau)."""
    h = server_rule(ServerConfig(staleness_weight=HingeWeight(a=10.0, b=2)), "delta").policy.weight
    assert [h(t) for t in (0, 2, 3, 5)] == [1.0, 1.0, 1 / 11, 1 / 31]
    assert [hinge(10.0, 2)(t) for t in (0, 2, 3, 5)] == [1.0, 1.0, 1 / 11, 1 / 31]
    e = server_rule(ServerConfig(staleness_weight=ExponentialWeight(a=0.5)), "delta").policy.weight
    assert e(0) == 1.0 and e(2) == pytest.approx(0.36787944117144233, rel=1e-15)
    assert exponential(0.5)(2) == e(2)


def test_drop_policy_bounds_staleness() -> None:
    """Policy drop: an update staler than tau_max gets no weight (the engine drops it); at tau_max
    it is weighed by s(tau). Without a bound nothing is dropped."""
    server = ServerConfig(max_staleness=2, staleness_policy="drop", staleness_weight=PolynomialWeight(a=1.0))
    policy = server_rule(server, "delta").policy
    assert [policy.weigh(t) for t in (0, 2, 3, 10)] == [1.0, 1 / 3, None, None]
    assert policy.drop and policy.tau_max == 2 and policy.buffer_size == 1
    unbounded = server_rule(ServerConfig(staleness_weight=PolynomialWeight(a=1.0)), "delta").policy
    assert unbounded.weigh(10) == pytest.approx(1 / 11) and not unbounded.drop


def test_runs_use_the_composed_server_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """build() composes the server rule once: the engine gets its policy, the backend its step."""
    made: list[ServerRule] = []

    def spy(server: ServerConfig, kind: Any) -> ServerRule:
        made.append(server_rule(server, kind))
        return made[-1]

    monkeypatch.setattr(runner, "server_rule", spy)
    built = backend_and_engine({"name": "fedasync"}, {"mode": "async", "concurrency": 2, "lr": 0.6})
    assert len(made) == 1
    assert built.engine.policy is made[0].policy and built.backend.step is made[0].step
    assert built.backend.step.kind == "mixing" and built.backend.step.lr == 0.6


def test_every_schema_weight_and_step_kind_has_its_function() -> None:
    """The registries match the schema: a weight or step kind without its function (or the
    reverse) fails at import; this is the check that import runs."""
    assert schema_names() == set(WEIGHTS.names()) == {"constant", "polynomial", "hinge", "exponential"}
    assert set(STEPS.names()) == {"delta", "mixing", "none"}
    WEIGHTS.add("toy", lambda cfg: lambda tau: 0.5)
    try:
        with pytest.raises(ImportError, match="toy"):
            staleness._check_complete()
    finally:
        del WEIGHTS._items["toy"]
    staleness._check_complete()
    with pytest.raises(ScenarioError, match="unknown staleness weight 'nope'"):
        WEIGHTS.get("nope")


# ------------------------------------------------------------------------------------------------
# the same rules through TorchBackend.apply (the path runs take)
# ------------------------------------------------------------------------------------------------


def backend_for(algorithm: dict[str, Any], server: dict[str, Any]) -> TorchBackend:
    return backend_and_engine(algorithm, server).backend


def backend_and_engine(algorithm: dict[str, Any], server: dict[str, Any]) -> Any:
    sc = validate(
        {
            "seed": 0,
            "data": {"dataset": "synthetic", "mean_samples": 20, "sigma_samples": 0.8, "dimension": 3, "classes": 2},
            "model": "logreg",
            "clients": {"count": 4},
            "algorithm": algorithm,
            "server": server,
            "execution": {"dtype": "float64"},
        }
    )
    return build(sc)


def arrive(b: TorchBackend, task: int, client: int, version: int, delta: Tensor) -> None:
    """Task ``task`` of ``client`` pulled ``version`` and its update is ``delta`` (set directly:
    these tests are about the server step, not the client rule)."""
    b.dispatch(task, ClientId(client), ModelVersion(version), 0, SimTime(math.inf))
    b.executor.pending.pop(task)
    b.executor.results[task] = delta


def deltas(b: TorchBackend, k: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(k)
    return [torch.randn(b.current.numel(), generator=g, dtype=D64) for _ in range(k)]


def test_backend_fedasync_mixes_the_stale_client_model() -> None:
    """x_2 = x_1 + c (x_0 + Delta_0 - x_1), c = a s(1): the stale client's own model (its pulled
    base plus its change) is mixed into the current model, not its delta added."""
    b = backend_for({"name": "fedasync"}, {"mode": "async", "concurrency": 2, "lr": 0.6})
    x0 = b.current.clone()
    d0, d1 = deltas(b, 2)
    arrive(b, 0, 0, 0, d0)
    arrive(b, 1, 1, 0, d1)
    b.apply([(1, 1.0)], ModelVersion(1), SimTime(1.0))
    x1 = x0 + 0.6 * d1
    torch.testing.assert_close(b.current, x1, rtol=0, atol=1e-15)
    s1 = 2.0**-0.5  # polynomial(0.5) at tau = 1, passed by the engine
    b.apply([(0, s1)], ModelVersion(2), SimTime(2.0))
    c = 0.6 * s1
    torch.testing.assert_close(b.current, x1 + c * (x0 + d0 - x1), rtol=0, atol=1e-14)
    assert (b.current - (x1 + c * d0)).abs().max() > 1e-3  # a delta step would differ


def test_backend_fedbuff_default_is_one_over_k_whatever_the_sizes() -> None:
    b = backend_for({"name": "fedbuff"}, {"mode": "buffered", "concurrency": 2, "buffer_size": 2, "lr": 2.0})
    sizes = b.data.train_sizes_np
    assert sizes[0] != sizes[1]
    x0 = b.current.clone()
    d0, d1 = deltas(b, 2)
    arrive(b, 0, 0, 0, d0)
    arrive(b, 1, 1, 0, d1)
    b.apply([(0, 1.0), (1, 0.5)], ModelVersion(1), SimTime(1.0))
    torch.testing.assert_close(b.current, x0 + 2.0 * (d0 + 0.5 * d1) / 2, rtol=0, atol=1e-14)


def test_backend_async_wait_step_applies_each_update_in_full() -> None:
    """Policy wait, async: two updates that waited are applied in one step, each at its full
    weight: delta rules add both; FedAsync mixes one after the other, in arrival order."""
    server = {"mode": "async", "concurrency": 2, "lr": 0.5, "max_staleness": 1, "staleness_policy": "wait"}
    b = backend_for({"name": "fedbuff"}, server)
    x0 = b.current.clone()
    d0, d1 = deltas(b, 2)
    arrive(b, 0, 0, 0, d0)
    arrive(b, 1, 1, 0, d1)
    b.apply([(0, 1.0), (1, 0.5)], ModelVersion(1), SimTime(1.0))
    torch.testing.assert_close(b.current, x0 + 0.5 * d0 + 0.25 * d1, rtol=0, atol=1e-14)

    m = backend_for({"name": "fedasync"}, server)
    x0 = m.current.clone()
    arrive(m, 0, 0, 0, d0)
    arrive(m, 1, 1, 0, d1)
    m.apply([(0, 1.0), (1, 0.5)], ModelVersion(1), SimTime(1.0))
    y = x0 + 0.5 * d0  # (1 - 0.5) x0 + 0.5 (x0 + d0)
    torch.testing.assert_close(m.current, y + 0.25 * (x0 + d1 - y), rtol=0, atol=1e-14)
