"""Extending asyncfl the documented way (docs/design.md, "Adding a component").

Each kind of component is a config model (registered in the schema's union, which makes its name
and keys valid in scenario files) plus an implementation (registered in its kind's registry under
the same name). A built-in does it in asyncfl's own files; here the toys are registered in-process
by the very calls those files make, and removed again after the test. Then a tiny scenario names
them and runs end to end, and hand-derived numbers are checked:

- toy client rule ``gd`` (full-batch gradient descent) is FedAvg's rule with batch_size null, so
  the run equals that built-in run exactly;
- toy delay model ``alternating`` gives client i the speed ``even`` or ``odd`` by the parity of i,
  so every task's compute time is local_steps x per_client / speed_i;
- toy data set ``blobs`` deals exactly ``per_client`` training and test samples to every client;
- toy staleness weight ``halving`` is s(tau) = base^(-tau), so events.csv's ``weight`` of every
  applied update is 2^(-staleness) at base 2;
- toy selection strategy ``cyclic`` picks the next idle client id after its last pick (wrapping
  around), so sync rounds of 2 among 6 clients take clients 0, 1 | 2, 3 | 4, 5 | 0, 1 | ...

Every kind also has one consistency check: its config registry and its implementation registry
name the same components (a forgotten registry line fails here, never silently at run time);
staleness weights and selection strategies check it at import too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from pydantic import BaseModel, Field
from torch import Tensor

import asyncfl
from asyncfl.algorithms.base import Batches, Rule, ServerRule, check_batches
from asyncfl.algorithms.functional import gradient_descent, loss_grad
from asyncfl.algorithms.registry import ALGORITHMS
from asyncfl.config.schema import (
    ALGORITHM_CONFIGS,
    ALGORITHM_UNION,
    DATA_CONFIGS,
    DATA_UNION,
    DIST_CONFIGS,
    DIST_UNION,
    MODEL_CONFIGS,
    SELECTION_CONFIGS,
    SELECTION_UNION,
    WEIGHT_CONFIGS,
    WEIGHT_UNION,
    AlgorithmBase,
    ComponentUnion,
    DataCommon,
    DistBase,
    NaturalPartition,
    NonNegFloat,
    Partition,
    PositiveFloat,
    PositiveInt,
    SelectionBase,
    StalenessWeightBase,
)
from asyncfl.data.base import FederatedData
from asyncfl.data.pack import pack
from asyncfl.data.registry import DATASETS, DataSet, build_data
from asyncfl.models.base import LossFn
from asyncfl.models.registry import MODELS
from asyncfl.registry import Registry
from asyncfl.rng import numpy_generator
from asyncfl.sim import selection, staleness
from asyncfl.sim.distributions import DISTRIBUTIONS
from asyncfl.sim.idle import IdleSet
from asyncfl.sim.selection import STRATEGIES, Context, Uniform
from asyncfl.sim.staleness import WEIGHTS, WeightFn
from asyncfl.types import ClientId

# ------------------------------------------------------------------------------------------------
# A client rule: asyncfl/config/schema.py (config) + asyncfl/algorithms/<rule>.py (rule) + one line
# in asyncfl/algorithms/registry.py
# ------------------------------------------------------------------------------------------------


class GDConfig(AlgorithmBase):
    """Full-batch gradient descent: ``local_steps`` steps w <- w - lr grad f_i(w)."""

    name: Literal["gd"] = "gd"
    lr: PositiveFloat = 0.1
    """Step size (per unit of loss gradient)."""
    local_steps: PositiveInt = 1
    """S: gradient steps per task."""


class GD(GDConfig, Rule):
    server_rule: ClassVar[ServerRule] = "delta"
    personal_step: ClassVar[str | None] = "lr"  # eval.adapt_lr replaces lr when scoring

    @property
    def steps(self) -> int:
        return self.local_steps

    @property
    def draws_per_step(self) -> int:
        return 1

    @property
    def batch_size(self) -> int | None:
        return None  # the client's whole training set every step

    def work(self, n_samples: int) -> float:
        return float(self.local_steps * n_samples)

    def client_update(self, loss: LossFn, w: Tensor, batches: Batches) -> Tensor:
        check_batches(batches, self.steps, self.draws_per_step)
        w0 = w
        for s in range(self.local_steps):
            x, y, m = batches.draw(s, 0)
            w = w - self.lr * loss_grad(loss, w, x, y, m)
        return w - w0

    def personalize(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor, adapt_steps: int) -> Tensor:
        return gradient_descent(loss, w, x, y, m, self.lr, adapt_steps)

    def objective_grad(self, loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        return loss_grad(loss, w, x, y, m)


# ------------------------------------------------------------------------------------------------
# A delay model: schema.py (config) + asyncfl/sim/distributions.py (class and one registry line)
# ------------------------------------------------------------------------------------------------


class AlternatingDist(DistBase):
    """Draw number ``counter`` is ``even`` or ``odd`` by its parity (per client: the client id)."""

    dist: Literal["alternating"] = "alternating"
    even: NonNegFloat = 1.0
    odd: NonNegFloat = 2.0


class Alternating:
    def __init__(self, even: float, odd: float) -> None:
        self.even, self.odd = float(even), float(odd)
        self.mean = (self.even + self.odd) / 2.0
        self.variance = ((self.odd - self.even) / 2.0) ** 2
        self.constant: float | None = self.even if self.even == self.odd else None

    def sample(self, keys: npt.ArrayLike, counters: npt.ArrayLike) -> npt.NDArray[np.float64]:
        c = np.broadcast_to(np.asarray(counters), np.broadcast_shapes(np.shape(keys), np.shape(counters)))
        return np.where(c % 2 == 0, self.even, self.odd).astype(np.float64)

    def sample_one(self, key: int, counter: int) -> float:
        return self.even if counter % 2 == 0 else self.odd


# ------------------------------------------------------------------------------------------------
# A data set: schema.py (config) + asyncfl/data/<name>.py (builder) + one line in data/registry.py
# ------------------------------------------------------------------------------------------------


class BlobsData(DataCommon):
    """Gaussian blobs, one centre per class; every client holds ``per_client`` training and
    ``per_client`` test samples (its own users: the partition keys do not apply)."""

    dataset: Literal["blobs"] = "blobs"
    partition: Partition = NaturalPartition()
    classes: PositiveInt = 3
    dimension: PositiveInt = 4
    per_client: PositiveInt = 6
    spread: PositiveFloat = 0.5


def build_blobs(cfg: BlobsData, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    rng = numpy_generator(seed, "data.blobs")
    centres = 3.0 * rng.standard_normal((cfg.classes, cfg.dimension))
    n = num_clients * 2 * cfg.per_client
    y = rng.integers(0, cfg.classes, n)
    x = centres[y] + cfg.spread * rng.standard_normal((n, cfg.dimension))
    idx = np.arange(n).reshape(num_clients, 2, cfg.per_client)
    return pack(
        x, y, list(idx[:, 0]), list(idx[:, 1]), num_classes=cfg.classes, input_shape=(cfg.dimension,), name="blobs"
    )


def blobs_footprint(cfg: BlobsData, num_clients: int) -> tuple[float, float]:
    return 2.0 * num_clients * cfg.per_client, cfg.dimension * 4 + 8


# ------------------------------------------------------------------------------------------------
# A staleness weight: schema.py (config) + asyncfl/sim/staleness.py (function and one registry line)
# ------------------------------------------------------------------------------------------------


class HalvingWeight(StalenessWeightBase):
    """s(tau) = base^(-tau): each server step between pull and arrival divides the weight by base."""

    name: Literal["halving"] = "halving"
    base: Annotated[float, Field(ge=1.0)] = 2.0
    """base >= 1 (dimensionless); 1 is the constant weight."""


def halving(base: float) -> WeightFn:
    return lambda tau: base ** (-tau)


# ------------------------------------------------------------------------------------------------
# A selection strategy: schema.py (config) + asyncfl/sim/selection.py (class and one registry line)
# ------------------------------------------------------------------------------------------------


class CyclicSelection(SelectionBase):
    """The idle, available client with the next id after the last pick, wrapping around."""

    name: Literal["cyclic"] = "cyclic"


class Cyclic(Uniform):
    """No random draw; ``last`` (the last pick, -1 before the first) is snapshot state."""

    name = "cyclic"

    def __init__(self, cfg: CyclicSelection, ctx: Context) -> None:
        super().__init__(cfg, ctx)
        self.last = -1

    def pick(self, idle: IdleSet, now: float) -> ClientId | None:
        on = self.available(idle, now)
        if not on:
            return None
        items, last = idle.items, self.last
        client = idle.pop_at(min(on, key=lambda i: (items[i] <= last, items[i])))
        self.last = client
        return client

    def state(self) -> dict[str, Any]:
        return {**super().state(), "selection": {"last": self.last}}

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.last = int(state["selection"]["last"])


# ------------------------------------------------------------------------------------------------
# Registration (what the files' registry lines do), undone after each test
# ------------------------------------------------------------------------------------------------

# (the schema's union of config models, the kind's implementation registry, name, config, build)
TOYS: list[tuple[ComponentUnion, Registry[Any], str, type[BaseModel], Any]] = [
    (ALGORITHM_UNION, ALGORITHMS, "gd", GDConfig, GD),
    (DIST_UNION, DISTRIBUTIONS, "alternating", AlternatingDist, lambda c: Alternating(c.even, c.odd)),
    (DATA_UNION, DATASETS, "blobs", BlobsData, DataSet(build_blobs, blobs_footprint)),
    (WEIGHT_UNION, WEIGHTS, "halving", HalvingWeight, lambda c: halving(c.base)),
    (SELECTION_UNION, STRATEGIES, "cyclic", CyclicSelection, Cyclic),
]


@pytest.fixture
def toys() -> Iterator[None]:
    for union, registry, name, config, build in TOYS:
        union.register(config)
        registry.add(name, build)
    try:
        yield
    finally:
        for union, registry, name, _, _ in TOYS:
            registry.remove(name)
            union.registry.remove(name)


SCENARIO: dict[str, Any] = {
    "seed": 3,
    "algorithm": {"name": "gd", "lr": 0.2, "local_steps": 2},
    "server": {
        "mode": "async",
        "concurrency": 3,
        "lr": 1.0,
        "staleness_weight": {"name": "halving", "base": 2.0},
        "selection": "cyclic",
    },
    "data": {"dataset": "blobs", "per_client": 6},
    "model": "logreg",
    "clients": {"count": 6},
    "system": {"compute": {"speed": {"dist": "alternating", "even": 10.0, "odd": 40.0}}},
    "stop": {"server_steps": 20},
    "eval": {"every_steps": 10},
}


def test_toy_components_run_a_scenario(toys: None) -> None:
    result = asyncfl.run(SCENARIO)
    assert result.status == "completed"
    ev = result.events
    assert len(ev) >= 20 and set(ev["client"]) == set(range(6))
    # compute seconds = work / speed = local_steps x per_client / (10 or 40 by the client's parity)
    speed = np.where(ev["client"] % 2 == 0, 10.0, 40.0)
    np.testing.assert_allclose(ev["compute_time"], 2 * 6 / speed, rtol=1e-12)
    # s(tau) = 2^(-tau): powers of two, exact through the CSV
    applied = ev[ev["status"] == "applied"]
    assert (applied["staleness"] > 0).any()
    assert applied["weight"].tolist() == [2.0**-t for t in applied["staleness"]]
    # gd is FedAvg's rule with full-batch steps: the same run, number for number
    fedavg = {**SCENARIO, "algorithm": {"name": "fedavg", "lr": 0.2, "local_steps": 2, "batch_size": None}}
    twin = asyncfl.run(fedavg)
    pd.testing.assert_frame_equal(result.events, twin.events)
    pd.testing.assert_frame_equal(result.metrics, twin.metrics)


def test_toy_selection_cycles_through_the_clients(toys: None) -> None:
    """Sync rounds of 2 among 6 always-on clients: round r takes clients 2r mod 6 and 2r + 1 mod 6."""
    sync = {**SCENARIO, "server": {"mode": "sync", "clients_per_round": 2, "selection": "cyclic"}}
    ev = asyncfl.run({**sync, "stop": {"server_steps": 6}}).events.sort_values("task")
    assert ev["client"].tolist()[:12] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]


def test_toy_data_set_deals_what_it_says(toys: None) -> None:
    cfg = asyncfl.load_scenario(SCENARIO).data
    data = build_data(cfg, 5, seed=1, base_dir=Path("."))
    assert data.num_clients == 5
    assert data.train_sizes.tolist() == [6] * 5
    assert int(data.train_y.max()) < 3 and tuple(data.input_shape) == (4,)


def test_toy_names_validate_and_vanish_when_unregistered(toys: None) -> None:
    sc = asyncfl.load_scenario(SCENARIO, ["algorithm.local_steps=3"])
    assert isinstance(sc.algorithm, GDConfig) and sc.algorithm.local_steps == 3
    with pytest.raises(asyncfl.ScenarioError, match=r"algorithm\.lr"):
        asyncfl.load_scenario(SCENARIO, ["algorithm.lr=0"])
    with pytest.raises(asyncfl.ScenarioError, match=r"algorithm\.batch_size: no such key"):
        asyncfl.load_scenario(SCENARIO, ["algorithm.batch_size=8"])


def test_unregistered_toy_is_an_unknown_choice() -> None:
    with pytest.raises(asyncfl.ScenarioError, match=r"algorithm\.name: unknown choice 'gd'"):
        asyncfl.load_scenario({"algorithm": {"name": "gd"}})


# Each kind's config registry (scenario schema) and implementation registry, which must agree.
REGISTRY_PAIRS: list[tuple[Registry[Any], Registry[Any]]] = [
    (ALGORITHM_CONFIGS, ALGORITHMS),
    (MODEL_CONFIGS, MODELS),
    (DATA_CONFIGS, DATASETS),
    (DIST_CONFIGS, DISTRIBUTIONS),
    (WEIGHT_CONFIGS, WEIGHTS),
    (SELECTION_CONFIGS, STRATEGIES),
]


@pytest.mark.parametrize(("configs", "impls"), REGISTRY_PAIRS, ids=lambda r: r.kind)
def test_every_config_has_an_implementation_and_back(configs: Registry[Any], impls: Registry[Any]) -> None:
    assert configs.names() == impls.names()
    assert configs.kind == impls.kind


def test_the_toys_are_complete(toys: None) -> None:
    """The toy registrations satisfy the same check the built-ins do."""
    for configs, impls in REGISTRY_PAIRS:
        assert configs.names() == impls.names()


@pytest.mark.parametrize(
    ("union", "impls", "config", "module"),
    [
        (WEIGHT_UNION, WEIGHTS, HalvingWeight, staleness),
        (SELECTION_UNION, STRATEGIES, CyclicSelection, selection),
    ],
    ids=["staleness weight", "selection strategy"],
)
def test_a_forgotten_registry_line_fails_at_import_and_in_the_test(
    union: ComponentUnion, impls: Registry[Any], config: type[BaseModel], module: Any
) -> None:
    """A config registered without its implementation: the module's import-time check raises
    (the check a built-in would fail when asyncfl is imported), the pair test above fails, and a
    run naming it stops with a one-line scenario error before anything is simulated, never with
    a default weight or pick. The reverse, an implementation without its config: the same import
    check fails and the scenario rejects the name."""
    name = config.model_fields["name"].default
    key = "staleness_weight" if union is WEIGHT_UNION else "selection"
    union.register(config)
    try:
        with pytest.raises(ImportError, match=name):
            module._check_complete()
        assert union.registry.names() != impls.names()
        with pytest.raises(asyncfl.ScenarioError, match=rf"server\.{key}\.name: unknown {impls.kind} '{name}'"):
            asyncfl.run({"clients": {"count": 6}, "server": {"concurrency": 3, key: name}})
    finally:
        union.registry.remove(name)
    module._check_complete()
    impls.add(name, object())
    try:
        with pytest.raises(ImportError, match=name):
            module._check_complete()
        with pytest.raises(asyncfl.ScenarioError, match=rf"server\.{key}.*unknown choice '{name}'"):
            asyncfl.load_scenario({"server": {key: name}})
    finally:
        impls.remove(name)
    module._check_complete()


def test_resource_guard_sizes_the_toy_data_set_and_refuses_what_it_cannot(toys: None) -> None:
    from asyncfl.runs.resources import estimate_scenario

    sc = asyncfl.load_scenario(SCENARIO)
    est = estimate_scenario(sc)
    # footprint: 2 x 6 clients x 6 samples of 4 float32 features + 8 bytes, held ~3 times
    assert est["data"] == 2 * 6 * 6 * (4 * 4 + 8) * 3
    # one job: S = 2 steps x 1 draw x the client's 12 samples (batch None: per client) x bytes x 8
    assert est["job"] == 2 * 1 * 12 * (4 * 4 + 8) * 8
    DATASETS.remove("blobs")
    DATASETS.add("blobs", build_blobs)  # type: ignore[arg-type]  # a bare builder: no footprint to ask
    with pytest.raises(asyncfl.UserError, match=r"cannot estimate the memory of data set 'blobs'"):
        asyncfl.run(SCENARIO)
