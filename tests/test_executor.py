"""The lazy batched executor: batched runs equal one-at-a-time runs, chunking changes nothing,
the executor's sampler and dense loss equal their references, and the version store's memory
follows the live versions, not the clients."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import grad, vmap

from asyncfl.algorithms.functional import loss_grad
from asyncfl.config.loader import validate
from asyncfl.exec import executor as executor_module
from asyncfl.exec.executor import DenseLoss, Executor, Job, MinibatchSampler, fast_loss
from asyncfl.exec.torch_backend import DIAGNOSTIC_METRICS
from asyncfl.exec.versions import VersionStore
from asyncfl.models.base import FlatModel
from asyncfl.models.cnn import CNN
from asyncfl.models.dense import DenseNet
from asyncfl.rng import bits, stream_key
from asyncfl.runs.runner import build
from asyncfl.sim.records import EVENT_COLUMNS, METRIC_COLUMNS

REL = 1e-5

BASE: dict[str, Any] = {
    "seed": 3,
    "data": {"dataset": "synthetic", "mean_samples": 24, "sigma_samples": 0.6, "dimension": 10, "classes": 4},
    "model": {"name": "mlp", "hidden": [8], "activation": "elu"},
    "clients": {"count": 14},
    "system": {"compute": {"speed": {"dist": "lognormal", "mean": 200.0, "sigma": 1.0}}},
    "stop": {"client_updates": 36},
    "eval": {"every_steps": 4, "grad_norm": True},
}

# Every algorithm, each under the server mode it is usually run with.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "fedavg": (
        {"name": "fedavg", "lr": 0.1, "local_steps": 2, "batch_size": 8},
        {"mode": "sync", "clients_per_round": 5},
    ),
    "fedasync": (
        {"name": "fedasync", "lr": 0.1, "local_steps": 2, "batch_size": 8, "weight_decay": 0.01},
        {"mode": "async", "concurrency": 6, "lr": 0.5, "max_staleness": 4, "staleness_weight": "polynomial"},
    ),
    "fedbuff": (
        {"name": "fedbuff", "lr": 0.1, "local_steps": 3, "batch_size": 8},
        {"mode": "buffered", "concurrency": 8, "buffer_size": 3},
    ),
    "per_fedavg_fo": (
        {"name": "per_fedavg", "variant": "fo", "local_steps": 2, "batch_size": 6},
        {"mode": "buffered", "concurrency": 8, "buffer_size": 2},
    ),
    "per_fedavg_hf": (
        {"name": "per_fedavg", "variant": "hf", "local_steps": 2, "batch_size": 6},
        {"mode": "async", "concurrency": 8},
    ),
    "per_fedavg_exact": (
        {"name": "per_fedavg", "variant": "exact", "local_steps": 2, "batch_size": 6},
        {"mode": "buffered", "concurrency": 8, "buffer_size": 2},
    ),
    "pfedme": (
        {"name": "pfedme", "local_rounds": 2, "inner_steps": 3, "batch_size": None, "lam": 5.0},
        {"mode": "buffered", "concurrency": 8, "buffer_size": 2},
    ),
    "local": ({"name": "local", "lr": 0.1, "local_steps": 2, "batch_size": 8}, {"mode": "async", "concurrency": 5}),
}


@pytest.fixture(autouse=True)
def _vmap_small_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """These runs are tiny (a handful of clients in flight): let calls of two or more jobs take
    the vmapped path, so both formulations are exercised whatever the CPU cost model says."""
    monkeypatch.setattr(executor_module, "CPU_MIN_VMAP", 2)


def scenario(name: str, **execution: Any) -> Any:
    alg, server = CASES[name]
    data = copy.deepcopy(BASE)
    data["algorithm"] = alg
    data["server"] = server
    data["execution"] = execution
    return validate(data)


def run(sc: Any, cancel_certain_drops: bool = True) -> dict[str, Any]:
    built = build(sc)
    if not cancel_certain_drops:
        built.backend.executor.before_chunk = None
    result = built.engine.run()
    return {
        "events": pd.DataFrame(list(result.events), columns=list(EVENT_COLUMNS)),
        "metrics": pd.DataFrame(list(result.metrics), columns=list(METRIC_COLUMNS)),
        "model": built.backend.current.clone(),
        "stats": dict(built.backend.executor.stats),
        "backend": built.backend,
    }


(DIAGNOSTIC,) = DIAGNOSTIC_METRICS  # versions_held: compared separately (batched <= one at a time)


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Identical event logs; every learning metric equal within REL relative (NaN where NaN)."""
    pd.testing.assert_frame_equal(a["events"], b["events"])
    ma, mb = (r["metrics"][r["metrics"]["metric"] != DIAGNOSTIC] for r in (a, b))
    assert list(ma["metric"]) == list(mb["metric"])
    assert list(ma["server_version"]) == list(mb["server_version"])
    va, vb = ma["value"].to_numpy(float), mb["value"].to_numpy(float)
    np.testing.assert_allclose(va, vb, rtol=REL, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(a["model"], b["model"], rtol=REL, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# batched == one at a time, every algorithm; chunking changes nothing
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_batched_equals_one_at_a_time(name: str) -> None:
    batched = run(scenario(name, batching="auto"))
    single = run(scenario(name, batching="none"))
    assert_same(batched, single)
    assert len(batched["events"]) > 20
    assert single["stats"]["calls"] == single["stats"]["jobs"]
    held = [r["metrics"][r["metrics"]["metric"] == DIAGNOSTIC]["value"].to_numpy() for r in (batched, single)]
    assert len(held[0]) == len(held[1]) and (held[0] <= held[1]).all()  # none in local mode
    # The lazy executor really batched: fewer calls than jobs.
    assert batched["stats"]["calls"] < batched["stats"]["jobs"]


@pytest.mark.parametrize("name", ["fedasync", "per_fedavg_hf"])
def test_certain_drops_are_never_computed_and_change_nothing(name: str) -> None:
    """Async with policy drop: updates the engine knows will arrive staler than tau are cancelled
    before any chunk computes them. Same event log, same metrics (versions_held aside: fewer
    versions are held), fewer jobs computed."""
    alg, server = CASES[name]
    data = copy.deepcopy(BASE)
    data["algorithm"] = alg
    data["server"] = {**server, "mode": "async", "concurrency": 10, "max_staleness": 1, "staleness_policy": "drop"}
    data["stop"] = {"client_updates": 90}
    sc = validate(data)
    pruned, full = run(sc), run(sc, cancel_certain_drops=False)
    dropped = int((pruned["events"]["status"] == "dropped_stale").sum())
    assert dropped > 20
    held = [r["metrics"][r["metrics"]["metric"] == DIAGNOSTIC]["value"].to_numpy() for r in (pruned, full)]
    assert (held[0] <= held[1]).all() and (held[0] < held[1]).any()
    assert_same(pruned, full)
    assert pruned["stats"]["jobs"] < full["stats"]["jobs"] - dropped // 2


def test_chunks_take_the_soonest_arrivals_and_never_lost_updates() -> None:
    """A call computes the needed job and the pending jobs whose updates arrive soonest (the
    engine's ``due``); updates that never reach the server (lost to dropout or availability) are
    never computed. With chunks far smaller than the in-flight set, every computed update but
    those still in flight at the stop is used."""
    alg, server = CASES["fedbuff"]
    data = copy.deepcopy(BASE)
    data["algorithm"] = alg
    data["server"] = {**server, "concurrency": 12}
    data["system"] = {
        **data["system"],
        "dropout": 0.2,
        "availability": {"model": "on_off", "mean_on": 60.0, "mean_off": 20.0},
    }
    data["execution"] = {"max_batch": 3}
    data["stop"] = {"client_updates": 60}
    built = build(validate(data))
    ex = built.backend.executor
    computed: list[int] = []
    vmap_call, loop_call = ex._vmap, ex._loop

    def vmapped(chunk: list[Job]) -> list[torch.Tensor]:
        left = min((j.due for j in ex.pending.values()), default=np.inf)
        assert max(j.due for j in chunk[1:]) <= left  # companions: the soonest due of the pending
        computed.extend(j.task for j in chunk)
        return vmap_call(chunk)

    def looped(jobs: list[Job]) -> list[torch.Tensor]:
        computed.extend(j.task for j in jobs)
        return loop_call(jobs)

    ex._vmap, ex._loop = vmapped, looped  # type: ignore[method-assign]
    events = pd.DataFrame(list(built.engine.run().events), columns=list(EVENT_COLUMNS))
    status = dict(zip(events["task"], events["status"], strict=True))
    lost = {t for t, s in status.items() if s in ("dropped_dropout", "dropped_offline")}
    assert len(lost) > 5 and not lost & set(computed)
    assert len(computed) == len(set(computed)) and ex.stats["vmap_jobs"] > 30
    unused = [t for t in computed if status[t] not in ("applied", "buffered")]
    assert all(status[t] == "in_flight" for t in unused)


@pytest.mark.parametrize("name", ["fedbuff", "per_fedavg_hf"])
def test_chunking_changes_nothing(name: str) -> None:
    auto = run(scenario(name))
    for max_batch in (1, 3):
        chunked = run(scenario(name, max_batch=max_batch))
        assert_same(auto, chunked)
        assert chunked["stats"]["largest_call"] <= max_batch


def test_vmapped_chunks_of_any_size_agree() -> None:
    """Executor.compute over the same jobs: one at a time, vmapped chunks of 1, 3, 7 and all."""
    built = build(scenario("per_fedavg_hf"))
    ex = built.backend.executor
    w = built.backend.current
    jobs = [Job(i, i % 14, w + 0.01 * (i % 5), i // 14) for i in range(20)]
    ref = torch.stack(Executor(ex.model, ex.rule, ex.data, 3, "none").compute(jobs))
    outs = []
    for max_batch in (1, 3, 7, 64):
        e = Executor(ex.model, ex.rule, ex.data, 3, "auto", max_batch=max_batch, min_vmap=1)
        outs.append(torch.stack(e.compute(jobs)))
        assert e.stats["vmap_jobs"] == 20
    for out in outs:
        torch.testing.assert_close(out, ref, rtol=REL, atol=1e-7)


def test_chunks_are_equal_and_bounded() -> None:
    built = build(scenario("fedbuff", max_batch=4))
    ex = built.backend.executor
    jobs = [Job(i, i, built.backend.current, 0) for i in range(10)]
    sizes = [len(c) for c in ex._chunks(jobs)]
    assert sizes == [4, 3, 3]
    assert [len(c) for c in ex._chunks(jobs[:8])] == [4, 4]
    assert ex._chunks([]) == []


def test_small_pending_sets_use_the_loop() -> None:
    built = build(scenario("fedbuff"))
    ex = built.backend.executor
    jobs = [Job(i, i, built.backend.current, 0) for i in range(ex.min_vmap - 1)]
    ex.compute(jobs)
    assert ex.stats["loop_jobs"] == len(jobs) and ex.stats["vmap_jobs"] == 0


# ------------------------------------------------------------------------------------------------
# minibatches and the dense loss
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [5, 32, None])
def test_host_sampler_equals_device_sampler(batch_size: int | None) -> None:
    built = build(scenario("fedbuff"))
    s = MinibatchSampler(built.data, 11, steps=3, draws=2, batch_size=batch_size)
    clients = np.arange(14, dtype=np.int64)
    counters = (np.arange(14) * 7 + 1).astype(np.int64)
    gidx, mask = s.indices(clients, counters)
    for k in range(14):
        one, b = s.indices_one(int(clients[k]), int(counters[k]))
        assert np.array_equal(gidx[k, ..., :b].numpy(), one)
        assert bool((mask[k, ..., :b] == 1).all()) and bool((mask[k, ..., b:] == 0).all())


def test_sampler_draws_the_smallest_keys_of_the_scalar_hash() -> None:
    """The batch of (client, counter, step s, draw d) is the B samples whose 64-bit keys
    bits(key_i, counter, (s * 8 + d) << 32 | j), read as signed ints, are smallest, in that order
    (a fixed stride of 8 sub-streams per step, whatever the rule's number of draws D)."""
    built = build(scenario("fedbuff"))
    data = built.data
    s = MinibatchSampler(data, 5, steps=2, draws=3, batch_size=4)
    client, counter = 6, 9
    n = int(data.train_sizes_np[client])
    off = int(data.train_offsets[client])
    key = stream_key(5, "minibatch", client)
    got, _ = s.indices_one(client, counter)
    for step in range(2):
        for d in range(3):
            keys = [bits(key, counter, ((step * 8 + d) << 32) | j) for j in range(n)]
            signed = [k - (1 << 64) if k >= 1 << 63 else k for k in keys]
            expect = sorted(range(n), key=lambda j: signed[j])[:4]
            assert list(got[step, d] - off) == expect


def test_rules_share_the_draws_they_have_in_common() -> None:
    """Common random numbers: draw d of step s is the same minibatch whether a rule makes 1, 2 or
    3 draws per step (Per-FedAvg FO and HF see the same D and D'; FedAvg's step s sees D), on
    both the batched and the one-job path."""
    data = build(scenario("fedbuff")).data
    clients, counters = np.array([1, 6, 6]), np.array([0, 3, 4])
    got = {d: MinibatchSampler(data, 5, steps=3, draws=d, batch_size=4) for d in (1, 2, 3)}
    idx = {d: got[d].indices(clients, counters)[0] for d in got}
    for d in (1, 2):
        assert torch.equal(idx[d], idx[3][:, :, :d])
        one, _ = got[d].indices_one(6, 3)
        ref, _ = got[3].indices_one(6, 3)
        assert np.array_equal(one, ref[:, :d])


def _dense(hidden: list[int], out: int, act: str, bias: bool, task: str) -> FlatModel:
    return FlatModel.wrap(DenseNet(9, hidden, out, act, bias=bias).double(), task)  # type: ignore[arg-type]


@pytest.mark.parametrize("act", ["elu", "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize(
    "hidden,task,bias",
    [
        ([], "classification", True),
        ([7, 5], "classification", True),
        ([6], "regression", True),
        ([], "regression", False),
    ],
)
def test_dense_loss_and_gradient_equal_autograd(act: str, hidden: list[int], task: str, bias: bool) -> None:
    model = _dense(hidden, 1 if task == "regression" else 4, act, bias, task)
    fl = fast_loss(model)
    assert isinstance(fl, DenseLoss)
    g = torch.Generator().manual_seed(1)
    w = model.init(1, dtype=torch.float64) * 3
    x = torch.randn(11, 9, dtype=torch.float64, generator=g)
    y = (
        torch.randint(0, 4, (11,), generator=g)
        if task == "classification"
        else torch.randn(11, dtype=torch.float64, generator=g)
    )
    m = (torch.rand(11, generator=g) > 0.3).double()
    torch.testing.assert_close(fl(w, x, y, m), model.loss(w, x, y, m), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fl.gradient(w, x, y, m), grad(model.loss)(w, x, y, m), rtol=1e-10, atol=1e-12)
    ws, xs, ys, ms = torch.stack([w, 0.5 * w]), torch.stack([x, x + 1]), torch.stack([y, y]), torch.stack([m, 1 - m])
    torch.testing.assert_close(vmap(fl.gradient)(ws, xs, ys, ms), vmap(grad(model.loss))(ws, xs, ys, ms))
    # loss_grad picks the hand-written gradient, also under vmap.
    torch.testing.assert_close(loss_grad(fl, w, x, y, m), fl.gradient(w, x, y, m))


def test_fast_loss_falls_back_for_other_networks() -> None:
    model = FlatModel.wrap(CNN((1, 12, 12), [2, 4], 8, 10), "classification")
    assert fast_loss(model) == model.loss


def test_loss_grad_plain_autograd_equals_torch_func() -> None:
    model = _dense([5], 3, "tanh", True, "classification")
    w = model.init(0, dtype=torch.float64)
    x, y, m = (
        torch.randn(6, 9, dtype=torch.float64),
        torch.tensor([0, 1, 2, 0, 1, 2]),
        torch.ones(6, dtype=torch.float64),
    )
    plain = loss_grad(model.loss, w, x, y, m)
    torch.testing.assert_close(plain, grad(model.loss)(w, x, y, m))
    # Differentiating through loss_grad still works (torch.func path when w requires grad).
    hv = grad(lambda v: torch.dot(loss_grad(model.loss, v, x, y, m), torch.ones_like(v)))(w)
    assert torch.isfinite(hv).all()


def test_one_at_a_time_uses_autograd_without_fast_loss() -> None:
    """fast=False (the benchmark's peer-style mode) gives the same updates as the dense loss."""
    built = build(scenario("fedbuff"))
    ex = built.backend.executor
    jobs = [Job(i, i, built.backend.current, 2) for i in range(6)]
    a = torch.stack(Executor(ex.model, ex.rule, ex.data, 3, "none", fast=False).compute(jobs))
    b = torch.stack(Executor(ex.model, ex.rule, ex.data, 3, "none").compute(jobs))
    torch.testing.assert_close(a, b, rtol=REL, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# the version store
# ------------------------------------------------------------------------------------------------


def test_version_store_counts_references_and_bytes() -> None:
    store = VersionStore()
    w = torch.zeros(10)
    store.put(0, w)  # type: ignore[arg-type]
    assert store.acquire(0) is w  # type: ignore[arg-type]
    store.put(1, torch.ones(10))  # type: ignore[arg-type]
    store.release(0)  # type: ignore[arg-type]
    assert 0 in store and store.refs(0) == 1  # type: ignore[arg-type]
    store.release(0)  # type: ignore[arg-type]
    assert 0 not in store and store.live() == [1]
    assert store.peak == 2 and store.peak_bytes == 80 and store.nbytes == 40
    with pytest.raises(KeyError):
        store.put(1, w)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["async", "buffered"])
def test_version_memory_follows_live_versions_not_clients(mode: str) -> None:
    """With c clients in flight, at most c + K versions are ever held (K = buffer size; the
    current model plus one per pulled base), whether there are 20 or 400 clients."""
    concurrency, k = 6, 3
    peaks = []
    for clients in (20, 400):
        data = copy.deepcopy(BASE)
        data.update(
            algorithm={"name": "fedbuff", "lr": 0.05, "local_steps": 1, "batch_size": 8},
            model="logreg",
            server={"mode": mode, "concurrency": concurrency, "buffer_size": k if mode == "buffered" else 1},
            clients={"count": clients},
            stop={"client_updates": 120},
            eval={"every_steps": None, "grad_norm": False, "clients": 10},
        )
        r = run(validate(data))
        store = r["backend"].versions
        model_bytes = r["backend"].model_bytes
        assert store.peak <= concurrency + (k if mode == "buffered" else 1)
        assert store.peak_bytes == store.peak * model_bytes
        # After the run only the current model remains; nothing is left queued.
        assert len(store) == 1
        assert not r["backend"].executor.pending and not r["backend"].executor.results
        peaks.append(store.peak)
    assert peaks[1] <= concurrency + k  # independent of the number of clients


def test_pending_jobs_share_their_base_tensor() -> None:
    built = build(scenario("fedbuff"))
    backend = built.backend
    for task in range(5):
        backend.dispatch(task, task, 0, 0, float(task))  # type: ignore[arg-type]
    bases = [j.base for j in backend.executor.pending.values()]
    assert all(b is bases[0] for b in bases) and len(backend.versions) == 1


# ------------------------------------------------------------------------------------------------
# the GPU path (skipped without CUDA)
# ------------------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_executor_makes_no_host_sync() -> None:
    sc = scenario("per_fedavg_hf", device="cuda")
    built = build(sc)
    ex = built.backend.executor
    jobs = [Job(i, i % 14, built.backend.current, i // 14) for i in range(40)]
    ex.compute(jobs[:8])  # warm up (allocations, pinned buffers)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ex.compute(jobs)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_cuda_run_equals_cpu_run() -> None:
    a = run(scenario("fedbuff", device="cuda"))
    b = run(scenario("fedbuff", device="cpu"))
    pd.testing.assert_frame_equal(a["events"], b["events"])
    np.testing.assert_allclose(a["metrics"]["value"], b["metrics"]["value"], rtol=1e-4, atol=1e-6)
