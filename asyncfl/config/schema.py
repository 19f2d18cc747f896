"""The scenario format: a frozen, strictly validated, fully resolved description of one run.

Every mapping forbids unknown keys, every default is filled in, and cross-field rules are checked
here, so the rest of the code can trust a :class:`Scenario`. Components with their own parameters
(algorithm, data set, partition, model, staleness weight, distributions) are tagged unions: the tag
(``algorithm.name``, ``data.dataset``, ...) selects which keys are allowed.

Units: time in simulated seconds, sizes in bytes, bandwidth in bytes per second, compute speed in
samples per second (one sample = one per-example gradient evaluation).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PositiveFloat,
    StrictInt,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from asyncfl.errors import PluginError
from asyncfl.registry import Registry

NonNegFloat = Annotated[float, Field(ge=0.0)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
"""Counts: integers only (a YAML ``true`` or ``3.5`` is an error, not 1 or 3)."""
NonNegInt = Annotated[StrictInt, Field(ge=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Strict(BaseModel):
    """Base of every scenario mapping: unknown keys are errors, instances are immutable, numbers
    are finite (an infinite step size or time is a typo, not a setting: use null), and types are
    strict: a number key takes an int or a float but no bool and no numeric string, a count takes an
    int only, a boolean key takes true/false only (YAML 1.1 reads ``2.0e6`` as a string; the
    scenario loader reads it as YAML 1.2 does, a float).

    Shorthands of a component chosen by a tag (algorithm, data set, partition, model, staleness
    weight, availability, distribution): the tag alone (``model: logreg``) means the mapping
    ``{name: logreg}`` (only for choices whose other keys all have defaults); a mapping without its
    tag takes the tag of the key's default (``speed: {mean: 500}`` is the default lognormal); a
    distribution may be a bare number (``latency: 0.05`` is ``{dist: constant, value: 0.05}``). The
    JSON Schema (:func:`scenario_json_schema`) admits exactly these forms."""

    # defer_build: a model's validator is built at its first use, so the tagged unions of
    # registered components (ComponentUnion) include the plug-ins loaded by then.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,
        strict=True,
        use_attribute_docstrings=True,
        defer_build=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        specs = tagged_fields(cls)
        if not specs or not any(k in data for k in specs):
            return data
        return {k: specs[k].expand(v) if k in specs else v for k, v in data.items()}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        for name, spec in tagged_fields(cls).items():
            props = target.get("properties", {})
            if name in props:
                props[name] = spec.json_schema(props[name])
        return schema


@dataclass(frozen=True)
class _TagSpec:
    """A key whose value is a component chosen by ``tag`` among ``choices`` (tag value -> class)."""

    tag: str
    choices: dict[str, type[BaseModel]]
    default_tag: str | None

    @property
    def bare_tags(self) -> list[str]:
        """Choices that may be written as the tag alone: every other key has a default."""
        return [t for t, c in self.choices.items() if all(not f.is_required() for f in c.model_fields.values())]

    @property
    def takes_number(self) -> bool:
        return "constant" in self.choices and self.tag == "dist"

    def expand(self, value: Any) -> Any:
        if isinstance(value, str):
            return {self.tag: value}
        if self.takes_number and isinstance(value, (int, float)) and not isinstance(value, bool):
            return {self.tag: "constant", "value": value}
        if isinstance(value, dict) and self.tag not in value and self.default_tag is not None:
            return {self.tag: self.default_tag, **value}
        return value

    def json_schema(self, prop: dict[str, Any]) -> dict[str, Any]:
        keep: dict[str, Any] = {k: prop.pop(k) for k in ("title", "description", "default") if k in prop}
        forms: list[dict[str, Any]] = [{"type": "string", "enum": self.bare_tags}]
        if self.takes_number:
            forms.append({"type": "number", "minimum": 0})  # ConstantDist.value's bounds
        mapping = (prop.get("discriminator") or {}).get("mapping")
        if mapping and self.default_tag in mapping:
            # a mapping without its tag is the key's default choice; with a tag, the tagged choice
            forms.append({"$ref": mapping[self.default_tag]})
            forms.append({**prop, "required": [self.tag]})
        else:
            forms.append(prop)
        return {**keep, "anyOf": forms}


@functools.cache
def tagged_fields(cls: type[BaseModel]) -> dict[str, _TagSpec]:
    """The keys of ``cls`` whose values are tagged components (see :class:`Strict`)."""
    out: dict[str, _TagSpec] = {}
    for name, field in cls.model_fields.items():
        union = union_of(field)
        if union is not None:
            tag, classes = union
        else:
            classes = [c for c in _union_members(field.annotation) if isinstance(c, type) and issubclass(c, BaseModel)]
            if len(classes) != 1 or "name" not in classes[0].model_fields:
                continue
            tag = "name"  # a single component with a named kind (quantity_skew)
        choices: dict[str, type[BaseModel]] = {}
        for c in classes:
            for value in get_args(c.model_fields[tag].annotation):
                choices[value] = c
        default = field.get_default(call_default_factory=True)
        default_tag = getattr(default, tag, None) if len(classes) > 1 else None
        out[name] = _TagSpec(tag, choices, default_tag)
    return out


def _union_members(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _union_members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _union_members(a)]
    return [annotation]


# ------------------------------------------------------------------------------------------------
# Tagged unions built from registries (built-ins, in-process registrations, plug-ins)
# ------------------------------------------------------------------------------------------------


def tag_values(cls: type[BaseModel], tag: str) -> tuple[str, ...]:
    """The names a config class answers to: the ``Literal`` values of its tag field."""
    field = cls.model_fields.get(tag)
    annotation = field.annotation if field is not None else None
    return tuple(get_args(annotation)) if get_origin(annotation) is Literal else ()


class ComponentUnion:
    """Annotation marker: the tagged union of the config models ``registry`` holds, selected by
    the ``tag`` key (``algorithm: {name: fedavg, ...}``). Built when the model that uses it is first
    validated (or its JSON schema is asked for), and rebuilt on a later registration, so a plug-in's
    or an in-process component's name validates like a built-in one."""

    def __init__(self, registry: Registry[type[BaseModel]], tag: str) -> None:
        self.registry = registry
        self.tag = tag

    def register(self, *classes: type[BaseModel]) -> None:
        """Register config classes under every name of their tag field's ``Literal``."""
        for cls in classes:
            names = tag_values(cls, self.tag)
            if not names:
                raise TypeError(f"{cls.__name__}.{self.tag} must be a Literal of the component's name(s)")
            for name in names:
                self.registry.add(name, cls)

    def choices(self) -> Iterator[tuple[str, type[BaseModel]]]:
        for name, cls in self.registry.items():
            if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
                raise PluginError(f"{self.registry.kind} {name!r}: its config {cls!r} is not a pydantic model class")
            if name not in tag_values(cls, self.tag):
                raise PluginError(
                    f"{self.registry.kind} {name!r}: its config {cls.__name__} must declare "
                    f"{self.tag}: Literal[{name!r}] (it answers to {list(tag_values(cls, self.tag))})"
                )
            yield name, cls

    def classes(self) -> list[type[BaseModel]]:
        """The distinct config classes, in registration order."""
        return list({id(c): c for _, c in self.choices()}.values())

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schemas = {id(c): handler.generate_schema(c) for c in self.classes()}
        choices: dict[Any, CoreSchema] = {name: schemas[id(cls)] for name, cls in self.choices()}
        return core_schema.tagged_union_schema(choices, discriminator=self.tag)

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(schema)


def union_of(field: Any) -> tuple[str, list[type[BaseModel]]] | None:
    """(tag, config classes) of a tagged-union field (a ComponentUnion or a discriminated Union of
    models), or None. ``field``: a pydantic FieldInfo."""
    for meta in field.metadata:
        if isinstance(meta, ComponentUnion):
            return meta.tag, meta.classes()
    if isinstance(field.discriminator, str):
        return field.discriminator, _models_in(field.annotation)
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [c for a in get_args(annotation) for c in _models_in(a)]


ALGORITHM_CONFIGS: Registry[type[BaseModel]] = Registry("algorithm", "algorithm.name", plugin_part="config")
DATA_CONFIGS: Registry[type[BaseModel]] = Registry("data set", "data.dataset", plugin_part="config")
MODEL_CONFIGS: Registry[type[BaseModel]] = Registry("model", "model.name", plugin_part="config")
DIST_CONFIGS: Registry[type[BaseModel]] = Registry("distribution", "dist", plugin_part="config")
WEIGHT_CONFIGS: Registry[type[BaseModel]] = Registry(
    "staleness weight", "server.staleness_weight.name", plugin_part="config"
)
SELECTION_CONFIGS: Registry[type[BaseModel]] = Registry(
    "selection strategy", "server.selection.name", plugin_part="config"
)
# The implementations of each kind live in their own registries, under the same names
# (asyncfl.algorithms.registry.ALGORITHMS, asyncfl.sim.staleness.WEIGHTS, ...).


# ------------------------------------------------------------------------------------------------
# Distributions (units are those of the key that holds them)
# ------------------------------------------------------------------------------------------------


class DistBase(Strict):
    """Base of distribution configs (tag ``dist``); a plug-in delay model subclasses it."""


class ConstantDist(DistBase):
    """Always ``value``. A bare number in a scenario means this."""

    dist: Literal["constant"] = "constant"
    """Tag: ``constant``, the same value for every draw."""
    value: NonNegFloat = 1.0
    """The value (>= 0), in the units of the key that holds this distribution."""


class UniformDist(DistBase):
    """Uniform on [low, high]: mean (low+high)/2, variance (high-low)^2/12."""

    dist: Literal["uniform"] = "uniform"
    """Tag: ``uniform`` on [low, high]."""
    low: NonNegFloat
    """Lower end (>= 0), in the units of the key that holds this distribution."""
    high: NonNegFloat
    """Upper end (>= low), in the units of the key that holds this distribution."""

    @model_validator(mode="after")
    def _order(self) -> UniformDist:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class ExponentialDist(DistBase):
    """Exponential with the given ``mean`` (variance mean^2)."""

    dist: Literal["exponential"] = "exponential"
    """Tag: ``exponential``."""
    mean: PositiveFloat
    """Mean (> 0), in the units of the key that holds this distribution; the variance is mean^2."""


class LognormalDist(DistBase):
    """exp(N(mu, sigma^2)) with mu chosen so that the mean is ``mean``:
    mu = ln(mean) - sigma^2/2; variance (exp(sigma^2) - 1) mean^2."""

    dist: Literal["lognormal"] = "lognormal"
    """Tag: ``lognormal``, exp(N(mu, sigma^2)) with mu = ln(mean) - sigma^2/2."""
    mean: PositiveFloat
    """Mean (> 0), in the units of the key that holds this distribution (not the median, exp(mu))."""
    sigma: NonNegFloat = 0.5
    """sigma, the standard deviation of the log (dimensionless, >= 0); variance (exp(sigma^2) - 1) mean^2."""


class ParetoDist(DistBase):
    """Pareto (heavy tail) with minimum ``scale`` (x_m) and tail index ``shape`` (a):
    mean a x_m/(a-1) for a > 1; variance x_m^2 a/((a-1)^2 (a-2)) for a > 2."""

    dist: Literal["pareto"] = "pareto"
    """Tag: ``pareto`` (heavy tail)."""
    shape: PositiveFloat = 2.5
    """Tail index a (dimensionless, > 0): the mean is finite for a > 1, the variance for a > 2."""
    scale: PositiveFloat = 1.0
    """Minimum value x_m (> 0), in the units of the key that holds this distribution."""


class FromListDist(DistBase):
    """Deterministic twin: the i-th draw is ``values[i % len(values)]`` (i = client id for
    per-client quantities, task index for per-task ones)."""

    dist: Literal["from_list"] = "from_list"
    """Tag: ``from_list``, a deterministic list of values."""
    values: Annotated[list[NonNegFloat], Field(min_length=1)]
    """The values (each >= 0, at least one), in the units of the key that holds this distribution; draw i is
    values[i % len(values)]."""


DIST_UNION = ComponentUnion(DIST_CONFIGS, "dist")
DIST_UNION.register(ConstantDist, UniformDist, ExponentialDist, LognormalDist, ParetoDist, FromListDist)

if TYPE_CHECKING:
    Distribution = ConstantDist | UniformDist | ExponentialDist | LognormalDist | ParetoDist | FromListDist
else:
    Distribution = Annotated[DistBase, DIST_UNION]


# ------------------------------------------------------------------------------------------------
# Algorithms (client rules and their hyperparameters)
# ------------------------------------------------------------------------------------------------


class AlgorithmBase(Strict):
    """Base of client-rule configs (tag ``name``). A rule's hyperparameters are written once, in
    its config class here; the rule class (asyncfl.algorithms) subclasses it."""


class SGDHyper(AlgorithmBase):
    """Local SGD shared by the non-personalized baselines: ``local_steps`` minibatch steps with step
    ``lr`` on the local objective f(w) + mu/2 ||w||^2 + rho/2 ||w - w_0||^2."""

    lr: PositiveFloat = 0.05
    """Client step size eta of local SGD (> 0, per unit of loss gradient; dimensionless)."""
    local_steps: PositiveInt = 10
    """Local minibatch SGD steps per update, E in FedAvg's notation (a count)."""
    batch_size: PositiveInt | None = 32
    """Minibatch size B, samples per step; null: the client's full training set."""
    weight_decay: NonNegFloat = 0.0
    """mu >= 0: adds mu/2 ||w||^2 to the local objective (L2 regularisation)."""
    prox: NonNegFloat = 0.0
    """rho >= 0: adds rho/2 ||w - w_0||^2 to the local objective, w_0 the pulled model (FedAsync's regularised
    objective f(x; z) + rho/2 ||x - x_tau||^2, FedProx's mu); 0 = plain local SGD."""


class FedAvgConfig(SGDHyper):
    """FedAvg (McMahan et al. 2017): local SGD, server averages the deltas."""

    name: Literal["fedavg"] = "fedavg"
    """Tag: ``fedavg``, FedAvg (McMahan et al. 2017)."""


class FedAsyncConfig(SGDHyper):
    """FedAsync (Xie et al. 2019): x <- (1 - a_t) x + a_t x_client, a_t = server.lr * s(tau)."""

    name: Literal["fedasync"] = "fedasync"
    """Tag: ``fedasync``, FedAsync (Xie et al. 2019)."""


class FedBuffConfig(SGDHyper):
    """FedBuff (Nguyen et al. 2022): K = server.buffer_size staleness-weighted deltas per step."""

    name: Literal["fedbuff"] = "fedbuff"
    """Tag: ``fedbuff``, FedBuff (Nguyen et al. 2022)."""


class LocalConfig(SGDHyper):
    """Each client trains alone on its own data; there is no server model to share."""

    name: Literal["local"] = "local"
    """Tag: ``local``, each client trains alone (a no-collaboration baseline)."""


PerFedAvgVariant = Literal["fo", "hf", "exact"]


class PerFedAvgConfig(AlgorithmBase):
    """Per-FedAvg (Fallah, Mokhtari, Ozdaglar 2020). Per local step, three minibatches D, D', D'':
    w_tmp = w - alpha grad f(w; D); g = grad f(w_tmp; D');
    fo: w <- w - beta g;  hf/exact: w <- w - beta (g - alpha d), d ~ Hessian f(w; D'') g."""

    name: Literal["per_fedavg"] = "per_fedavg"
    """Tag: ``per_fedavg``, Per-FedAvg (Fallah, Mokhtari, Ozdaglar 2020)."""
    variant: PerFedAvgVariant = "hf"
    """Meta-gradient: ``fo`` first order (drops the Hessian term), ``hf`` Hessian-free (Hessian-vector product by
    finite differences of step delta), ``exact`` (the Hessian-vector product by autograd)."""
    alpha: NonNegFloat = 0.01
    """alpha >= 0: step of the inner adaptation w_tmp = w - alpha grad f(w; D) (dimensionless)."""
    beta: PositiveFloat = 0.05
    """beta > 0: step of the outer (meta) update w <- w - beta g (dimensionless)."""
    delta: PositiveFloat = 1e-3
    """delta > 0: finite-difference step of the Hessian-free variant's Hessian-vector product (parameter units)."""
    local_steps: PositiveInt = 10
    """Local meta steps per update, tau in Per-FedAvg's notation (a count; each uses three minibatches D, D', D'')."""
    batch_size: PositiveInt | None = 32
    """Minibatch size of each of D, D', D'' (samples); null: the client's full training set."""


class PFedMeConfig(AlgorithmBase):
    """pFedMe (Dinh, Tran, Nguyen 2020), Moreau envelope. Per local round:
    theta ~ argmin f(theta; D) + lam/2 ||theta - w||^2 by ``inner_steps`` (K) steps of
    ``personal_lr``; then w <- w - eta lam (w - theta). ``weight_decay`` adds wd/2 ||theta||^2 to
    the inner objective (the reference code uses 0.001; default 0). The sync server's mixing
    x <- (1 - beta) x + beta mean(client models) takes beta = server.lr."""

    name: Literal["pfedme"] = "pfedme"
    """Tag: ``pfedme``, pFedMe (Dinh, Tran, Nguyen 2020)."""
    lam: PositiveFloat = 15.0
    """lambda > 0: weight of the Moreau envelope's proximal term lambda/2 ||theta - w||^2 (dimensionless)."""
    inner_steps: PositiveInt = 5
    """K: steps that approximately solve the personalised problem for theta (a count)."""
    personal_lr: PositiveFloat = 0.01
    """Step size of the inner steps for theta (pFedMe's personal learning rate; dimensionless, > 0)."""
    eta: PositiveFloat = 0.01
    """eta > 0: step of the local update w <- w - eta lambda (w - theta) (dimensionless)."""
    local_rounds: PositiveInt = 10
    """R: local rounds per update (a count)."""
    batch_size: PositiveInt | None = 32
    """Minibatch size |D| of the inner steps (samples); null: the client's full training set."""
    weight_decay: NonNegFloat = 0.0
    """wd >= 0: adds wd/2 ||theta||^2 to the inner objective (the reference code uses 0.001)."""


ALGORITHM_UNION = ComponentUnion(ALGORITHM_CONFIGS, "name")
ALGORITHM_UNION.register(FedAvgConfig, FedAsyncConfig, FedBuffConfig, LocalConfig, PerFedAvgConfig, PFedMeConfig)

if TYPE_CHECKING:
    AlgorithmConfig = FedAvgConfig | FedAsyncConfig | FedBuffConfig | LocalConfig | PerFedAvgConfig | PFedMeConfig
else:
    AlgorithmConfig = Annotated[AlgorithmBase, ALGORITHM_UNION]


# ------------------------------------------------------------------------------------------------
# Server
# ------------------------------------------------------------------------------------------------


class StalenessWeightBase(Strict):
    """Base of staleness-weight configs (tag ``name``); a plug-in weight subclasses it."""


class ConstantWeight(StalenessWeightBase):
    """s(tau) = 1."""

    name: Literal["constant"] = "constant"
    """Tag: ``constant``, s(tau) = 1 (every update counts fully)."""


class PolynomialWeight(StalenessWeightBase):
    """FedAsync: s(tau) = (tau + 1)^(-a)."""

    name: Literal["polynomial"] = "polynomial"
    """Tag: ``polynomial``, s(tau) = (tau + 1)^(-a)."""
    a: NonNegFloat = 0.5
    """Exponent a >= 0 (dimensionless); 0 is the constant weight."""


class HingeWeight(StalenessWeightBase):
    """FedAsync: s(tau) = 1 if tau <= b else 1 / (a (tau - b) + 1)."""

    name: Literal["hinge"] = "hinge"
    """Tag: ``hinge``, s(tau) = 1 for tau <= b, else 1 / (a (tau - b) + 1)."""
    a: NonNegFloat = 10.0
    """Slope a >= 0 past the hinge, per server version of staleness."""
    b: NonNegInt = 4
    """Hinge b: the staleness (server versions, a count) up to which updates count fully."""


class ExponentialWeight(StalenessWeightBase):
    """s(tau) = exp(-a tau)."""

    name: Literal["exponential"] = "exponential"
    """Tag: ``exponential``, s(tau) = exp(-a tau)."""
    a: NonNegFloat = 0.5
    """Rate a >= 0, per server version of staleness."""


WEIGHT_UNION = ComponentUnion(WEIGHT_CONFIGS, "name")
WEIGHT_UNION.register(ConstantWeight, PolynomialWeight, HingeWeight, ExponentialWeight)

if TYPE_CHECKING:
    StalenessWeight = ConstantWeight | PolynomialWeight | HingeWeight | ExponentialWeight
else:
    StalenessWeight = Annotated[StalenessWeightBase, WEIGHT_UNION]


class SelectionBase(Strict):
    """Base of selection-strategy configs (tag ``name``); a plug-in strategy subclasses it."""


class UniformSelection(SelectionBase):
    """Uniformly at random among idle, available clients (the default)."""

    name: Literal["uniform"] = "uniform"
    """Tag: ``uniform``, uniformly at random."""


class LeastRecentSelection(SelectionBase):
    """The idle, available client picked least recently (never picked first); ties uniformly at
    random. Round-robin when every client is always available."""

    name: Literal["least_recent"] = "least_recent"
    """Tag: ``least_recent``, the client picked least recently."""


class DataSizeSelection(SelectionBase):
    """At random with probability proportional to the client's training-set size n_k (among the
    idle, available clients)."""

    name: Literal["data_size"] = "data_size"
    """Tag: ``data_size``, P(k) proportional to n_k."""


class OvercommitSelection(SelectionBase):
    """Speed-aware over-commitment (FedScale; Lai et al. 2021, OSDI, Sec. 5): a sync round starts
    ceil(factor K) clients and keeps the first K arrivals, the others' results are discarded
    (``dropped_overcommit``). Picks are at random with probability proportional to
    (1 / expected task time)^speed_exponent (0: uniform, FedScale's own pick)."""

    name: Literal["overcommit"] = "overcommit"
    """Tag: ``overcommit``, FedScale's over-commitment."""
    factor: Annotated[float, Field(ge=1.0)] = 1.3
    """Clients started per client needed in a sync round (FedScale's default 1.3)."""
    speed_exponent: NonNegFloat = 0.0
    """alpha in P(pick k) proportional to (1 / E[task time of k])^alpha; 0 ignores speed."""


SELECTION_UNION = ComponentUnion(SELECTION_CONFIGS, "name")
SELECTION_UNION.register(UniformSelection, LeastRecentSelection, DataSizeSelection, OvercommitSelection)

if TYPE_CHECKING:
    Selection = UniformSelection | LeastRecentSelection | DataSizeSelection | OvercommitSelection
else:
    Selection = Annotated[SelectionBase, SELECTION_UNION]


class ServerConfig(Strict):
    """How the server takes updates: when it steps (``mode``), which updates it uses (staleness
    bound tau and policy), how it weighs them (s(tau), ``aggregation``) and its step size."""

    mode: Literal["sync", "async", "buffered"] = "async"
    """``sync``: rounds of ``clients_per_round`` clients (a round ends when all report or at ``round_deadline``);
    ``async``: one server step per arrival; ``buffered``: one step per ``buffer_size`` arrivals."""
    concurrency: PositiveInt = 10
    """Clients in flight at once in async and buffered modes (a count; FedBuff's concurrency)."""
    buffer_size: PositiveInt = 1
    """K: updates per server step in buffered mode (a count, <= concurrency)."""
    clients_per_round: PositiveInt = 10
    """Clients sampled per round in sync mode (a count; FedAvg's C N)."""
    round_deadline: PositiveFloat | None = None
    """Simulated seconds after which a sync round closes with the updates that arrived; null: wait for all."""
    max_staleness: NonNegInt | None = None
    """tau: the largest staleness (server versions between pull and arrival, a count) an update may have; null:
    unbounded."""
    staleness_policy: Literal["drop", "wait"] = "drop"
    """For updates staler than tau: ``drop`` discards them; ``wait`` holds the server at version v + tau until
    every client that pulled v has reported (PersA-FL's bounded staleness, every update used)."""
    staleness_weight: StalenessWeight = Field(default_factory=ConstantWeight)
    """s(tau), the weight of an update of staleness tau (a name, or a mapping with the weight's parameters)."""
    lr: PositiveFloat = 1.0
    """Server step (dimensionless, > 0): FedAsync's a (mixing x <- (1 - a_t) x + a_t x_client, a_t = lr s(tau)),
    FedBuff's eta_g, pFedMe's beta."""
    aggregation: Literal["auto", "samples", "uniform"] = "auto"
    """How a step's m updates share it: ``samples`` by training-set size (FedAvg), ``uniform`` equally (FedBuff's
    1/K); ``auto`` is samples for sync, uniform for async and buffered. A step is made for K updates; m != K
    updates (policy wait) get m/K of a step."""
    selection: Selection = Field(default_factory=UniformSelection)
    """Which idle, available client the server starts next (asyncfl.sim.selection): ``uniform``
    (default), ``least_recent``, ``data_size`` (proportional to training-set size) or ``overcommit``
    (FedScale's over-commitment in sync rounds, optionally speed-aware). Every random pick draws from
    the seeded ``selection`` stream."""

    @model_validator(mode="after")
    def _cross(self) -> ServerConfig:
        if self.mode == "buffered" and self.buffer_size > self.concurrency:
            raise ValueError(
                f"server.buffer_size ({self.buffer_size}) must be <= server.concurrency ({self.concurrency})"
            )
        return self


# ------------------------------------------------------------------------------------------------
# Data, partitions, models
# ------------------------------------------------------------------------------------------------


class IidPartition(Strict):
    """Samples shuffled and dealt to clients."""

    name: Literal["iid"] = "iid"
    """Tag: ``iid``, samples shuffled and dealt to clients."""


class DirichletPartition(Strict):
    """Per client, label proportions ~ Dirichlet(alpha); small alpha = few labels per client."""

    name: Literal["dirichlet"] = "dirichlet"
    """Tag: ``dirichlet``, per-client label proportions ~ Dirichlet(alpha)."""
    alpha: PositiveFloat = 0.5
    """Concentration alpha > 0 (dimensionless): small alpha = few labels per client."""


class ClassesPerClientPartition(Strict):
    """Each client holds exactly ``k`` labels (k = 2: pFedMe's MNIST split, Dinh et al. 2020;
    Per-FedAvg's paper splits 50 users by class halves instead)."""

    name: Literal["classes_per_client"] = "classes_per_client"
    """Tag: ``classes_per_client``, each client holds exactly k labels (pFedMe's and FedProx's label skew)."""
    k: PositiveInt = 2
    """Labels per client (a count)."""
    assignment: Literal["blocks", "sliding"] = "blocks"
    """``blocks``: consecutive blocks of k labels of a seeded permutation (with k = 2 and 10 labels, 5 disjoint
    pairs); ``sliding``: client i gets labels i .. i + k - 1 mod K (overlapping windows, as FedProx's and
    pFedMe's MNIST generators)."""


class ShardsPartition(Strict):
    """McMahan et al.: sort by label, cut into shards, deal ``shards_per_client`` to each client."""

    name: Literal["shards"] = "shards"
    """Tag: ``shards``, McMahan et al.: sort by label, cut into shards, deal them."""
    shards_per_client: PositiveInt = 2
    """Shards dealt to each client (a count)."""


class NaturalPartition(Strict):
    """The data set's own users (LEAF; synthetic and quadratic are generated per client)."""

    name: Literal["natural"] = "natural"
    """Tag: ``natural``, the data set's own users (LEAF) or per-client generation (synthetic, quadratic)."""


Partition = Annotated[
    IidPartition | DirichletPartition | ClassesPerClientPartition | ShardsPartition | NaturalPartition,
    Field(discriminator="name"),
]


class QuantitySkew(Strict):
    """Client sizes; combines with label partitions."""

    name: Literal["none", "lognormal", "power_law"] = "none"
    """Client sizes: ``none`` (equal), ``lognormal`` (relative sizes exp(N(0, sigma^2))) or ``power_law`` (relative
    sizes Pareto(exponent) + 1)."""
    sigma: PositiveFloat = 1.0
    """sigma > 0 of the lognormal skew: standard deviation of the log size (dimensionless)."""
    exponent: PositiveFloat = 1.5
    """Tail exponent > 0 of the power-law skew (dimensionless)."""


class DataCommon(Strict):
    """Keys every data set takes. (To couple system and data heterogeneity, see
    ``system.speed_by_label``.)"""

    partition: Partition = Field(default_factory=IidPartition)
    """How samples are split among clients (a name, or a mapping with the partition's parameters)."""
    quantity_skew: QuantitySkew = Field(default_factory=QuantitySkew)
    """How many samples each client holds (combines with label partitions)."""
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    """Share (0 < f < 1) of each client's samples held out as its own test set, with the same label distribution."""
    min_samples: PositiveInt = 4
    """Fewest samples (train + test) a client may hold (a count)."""


class SyntheticData(DataCommon):
    """Synthetic(alpha, beta) of FedProx / pFedMe: alpha and beta are standard deviations of the
    per-client model and feature means; ``iid`` draws one shared model; client sizes lognormal."""

    dataset: Literal["synthetic"] = "synthetic"
    """Tag: ``synthetic``, Synthetic(alpha, beta) of FedProx / pFedMe."""
    partition: Partition = Field(default_factory=NaturalPartition)
    """Only ``natural``: clients are generated with their own data."""
    alpha: NonNegFloat = 0.5
    """alpha >= 0: standard deviation of the per-client model means (model heterogeneity; dimensionless)."""
    beta: NonNegFloat = 0.5
    """beta >= 0: standard deviation of the per-client feature means (feature heterogeneity; dimensionless)."""
    dimension: PositiveInt = 60
    """Feature dimension d (a count; FedProx's 60)."""
    classes: Annotated[StrictInt, Field(ge=2)] = 10
    """Number of labels (a count >= 2; FedProx's 10)."""
    iid: bool = False
    """true: FedProx's iid rule, one shared model W, b ~ N(0, 1) for all clients."""
    mean_samples: PositiveFloat = 100.0
    """Mean client size before flooring (samples): n_k = max(min_samples, 2, floor(exp(N(mu, sigma^2)))), mu =
    ln(mean_samples) - sigma^2/2."""
    sigma_samples: NonNegFloat = 1.0
    """sigma >= 0 of the lognormal client sizes: standard deviation of the log size (dimensionless)."""


class QuadraticData(DataCommon):
    """f_i(w) = 1/2 (w - c_i)^T A_i (w - c_i), A_i with eigenvalues in [mu, L]; ``dimension``
    d samples per client realise A_i exactly (see asyncfl.data.quadratic)."""

    dataset: Literal["quadratic"] = "quadratic"
    """Tag: ``quadratic``, f_i(w) = 1/2 (w - c_i)^T A_i (w - c_i), a test problem with known optimum."""
    partition: Partition = Field(default_factory=NaturalPartition)
    """Only ``natural``: clients are generated with their own objective."""
    dimension: PositiveInt = 5
    """Dimension d of w (a count); d samples per client realise A_i exactly."""
    mu: PositiveFloat = 1.0
    """mu > 0: smallest eigenvalue of each A_i (strong convexity constant)."""
    L: PositiveFloat = 4.0
    """L > 0: largest eigenvalue of each A_i (smoothness constant; L >= mu)."""
    spread: NonNegFloat = 1.0
    """Standard deviation of the client minimisers c_i ~ N(0, spread^2 I_d) (parameter units; 0: one shared
    minimiser)."""


class TorchvisionData(DataCommon):
    """mnist, fashion_mnist, emnist, cifar10 through torchvision."""

    dataset: Literal["mnist", "fashion_mnist", "emnist", "cifar10"] = "mnist"
    """Tag: ``mnist``, ``fashion_mnist``, ``emnist`` (see ``split``) or ``cifar10``, read through torchvision."""
    root: str = "data"
    """Folder of the data set's files (a path, relative to the scenario file)."""
    download: bool = False
    """true: fetch missing files (needs network); false: missing files are an error."""
    split: Literal["byclass", "bymerge", "balanced", "letters", "digits", "mnist"] = "balanced"
    """EMNIST split (emnist only)."""
    max_samples: PositiveInt | None = None
    """Cap on the pooled samples used (a count, a seeded subsample); null: all."""


class LeafData(DataCommon):
    """LEAF JSON (``root``/train/*.json, ``root``/test/*.json) with its natural users; keys of one
    task are ignored by the others. See :mod:`asyncfl.data.leaf`."""

    dataset: Literal["leaf"] = "leaf"
    """Tag: ``leaf``, LEAF JSON (root/train/*.json, root/test/*.json) with its natural users."""
    partition: Partition = Field(default_factory=NaturalPartition)
    """``natural`` keeps LEAF's users; a pooled partition (iid, dirichlet, ...) re-deals their samples."""
    root: str = "data/leaf"
    """Folder of the LEAF task (a path, relative to the scenario file)."""
    task: Literal["femnist", "shakespeare", "sent140", "celeba"] = "femnist"
    """LEAF task: femnist, shakespeare, sent140 or celeba."""
    download: bool = False
    """true: fetch missing files (needs network); false: missing files are an error."""
    max_words: PositiveInt = 25
    """sent140 only: tokens per tweet (a count; LEAF's 25)."""
    vocab_size: PositiveInt = 10000
    """sent140 only: most frequent training tokens given their own id (a count; ids 0 and 1 are padding and
    unknown)."""
    images: str | None = None
    """celeba only: folder of CelebA's aligned JPEGs (a path, relative like root); null: root/raw/img_align_celeba,
    LEAF's layout."""
    image_size: PositiveInt = 84
    """celeba only: side in pixels the images are resized to (LEAF's 84)."""


DATA_UNION = ComponentUnion(DATA_CONFIGS, "dataset")
DATA_UNION.register(SyntheticData, QuadraticData, TorchvisionData, LeafData)

if TYPE_CHECKING:
    DataConfig = SyntheticData | QuadraticData | TorchvisionData | LeafData
else:
    DataConfig = Annotated[DataCommon, DATA_UNION]


class ModelBase(Strict):
    """Base of model configs (tag ``name``); a plug-in model subclasses it."""


class LogRegModel(ModelBase):
    """Multinomial logistic regression (one linear layer)."""

    name: Literal["logreg"] = "logreg"
    """Tag: ``logreg``, multinomial logistic regression (one linear layer)."""


class MLPModel(ModelBase):
    """Fully connected network; default 784-80-60-10 with ELU (Per-FedAvg)."""

    name: Literal["mlp"] = "mlp"
    """Tag: ``mlp``, a fully connected network."""
    hidden: list[PositiveInt] = [80, 60]
    """Widths of the hidden layers (units each; Per-FedAvg's 80, 60)."""
    activation: Literal["elu", "relu", "tanh", "sigmoid"] = "elu"
    """Activation after each hidden layer (Per-FedAvg: elu)."""


class DNNModel(ModelBase):
    """pFedMe's networks: one hidden layer (100 for MNIST, 20 for Synthetic) with ReLU."""

    name: Literal["dnn"] = "dnn"
    """Tag: ``dnn``, pFedMe's one-hidden-layer ReLU network."""
    hidden: PositiveInt | None = None
    """Hidden width (units); null: pFedMe's, 100 for MNIST and 20 for Synthetic."""


class CNNModel(ModelBase):
    """LeNet-style two-convolution network (no batch norm)."""

    name: Literal["cnn"] = "cnn"
    """Tag: ``cnn``, a LeNet-style two-convolution network (no batch norm)."""
    channels: list[PositiveInt] = [32, 64]
    """Output channels of the convolutions (a count each)."""
    hidden: PositiveInt = 512
    """Width of the fully connected layer after the convolutions (units)."""


class CharLSTMModel(ModelBase):
    """Embedding -> LSTM -> linear on the last step: next character for Shakespeare, sentiment
    of word-id sequences for LEAF sent140 (the embedding's rows come from the data). Defaults: LEAF's
    Shakespeare model; LEAF's sent140 model is embedding 100, hidden 100, dense 128."""

    name: Literal["char_lstm"] = "char_lstm"
    """Tag: ``char_lstm``, embedding -> LSTM -> linear on the last step (Shakespeare, sent140)."""
    embedding: PositiveInt = 8
    """Embedding width (units; LEAF's Shakespeare 8)."""
    hidden: PositiveInt = 256
    """LSTM width (units; LEAF's Shakespeare 256, sent140 100)."""
    layers: PositiveInt = 2
    """Stacked LSTM layers (a count; LEAF's 2)."""
    dense: NonNegInt = 0
    """Width of a linear layer (no activation) between the last LSTM step and the output (units); 0: none, as
    LEAF's Shakespeare model; LEAF's sent140 uses 128."""


class QuadraticModel(ModelBase):
    """The parameter vector w of the quadratic test problem (squared loss of a linear map)."""

    name: Literal["quadratic"] = "quadratic"
    """Tag: ``quadratic``, the parameter vector w of the quadratic test problem."""


MODEL_UNION = ComponentUnion(MODEL_CONFIGS, "name")
MODEL_UNION.register(LogRegModel, MLPModel, DNNModel, CNNModel, CharLSTMModel, QuadraticModel)

if TYPE_CHECKING:
    ModelConfig = LogRegModel | MLPModel | DNNModel | CNNModel | CharLSTMModel | QuadraticModel
else:
    ModelConfig = Annotated[ModelBase, MODEL_UNION]


class ClientsConfig(Strict):
    """Who takes part."""

    count: PositiveInt = 100
    """N: number of clients (a count; LEAF: at most the number of users)."""


# ------------------------------------------------------------------------------------------------
# System model
# ------------------------------------------------------------------------------------------------


class ComputeConfig(Strict):
    """How long a task computes. ``model`` picks the unit of the device speed:

    - ``flops`` (default): compute = task FLOPs / ``flops_per_s`` x jitter + ``overhead``, with the
      task's FLOPs counted from the model and the rule (gradient evaluations x local steps x batch
      x FLOPs per per-sample gradient), so a bigger model or a rule that evaluates more gradients
      takes longer on the same device;
    - ``samples`` (the model before issue 14): compute = per-sample gradient evaluations /
      ``speed`` x jitter + ``overhead``; the model's size does not enter.

    A mapping that sets ``speed`` but neither ``model`` nor ``flops_per_s`` means ``samples``
    (scenario files written before the ``flops`` model keep their meaning). The speed of the model
    not chosen is ignored (a resolved scenario.yaml writes both)."""

    model: Literal["flops", "samples"] = "flops"
    """Compute-time model: ``flops`` (device speed in FLOP/s) or ``samples`` (samples per second)."""
    flops_per_s: Distribution = Field(default_factory=lambda: LognormalDist(mean=1.0e9, sigma=0.5))
    """Persistent per-client device speed in FLOP/s (model ``flops``): the effective training
    throughput, well below a chip's peak. Default: lognormal around 1 GFLOP/s, a phone CPU's order
    of magnitude (see asyncfl/sim/devices.py for sourced device classes)."""
    speed: Distribution = Field(default_factory=lambda: LognormalDist(mean=1000.0, sigma=0.5))
    """Persistent per-client compute speed under model ``samples``: samples per second (one sample = one
    per-example gradient evaluation); a number is a constant."""
    jitter: Distribution = Field(default_factory=lambda: ConstantDist(value=1.0))
    """Per-task multiplicative factor on compute time (dimensionless; mean 1 keeps the mean time)."""
    overhead: NonNegFloat = 0.0
    """Fixed seconds added to every task's compute time (start-up, data loading); not jittered,
    multiplied by ``system.delay_scale`` like every duration."""

    @model_validator(mode="before")
    @classmethod
    def _speed_means_samples(cls, data: Any) -> Any:
        """A mapping that sets ``speed`` but neither ``model`` nor ``flops_per_s`` means ``samples``."""
        if isinstance(data, dict) and "model" not in data and "speed" in data and "flops_per_s" not in data:
            data = {**data, "model": "samples"}
        return data


class NetworkConfig(Strict):
    """Per client, persistent latency and bandwidths: a transfer of B bytes takes
    latency + B / bandwidth, times the per-task ``jitter``."""

    latency: Distribution = Field(default_factory=lambda: ConstantDist(value=0.05))
    """Persistent per-client latency, seconds per transfer."""
    download_bandwidth: Distribution = Field(default_factory=lambda: LognormalDist(mean=2.0e6, sigma=0.5))
    """Persistent per-client download bandwidth, bytes per second; a transfer of B bytes takes latency + B /
    bandwidth."""
    upload_bandwidth: Distribution = Field(default_factory=lambda: LognormalDist(mean=1.0e6, sigma=0.5))
    """Persistent per-client upload bandwidth, bytes per second."""
    jitter: Distribution = Field(default_factory=lambda: ConstantDist(value=1.0))
    """Per-task multiplicative factor on transfer time (dimensionless; mean 1 keeps the mean time)."""
    upload_compression: Annotated[float, Field(ge=1.0)] = 1.0
    """Compression ratio of uploads (dimensionless, >= 1): an upload carries model bytes / ratio
    (e.g. 4 for float32 -> 8-bit quantisation). Downloads are never compressed."""


class AlwaysOn(Strict):
    """Every client is always available."""

    model: Literal["always"] = "always"
    """Tag: ``always``, every client is always available."""


class OnOff(Strict):
    """Alternating on/off periods with exponential durations (seconds)."""

    model: Literal["on_off"] = "on_off"
    """Tag: ``on_off``, alternating on/off periods with exponential durations; a task running when its client goes
    off is lost (status dropped_offline)."""
    mean_on: PositiveFloat = 600.0
    """Mean length of an on period, simulated seconds."""
    mean_off: PositiveFloat = 300.0
    """Mean length of an off period, simulated seconds."""
    start_on: Probability = 1.0
    """Probability (0..1) that a client starts on."""


class TraceAvailabilityConfig(Strict):
    """Availability replayed from a trace file: a client is on exactly inside its windows
    [start_s, end_s) and off elsewhere; a task running when its client goes off is lost
    (dropped_offline). File format: see asyncfl/sim/traces.py (``asyncfl data convert-trace``
    writes it from FedScale's behaviour trace)."""

    model: Literal["trace"] = "trace"
    """Tag: ``trace``, availability windows replayed from a file."""
    path: str
    """CSV with columns client, start_s, end_s (one row per window, seconds) and optionally
    period_s (per client: the trace's length, after which it repeats); path relative to the
    scenario file."""
    on_end: Literal["wrap", "error"] = "wrap"
    """When simulated time passes the trace's end (a client's period_s, else the largest end_s in
    the file): ``wrap`` replays the trace from its start (time modulo the period); ``error`` stops
    the run with a scenario error (exit 2)."""


Availability = Annotated[AlwaysOn | OnOff | TraceAvailabilityConfig, Field(discriminator="model")]


class SystemConfig(Strict):
    """Compute, network, availability and dropouts."""

    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    """Client compute: the compute-time model, persistent device speeds (FLOP/s or samples/s) and per-task jitter."""
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    """Client latency (seconds), bandwidths (bytes per second) and per-task jitter."""
    availability: Availability = Field(default_factory=AlwaysOn)
    """When clients are reachable: ``always``, ``on_off`` or ``trace`` (windows replayed from a file)."""
    dropout: Probability = 0.0
    """Probability (0..1) that a task is lost after it starts (the client never reports)."""
    profile: str | None = None
    """CSV with one row per client replacing the persistent distributions (a path relative to the
    scenario file): columns client, the compute model's speed column (``flops_per_s`` or ``speed``),
    download_bandwidth, upload_bandwidth, latency; a ``device`` column naming a catalogue class
    fills the ones left out. With a profile, compute.model defaults to ``samples`` (the profile
    format before the flops model); name ``flops`` to read a flops_per_s column or take a device
    column's FLOP/s."""
    devices: dict[str, Annotated[float, Field(gt=0.0)]] | None = None
    """Device classes of the built-in catalogue (asyncfl/sim/devices.py) with their proportions,
    e.g. ``{slow_edge: 0.5, fast_edge: 0.5}`` (they must sum to 1): each client draws its
    class once (stream ``device_class``) and takes the class's FLOP/s, bandwidths and latency in
    place of the compute.flops_per_s / compute.speed and network distributions. Not together with
    ``profile`` (whose ``device`` column assigns classes per client)."""
    delay_scale: PositiveFloat = 1.0
    """Multiplies every task duration: download, compute, upload (dimensionless, > 0; for convergence-versus-delay
    sweeps; availability periods are not scaled)."""
    speed_by_label: Annotated[float, Field(ge=0.0, le=1.9)] = 0.0
    """c in [0, 1.9]: a client's speed is multiplied by 1 + c (mean label / (classes - 1) - 1/2), so slow clients
    hold the low labels (couples system and data heterogeneity); 0: independent."""

    @model_validator(mode="before")
    @classmethod
    def _profile_means_samples(cls, data: Any) -> Any:
        """A profile with no compute model named means ``samples``: profile files written before
        the ``flops`` model hold speeds in samples/s, and stay honoured exactly."""
        if isinstance(data, dict) and data.get("profile") is not None:
            compute = data.get("compute", {})
            if isinstance(compute, dict) and "model" not in compute and "flops_per_s" not in compute:
                data = {**data, "compute": {**compute, "model": "samples"}}
        return data

    @model_validator(mode="after")
    def _devices(self) -> SystemConfig:
        if self.devices is not None:
            if self.profile is not None:
                raise ValueError("set one of system.profile (per client) and system.devices (proportions)")
            total = sum(self.devices.values())
            if not self.devices or abs(total - 1.0) > 1e-9:
                raise ValueError(f"system.devices proportions must sum to 1 (they sum to {total:g})")
        return self


# ------------------------------------------------------------------------------------------------
# Stopping, evaluation, execution, sweeps
# ------------------------------------------------------------------------------------------------


class StopConfig(Strict):
    """Stop at whichever comes first; at least one must be set."""

    sim_time: PositiveFloat | None = None
    """Stop at this simulated time T, seconds; null: no time limit."""
    server_steps: PositiveInt | None = None
    """Stop after this many server steps (model versions; a count); null: no limit."""
    client_updates: PositiveInt | None = None
    """Stop after this many client updates have arrived (a count); null: no limit."""

    @model_validator(mode="after")
    def _one(self) -> StopConfig:
        if self.sim_time is None and self.server_steps is None and self.client_updates is None:
            raise ValueError("set at least one of stop.sim_time, stop.server_steps, stop.client_updates")
        return self


class EvalConfig(Strict):
    """Evaluate every ``every_steps`` server steps and/or every ``every_time`` simulated seconds,
    plus at the start and end."""

    every_steps: PositiveInt | None = 10
    """Evaluate every this many server steps (a count); null: not by steps."""
    every_time: PositiveFloat | None = None
    """Evaluate every this many simulated seconds; null: not by time."""
    clients: PositiveInt | None = None
    """A seeded sample of this many clients to personalise and score (a count); null: all."""
    adapt_steps: NonNegInt = 1
    """Full-batch gradient steps (a count) on a client's training data, of step ``adapt_lr``, that
    personalise the model before it is scored (0 scores the raw model); pFedMe scores its Moreau
    solution theta_i(w) instead."""
    adapt_lr: PositiveFloat | None = None
    """Step size of the evaluation's personalising gradient steps (Per-FedAvg's alpha, the
    fine-tuning step of FedAvg/FedAsync/FedBuff/local). null resolves to the algorithm's own: alpha
    for per_fedavg, the client lr (algorithm.lr) otherwise; it stays null for pfedme, whose
    personal model theta_i(w) has no step. Set one value across algorithms to compare their
    personalized accuracies at the same adaptation step. Only the scoring uses it: grad_norm_sq
    keeps the algorithm's alpha."""
    grad_norm: bool = True
    """true: record grad_norm_sq = ||grad F(w)||^2 of the paper's objective (exact autograd on the full
    training data) at each evaluation."""


class ExecutionConfig(Strict):
    """How client updates are computed; never changes results beyond float rounding."""

    batching: Literal["auto", "none"] = "auto"
    """``auto``: batch pending client jobs with vmap in chunks; ``none``: one client at a time (same results up to
    float rounding)."""
    max_batch: PositiveInt | None = None
    """Client jobs per vmapped chunk (a count); null: chosen from memory."""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    """Where data and models live: ``cpu``, ``cuda`` or ``auto`` (cuda when available)."""
    dtype: Literal["float32", "float64"] = "float32"
    """Floating-point type of models and data."""
    threads: PositiveInt | None = None
    """torch intra-op threads on the CPU (a count; null: torch's default, one per core). Small models run fastest
    on 1, and processes sharing cores must not each take them all (two spinning threads per process made tiny ops
    ~100x slower on a loaded 2-core box); the count can change float reduction order, so it is in the scenario."""


class SweepConfig(Strict):
    """A sweep declared in the scenario: a grid of dotted keys x seeds."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted scenario keys -> lists of values; one run per combination (at most 10,000 runs per sweep, seeds
    included)."""
    seeds: PositiveInt = 1
    """Seeds per grid point (a count): seed, seed + 1, ..."""


class Scenario(Strict):
    """One simulation, fully resolved."""

    seed: StrictInt = 0
    """Seed of every random stream (data, system, algorithms; an integer)."""
    name: Annotated[str, Field(pattern=r"^[^\x00-\x1f/\\]{1,200}$")] = "scenario"
    """A label; names the default run directory runs/<name>-seed<seed>, so no path separator or control character
    (1 to 200 characters)."""
    algorithm: AlgorithmConfig = Field(default_factory=FedAsyncConfig)
    """The client rule and its hyperparameters, chosen by ``name``."""
    server: ServerConfig = Field(default_factory=ServerConfig)
    """How the server takes updates: mode, concurrency, staleness bound tau and weight s(tau), step size."""
    data: DataConfig = Field(default_factory=SyntheticData)
    """The federated data set, chosen by ``dataset``, and how it is split among clients."""
    model: ModelConfig = Field(default_factory=LogRegModel)
    """The network every client trains, chosen by ``name``."""
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    """The client population: how many clients there are."""
    system: SystemConfig = Field(default_factory=SystemConfig)
    """The system model: compute, network, availability and dropouts."""
    stop: StopConfig = Field(default_factory=lambda: StopConfig(server_steps=100))
    """When the run ends: whichever set limit comes first."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """When and how the models are scored."""
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    """How client updates are computed (never changes results beyond float rounding)."""
    sweep: SweepConfig | None = None
    """A sweep declared in the scenario (read by ``asyncfl sweep``); null: none."""

    @model_validator(mode="after")
    def _cross(self) -> Scenario:
        s = self.server
        if s.mode == "sync" and s.clients_per_round > self.clients.count:
            raise ValueError(
                f"server.clients_per_round ({s.clients_per_round}) must be <= clients.count ({self.clients.count})"
            )
        if s.mode != "sync" and s.concurrency > self.clients.count:
            raise ValueError(f"server.concurrency ({s.concurrency}) must be <= clients.count ({self.clients.count})")
        if self.data.dataset == "quadratic" and self.model.name != "quadratic":
            raise ValueError("data.dataset quadratic needs model.name quadratic")
        if self.model.name == "quadratic" and self.data.dataset != "quadratic":
            raise ValueError("model.name quadratic needs data.dataset quadratic")
        if self.eval.adapt_lr is None and self.algorithm.name != "pfedme":
            # Resolve the evaluation's adaptation step so the resolved scenario records it.
            alg = self.algorithm
            lr = alg.alpha if isinstance(alg, PerFedAvgConfig) else getattr(alg, "lr", None)
            if lr is not None and lr > 0:
                object.__setattr__(self, "eval", self.eval.model_copy(update={"adapt_lr": float(lr)}))
        return self


SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of scenario files: every key with its description, units and
    paper symbol, the shorthands of :class:`Strict` included. A file the loader accepts validates
    against it (the cross-key rules, e.g. buffer_size <= concurrency, are the loader's alone)."""
    from asyncfl.version import __version__

    schema = Scenario.model_json_schema()
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"urn:asyncfl:scenario:{__version__}",
        **schema,
    }


def _rebuild_unions() -> None:
    """After a registration: forget the cached tag specs and rebuild every model whose validator
    holds a ComponentUnion, inner models first (a model embeds its fields' validators as they were
    when it was built)."""
    tagged_fields.cache_clear()
    _TAGS.clear()
    for cls in (ComputeConfig, NetworkConfig, SystemConfig, ServerConfig, Scenario):
        cls.model_rebuild(force=True)


for _registry in (ALGORITHM_CONFIGS, DATA_CONFIGS, MODEL_CONFIGS, DIST_CONFIGS, WEIGHT_CONFIGS, SELECTION_CONFIGS):
    _registry.on_change(_rebuild_unions)


_TAGS: dict[str, str] = {}
"""tag_paths() of the scenario, cached until the next registration (_rebuild_unions clears it)."""


def tag_paths(cls: type[BaseModel] | None = None, prefix: str = "") -> dict[str, str]:
    """Dotted path of every tagged union in the scenario -> its tag key, e.g. ``algorithm`` ->
    ``name``, ``data`` -> ``dataset``, ``system.compute.speed`` -> ``dist``: the one place the
    loader (--set re-tagging) and the sweep labels learn the tags from."""
    if cls is None:
        if not _TAGS:
            _TAGS.update(tag_paths(Scenario))
        return dict(_TAGS)
    out: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        path = f"{prefix}{name}"
        union = union_of(field)
        if union is not None:
            out[path] = union[0]
            inner = union[1]
        else:
            inner = _models_in(field.annotation)
        for sub in inner:
            for k, v in tag_paths(sub, f"{path}.").items():
                out.setdefault(k, v)
    return out


def tag_keys() -> tuple[str, ...]:
    """The distinct tag keys, in the order they first appear: ``name``, ``dataset``, ``dist``, ``model``."""
    return tuple(dict.fromkeys(tag_paths().values()))


__all__ = [
    "ALGORITHM_CONFIGS",
    "ALGORITHM_UNION",
    "DATA_CONFIGS",
    "DATA_UNION",
    "DIST_CONFIGS",
    "DIST_UNION",
    "MODEL_CONFIGS",
    "MODEL_UNION",
    "SELECTION_CONFIGS",
    "SELECTION_UNION",
    "WEIGHT_CONFIGS",
    "WEIGHT_UNION",
    "AlgorithmBase",
    "ComponentUnion",
    "DataCommon",
    "DistBase",
    "ModelBase",
    "Scenario",
    "SelectionBase",
    "StalenessWeightBase",
    "Strict",
    "scenario_json_schema",
    "tag_keys",
    "tag_paths",
    "tag_values",
    "union_of",
]
