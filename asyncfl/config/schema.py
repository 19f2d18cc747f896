"""The scenario format: a frozen, strictly validated, fully resolved description of one run.

Every mapping forbids unknown keys, every default is filled in, and cross-field rules are checked
here, so the rest of the code can trust a :class:`Scenario`. Components with their own parameters
(algorithm, data set, partition, model, staleness weight, distributions) are tagged unions: the tag
(``algorithm.name``, ``data.dataset``, ...) selects which keys are allowed.

Units: time in simulated seconds, sizes in bytes, bandwidth in bytes per second, compute speed in
samples per second (one sample = one per-example gradient evaluation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

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
    """Base of every scenario mapping: unknown keys are errors, instances are immutable, and
    numbers are finite (an infinite step size or time is a typo, not a setting: use null)."""

    # defer_build: a model's validator is built at its first use, so the tagged unions of
    # registered components (ComponentUnion) include the plug-ins loaded by then.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False, defer_build=True
    )


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


ALGORITHM_CONFIGS: Registry[type[BaseModel]] = Registry("algorithm", "algorithm.name", plugin_part="config")
DATA_CONFIGS: Registry[type[BaseModel]] = Registry("data set", "data.dataset", plugin_part="config")
MODEL_CONFIGS: Registry[type[BaseModel]] = Registry("model", "model.name", plugin_part="config")
DIST_CONFIGS: Registry[type[BaseModel]] = Registry("distribution", "dist", plugin_part="config")
# Plug-in hooks of staleness weights and selection strategies (entry-point groups
# asyncfl.staleness_weights and asyncfl.selection, asyncfl.registry.GROUPS). Their implementation
# registries live in asyncfl/sim; to let plug-ins in, for each kind:
#   here:     WEIGHT_CONFIGS = Registry("staleness weight", "server.staleness_weight.name", plugin_part="config")
#             WEIGHT_UNION = ComponentUnion(WEIGHT_CONFIGS, "name"); WEIGHT_UNION.register(ConstantWeight, ...)
#             and type the field ``Annotated[Strict, WEIGHT_UNION]`` (as AlgorithmConfig is typed);
#   in sim/:  pass plugin_part="build" to that kind's implementation Registry;
#   here:     add WEIGHT_CONFIGS to the on_change loop at the end of this module, and the model
#             that holds the field (ServerConfig) to _rebuild_unions.
# ("selection strategy": the same with the selection field's tag.)


# ------------------------------------------------------------------------------------------------
# Distributions (units are those of the key that holds them)
# ------------------------------------------------------------------------------------------------


class DistBase(Strict):
    """Base of distribution configs (tag ``dist``); a plug-in delay model subclasses it."""


class ConstantDist(DistBase):
    """Always ``value``. A bare number in a scenario means this."""

    dist: Literal["constant"] = "constant"
    value: NonNegFloat = 1.0


class UniformDist(DistBase):
    """Uniform on [low, high]: mean (low+high)/2, variance (high-low)^2/12."""

    dist: Literal["uniform"] = "uniform"
    low: NonNegFloat
    high: NonNegFloat

    @model_validator(mode="after")
    def _order(self) -> UniformDist:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class ExponentialDist(DistBase):
    """Exponential with the given ``mean`` (variance mean^2)."""

    dist: Literal["exponential"] = "exponential"
    mean: PositiveFloat


class LognormalDist(DistBase):
    """exp(N(mu, sigma^2)) with mu chosen so that the mean is ``mean``:
    mu = ln(mean) - sigma^2/2; variance (exp(sigma^2) - 1) mean^2."""

    dist: Literal["lognormal"] = "lognormal"
    mean: PositiveFloat
    sigma: NonNegFloat = 0.5


class ParetoDist(DistBase):
    """Pareto (heavy tail) with minimum ``scale`` (x_m) and tail index ``shape`` (a):
    mean a x_m/(a-1) for a > 1; variance x_m^2 a/((a-1)^2 (a-2)) for a > 2."""

    dist: Literal["pareto"] = "pareto"
    shape: PositiveFloat = 2.5
    scale: PositiveFloat = 1.0


class FromListDist(DistBase):
    """Deterministic twin: the i-th draw is ``values[i % len(values)]`` (i = client id for
    per-client quantities, task index for per-task ones)."""

    dist: Literal["from_list"] = "from_list"
    values: Annotated[list[NonNegFloat], Field(min_length=1)]


DIST_UNION = ComponentUnion(DIST_CONFIGS, "dist")
DIST_UNION.register(ConstantDist, UniformDist, ExponentialDist, LognormalDist, ParetoDist, FromListDist)

if TYPE_CHECKING:
    Distribution = ConstantDist | UniformDist | ExponentialDist | LognormalDist | ParetoDist | FromListDist
else:
    Distribution = Annotated[DistBase, DIST_UNION]


def _number_is_constant(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return {"dist": "constant", "value": value}
    if isinstance(value, str):
        return {"dist": value}
    return value


# ------------------------------------------------------------------------------------------------
# Algorithms (client rules and their hyperparameters)
# ------------------------------------------------------------------------------------------------


class AlgorithmBase(Strict):
    """Base of client-rule configs (tag ``name``). A rule's hyperparameters are written once, in
    its config class here; the rule class (asyncfl.algorithms) subclasses it."""


class SGDHyper(AlgorithmBase):
    """Local SGD shared by the non-personalized baselines: ``local_steps`` minibatch steps of size
    ``batch_size`` (null: the client's full training set) with step ``lr``. ``weight_decay``: mu,
    adds mu/2 ||w||^2 to the local objective. ``prox``: rho, adds rho/2 ||w - w_0||^2 (w_0 the
    pulled model): FedAsync's regularized local objective g_{x_tau}(x; z) = f(x; z) +
    rho/2 ||x - x_tau||^2 (Xie et al. 2019), FedProx's mu; 0 (default) = plain local SGD."""

    lr: PositiveFloat = 0.05
    """eta_l: local step size (per unit of loss gradient)."""
    local_steps: PositiveInt = 10
    """S: local SGD steps per task."""
    batch_size: PositiveInt | None = 32
    """B: samples per step; null = the client's full training set every step."""
    weight_decay: NonNegFloat = 0.0
    """mu: L2 term mu/2 ||w||^2 added to the local objective (0 = none)."""
    prox: NonNegFloat = 0.0
    """rho: proximal term rho/2 ||w - w_0||^2 toward the pulled model w_0 (FedAsync's rho,
    FedProx's mu; 0 = none)."""


class FedAvgConfig(SGDHyper):
    """FedAvg (McMahan et al. 2017): local SGD, server averages the deltas."""

    name: Literal["fedavg"] = "fedavg"


class FedAsyncConfig(SGDHyper):
    """FedAsync (Xie et al. 2019): x <- (1 - a_t) x + a_t x_client, a_t = server.lr * s(tau)."""

    name: Literal["fedasync"] = "fedasync"


class FedBuffConfig(SGDHyper):
    """FedBuff (Nguyen et al. 2022): K = server.buffer_size staleness-weighted deltas per step."""

    name: Literal["fedbuff"] = "fedbuff"


class LocalConfig(SGDHyper):
    """Each client trains alone on its own data; there is no server model to share."""

    name: Literal["local"] = "local"


PerFedAvgVariant = Literal["fo", "hf", "exact"]


class PerFedAvgConfig(AlgorithmBase):
    """Per-FedAvg (Fallah, Mokhtari, Ozdaglar 2020). Per local step, three minibatches D, D', D'':
    w_tmp = w - alpha grad f(w; D); g = grad f(w_tmp; D');
    fo: w <- w - beta g;  hf/exact: w <- w - beta (g - alpha d), d ~ Hessian f(w; D'') g."""

    name: Literal["per_fedavg"] = "per_fedavg"
    variant: PerFedAvgVariant = "hf"
    """fo: first order (no Hessian term); hf: Hessian-vector product by central difference of
    radius delta; exact: autograd Hessian-vector product."""
    alpha: NonNegFloat = 0.01
    """alpha: inner (personalization) step."""
    beta: PositiveFloat = 0.05
    """beta: outer (meta) step."""
    delta: PositiveFloat = 1e-3
    """delta: finite-difference radius of variant hf (unused otherwise)."""
    local_steps: PositiveInt = 10
    """S: local steps per task (each draws D, D' and, unless fo, D'')."""
    batch_size: PositiveInt | None = 32
    """B: samples in each of D, D', D''; null = the client's full training set for each."""


class PFedMeConfig(AlgorithmBase):
    """pFedMe (Dinh, Tran, Nguyen 2020), Moreau envelope. Per local round:
    theta ~ argmin f(theta; D) + lam/2 ||theta - w||^2 by ``inner_steps`` (K) steps of
    ``personal_lr``; then w <- w - eta lam (w - theta). ``weight_decay`` adds wd/2 ||theta||^2 to
    the inner objective (the reference code uses 0.001; default 0). The sync server's mixing
    x <- (1 - beta) x + beta mean(client models) takes beta = server.lr."""

    name: Literal["pfedme"] = "pfedme"
    lam: PositiveFloat = 15.0
    """lambda: Moreau regularization (1 / loss units of ||w||^2)."""
    inner_steps: PositiveInt = 5
    """K: inner steps toward theta per local round."""
    personal_lr: PositiveFloat = 0.01
    """Inner step size of the theta problem."""
    eta: PositiveFloat = 0.01
    """eta: local step on w."""
    local_rounds: PositiveInt = 10
    """R: local rounds per task."""
    batch_size: PositiveInt | None = 32
    """B: samples per local round's minibatch (reused by its K inner steps); null = full set."""
    weight_decay: NonNegFloat = 0.0
    """mu: wd/2 ||theta||^2 added to the inner objective."""


ALGORITHM_UNION = ComponentUnion(ALGORITHM_CONFIGS, "name")
ALGORITHM_UNION.register(FedAvgConfig, FedAsyncConfig, FedBuffConfig, LocalConfig, PerFedAvgConfig, PFedMeConfig)

if TYPE_CHECKING:
    AlgorithmConfig = FedAvgConfig | FedAsyncConfig | FedBuffConfig | LocalConfig | PerFedAvgConfig | PFedMeConfig
else:
    AlgorithmConfig = Annotated[AlgorithmBase, ALGORITHM_UNION]


# ------------------------------------------------------------------------------------------------
# Server
# ------------------------------------------------------------------------------------------------


class ConstantWeight(Strict):
    """s(tau) = 1."""

    name: Literal["constant"] = "constant"


class PolynomialWeight(Strict):
    """FedAsync: s(tau) = (tau + 1)^(-a)."""

    name: Literal["polynomial"] = "polynomial"
    a: NonNegFloat = 0.5


class HingeWeight(Strict):
    """FedAsync: s(tau) = 1 if tau <= b else 1 / (a (tau - b) + 1)."""

    name: Literal["hinge"] = "hinge"
    a: NonNegFloat = 10.0
    b: NonNegInt = 4


class ExponentialWeight(Strict):
    """s(tau) = exp(-a tau)."""

    name: Literal["exponential"] = "exponential"
    a: NonNegFloat = 0.5


StalenessWeight = Annotated[
    ConstantWeight | PolynomialWeight | HingeWeight | ExponentialWeight, Field(discriminator="name")
]


class ServerConfig(Strict):
    """How the server takes updates.

    ``mode``: ``sync`` (rounds of ``clients_per_round`` clients; a round ends when all of them
    report or at ``round_deadline`` seconds), ``async`` (a step per arrival) or ``buffered``
    (a step per ``buffer_size`` arrivals). ``concurrency``: clients in flight at once (async,
    buffered). ``max_staleness`` (tau): null = unbounded. ``staleness_policy``: ``drop`` discards
    an update staler than tau; ``wait`` holds the server at version v + tau until every client that
    pulled v has reported. ``lr``: the server step (FedAsync's a, FedBuff's eta_g, pFedMe's beta).
    ``aggregation``: how a step's m updates share it (asyncfl.algorithms.server): ``samples``
    by training-set size (FedAvg), ``uniform`` equally (FedBuff's 1/K); ``auto`` (default) is
    ``samples`` for sync and ``uniform`` for async and buffered. A step is made for K updates (the
    round's arrivals, ``buffer_size``, or 1 for async); one holding m != K updates (policy
    ``wait``) gives them m/K of a step in total, so each update keeps its own weight."""

    mode: Literal["sync", "async", "buffered"] = "async"
    concurrency: PositiveInt = 10
    buffer_size: PositiveInt = 1
    clients_per_round: PositiveInt = 10
    round_deadline: PositiveFloat | None = None
    max_staleness: NonNegInt | None = None
    staleness_policy: Literal["drop", "wait"] = "drop"
    staleness_weight: StalenessWeight = Field(default_factory=ConstantWeight)
    lr: PositiveFloat = 1.0
    aggregation: Literal["auto", "samples", "uniform"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _weight_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("staleness_weight"), str):
            data = {**data, "staleness_weight": {"name": data["staleness_weight"]}}
        return data

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


class DirichletPartition(Strict):
    """Per client, label proportions ~ Dirichlet(alpha); small alpha = few labels per client."""

    name: Literal["dirichlet"] = "dirichlet"
    alpha: PositiveFloat = 0.5


class ClassesPerClientPartition(Strict):
    """Each client holds exactly ``k`` labels (the label skew of Per-FedAvg and pFedMe).

    ``assignment``: ``blocks`` deals labels in consecutive blocks of k (client i: labels i k ..
    i k + k - 1 of a seeded permutation, mod K: with k = 2 and 10 labels, 5 disjoint pairs);
    ``sliding`` gives client i labels i .. i + k - 1 (overlapping windows, as in FedProx's and
    pFedMe's MNIST generators, label (user + j) mod 10)."""

    name: Literal["classes_per_client"] = "classes_per_client"
    k: PositiveInt = 2
    assignment: Literal["blocks", "sliding"] = "blocks"


class ShardsPartition(Strict):
    """McMahan et al.: sort by label, cut into shards, deal ``shards_per_client`` to each client."""

    name: Literal["shards"] = "shards"
    shards_per_client: PositiveInt = 2


class NaturalPartition(Strict):
    """The data set's own users (LEAF; synthetic and quadratic are generated per client)."""

    name: Literal["natural"] = "natural"


Partition = Annotated[
    IidPartition | DirichletPartition | ClassesPerClientPartition | ShardsPartition | NaturalPartition,
    Field(discriminator="name"),
]


class QuantitySkew(Strict):
    """Client sizes: ``none`` (equal), ``lognormal`` (sigma of log size) or ``power_law``
    (exponent). Combines with label partitions."""

    name: Literal["none", "lognormal", "power_law"] = "none"
    sigma: PositiveFloat = 1.0
    exponent: PositiveFloat = 1.5


class DataCommon(Strict):
    """Keys every data set takes. ``test_fraction``: share of each client's samples held out as
    its own test set (same label distribution). ``min_samples``: fewest samples a client may
    hold. (To couple system and data heterogeneity, see ``system.speed_by_label``.)"""

    partition: Partition = Field(default_factory=IidPartition)
    quantity_skew: QuantitySkew = Field(default_factory=QuantitySkew)
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    min_samples: PositiveInt = 4

    @model_validator(mode="before")
    @classmethod
    def _partition_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("partition", "quantity_skew"):
                if isinstance(data.get(key), str):
                    data = {**data, key: {"name": data[key]}}
        return data


class SyntheticData(DataCommon):
    """Synthetic(alpha, beta) of FedProx / pFedMe: alpha and beta are standard deviations of the
    per-client model and feature means; ``iid`` draws one shared model; client sizes lognormal."""

    dataset: Literal["synthetic"] = "synthetic"
    partition: Partition = Field(default_factory=NaturalPartition)
    alpha: NonNegFloat = 0.5
    beta: NonNegFloat = 0.5
    dimension: PositiveInt = 60
    classes: Annotated[StrictInt, Field(ge=2)] = 10
    iid: bool = False
    mean_samples: PositiveFloat = 100.0
    sigma_samples: NonNegFloat = 1.0


class QuadraticData(DataCommon):
    """f_i(w) = 1/2 (w - c_i)^T A_i (w - c_i), A_i with eigenvalues in [mu, L]; ``dimension``
    d samples per client realise A_i exactly (see asyncfl.data.quadratic)."""

    dataset: Literal["quadratic"] = "quadratic"
    partition: Partition = Field(default_factory=NaturalPartition)
    dimension: PositiveInt = 5
    mu: PositiveFloat = 1.0
    L: PositiveFloat = 4.0
    spread: NonNegFloat = 1.0


class TorchvisionData(DataCommon):
    """mnist, fashion_mnist, emnist (``split``), cifar10 through torchvision; ``root`` relative to
    the scenario file; ``download`` fetches missing files."""

    dataset: Literal["mnist", "fashion_mnist", "emnist", "cifar10"] = "mnist"
    root: str = "data"
    download: bool = False
    split: Literal["byclass", "bymerge", "balanced", "letters", "digits", "mnist"] = "balanced"
    max_samples: PositiveInt | None = None


class LeafData(DataCommon):
    """LEAF JSON (``root``/train/*.json, ``root``/test/*.json) with its natural users.

    sent140 only: ``max_words`` (tokens per tweet, LEAF's 25) and ``vocab_size`` (most frequent
    training tokens given their own id; ids 0 and 1 are padding and unknown). celeba only:
    ``images`` (folder of CelebA's aligned JPEGs; default ``root``/raw/img_align_celeba, LEAF's
    layout; relative paths resolve like ``root``) and ``image_size`` (side in pixels the images are
    resized to, LEAF's 84). Other tasks ignore these keys. See :mod:`asyncfl.data.leaf`."""

    dataset: Literal["leaf"] = "leaf"
    partition: Partition = Field(default_factory=NaturalPartition)
    root: str = "data/leaf"
    task: Literal["femnist", "shakespeare", "sent140", "celeba"] = "femnist"
    download: bool = False
    max_words: PositiveInt = 25
    vocab_size: PositiveInt = 10000
    images: str | None = None
    image_size: PositiveInt = 84


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


class MLPModel(ModelBase):
    """Fully connected network; default 784-80-60-10 with ELU (Per-FedAvg)."""

    name: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = [80, 60]
    activation: Literal["elu", "relu", "tanh", "sigmoid"] = "elu"


class DNNModel(ModelBase):
    """pFedMe's networks: one hidden layer (100 for MNIST, 20 for Synthetic) with ReLU."""

    name: Literal["dnn"] = "dnn"
    hidden: PositiveInt | None = None


class CNNModel(ModelBase):
    """LeNet-style two-convolution network (no batch norm)."""

    name: Literal["cnn"] = "cnn"
    channels: list[PositiveInt] = [32, 64]
    hidden: PositiveInt = 512


class CharLSTMModel(ModelBase):
    """Embedding -> LSTM -> linear on the last step: next character for Shakespeare, sentiment
    of word-id sequences for LEAF sent140 (the embedding's rows come from the data).

    ``embedding``, ``hidden`` (LSTM width) and ``layers``: LEAF's Shakespeare 8, 256, 2 (the
    defaults); LEAF's sent140 uses a learned embedding of width n_hidden = 100, 2 x LSTM 100.
    ``dense``: width of a linear layer (no activation) between the last LSTM step and the output;
    0 (default) reads the output straight from the LSTM, as LEAF's Shakespeare model. LEAF's
    sent140 model has one of 128 units with no activation (``fc1``), so use 128 there."""

    name: Literal["char_lstm"] = "char_lstm"
    embedding: PositiveInt = 8
    hidden: PositiveInt = 256
    layers: PositiveInt = 2
    dense: NonNegInt = 0


class QuadraticModel(ModelBase):
    """The parameter vector w of the quadratic test problem (squared loss of a linear map)."""

    name: Literal["quadratic"] = "quadratic"


MODEL_UNION = ComponentUnion(MODEL_CONFIGS, "name")
MODEL_UNION.register(LogRegModel, MLPModel, DNNModel, CNNModel, CharLSTMModel, QuadraticModel)

if TYPE_CHECKING:
    ModelConfig = LogRegModel | MLPModel | DNNModel | CNNModel | CharLSTMModel | QuadraticModel
else:
    ModelConfig = Annotated[ModelBase, MODEL_UNION]


class ClientsConfig(Strict):
    """``count``: number of clients (LEAF: at most the number of users)."""

    count: PositiveInt = 100


# ------------------------------------------------------------------------------------------------
# System model
# ------------------------------------------------------------------------------------------------

class ComputeConfig(Strict):
    """``speed``: persistent per-client speed, samples per second. ``jitter``: per-task
    multiplicative factor on compute time (mean 1 is natural)."""

    speed: Distribution = Field(default_factory=lambda: LognormalDist(mean=1000.0, sigma=0.5))
    jitter: Distribution = Field(default_factory=lambda: ConstantDist(value=1.0))

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: _number_is_constant(v) for k, v in data.items()}
        return data


class NetworkConfig(Strict):
    """Per client, persistent: ``latency`` seconds per transfer and bandwidths in bytes per second;
    a transfer of B bytes takes latency + B / bandwidth, times the per-task ``jitter``."""

    latency: Distribution = Field(default_factory=lambda: ConstantDist(value=0.05))
    download_bandwidth: Distribution = Field(default_factory=lambda: LognormalDist(mean=2.0e6, sigma=0.5))
    upload_bandwidth: Distribution = Field(default_factory=lambda: LognormalDist(mean=1.0e6, sigma=0.5))
    jitter: Distribution = Field(default_factory=lambda: ConstantDist(value=1.0))

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: _number_is_constant(v) for k, v in data.items()}
        return data


class AlwaysOn(Strict):
    """Every client is always available."""

    model: Literal["always"] = "always"


class OnOff(Strict):
    """Alternating on/off periods with exponential durations (seconds); a task running when its
    client goes off is lost (status dropped_offline). ``start_on``: probability a client starts on."""

    model: Literal["on_off"] = "on_off"
    mean_on: PositiveFloat = 600.0
    mean_off: PositiveFloat = 300.0
    start_on: Probability = 1.0


Availability = Annotated[AlwaysOn | OnOff, Field(discriminator="model")]


class SystemConfig(Strict):
    """Compute, network, availability and dropouts. ``profile``: CSV with one row per client
    (columns client, speed, download_bandwidth, upload_bandwidth, latency) replacing the
    persistent distributions; path relative to the scenario file. ``delay_scale`` multiplies every
    task duration: download, compute, upload (for convergence-versus-delay sweeps; availability's
    on/off periods are the users' own schedule and are not scaled). ``speed_by_label``: with > 0, a client's speed
    is multiplied by (1 + speed_by_label * (mean label / (classes - 1) - 1/2)) -- slow clients then
    hold the low labels (couples system and data heterogeneity)."""

    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    availability: Availability = Field(default_factory=AlwaysOn)
    dropout: Probability = 0.0
    profile: str | None = None
    delay_scale: PositiveFloat = 1.0
    speed_by_label: Annotated[float, Field(ge=0.0, le=1.9)] = 0.0


# ------------------------------------------------------------------------------------------------
# Stopping, evaluation, execution, sweeps
# ------------------------------------------------------------------------------------------------


class StopConfig(Strict):
    """Stop at whichever comes first; at least one must be set."""

    sim_time: PositiveFloat | None = None
    server_steps: PositiveInt | None = None
    client_updates: PositiveInt | None = None

    @model_validator(mode="after")
    def _one(self) -> StopConfig:
        if self.sim_time is None and self.server_steps is None and self.client_updates is None:
            raise ValueError("set at least one of stop.sim_time, stop.server_steps, stop.client_updates")
        return self


class EvalConfig(Strict):
    """Evaluate every ``every_steps`` server steps and/or every ``every_time`` simulated seconds,
    plus at the start and end. ``clients``: a seeded sample of clients to personalise and score
    (null = all). ``adapt_steps``: SGD steps of step alpha (MAML family) or the baselines' lr for
    personalised scores of non-Moreau algorithms. ``grad_norm``: compute grad_norm_sq (exact
    autograd on full training data)."""

    every_steps: PositiveInt | None = 10
    every_time: PositiveFloat | None = None
    clients: PositiveInt | None = None
    adapt_steps: NonNegInt = 1
    grad_norm: bool = True


class ExecutionConfig(Strict):
    """How client updates are computed; never changes results beyond float rounding.
    ``batching``: ``auto`` batches pending jobs with vmap in chunks, ``none`` computes one client at
    a time. ``max_batch``: jobs per vmapped chunk (null: chosen from memory). ``device``: where data
    and models live. ``threads``: torch intra-op threads on the CPU (null: torch's default, one per
    core). Small models run fastest on 1, and several processes sharing cores must not each take
    them all (two spinning threads per process made tiny ops ~100x slower on a loaded 2-core box);
    the count can change float reduction order, so it is part of the scenario."""

    batching: Literal["auto", "none"] = "auto"
    max_batch: PositiveInt | None = None
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    threads: PositiveInt | None = None


class SweepConfig(Strict):
    """A sweep declared in the scenario: ``grid`` maps dotted keys to value lists; ``seeds``
    repeats each point with seeds seed, seed+1, ..."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: PositiveInt = 1


class Scenario(Strict):
    """One simulation, fully resolved. ``name`` is a label; it names the default run directory
    runs/<name>-seed<seed>, so it holds no path separator or control character."""

    seed: StrictInt = 0
    name: Annotated[str, Field(pattern=r"^[^\x00-\x1f/\\]{1,200}$")] = "scenario"
    algorithm: AlgorithmConfig = Field(default_factory=FedAsyncConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    data: DataConfig = Field(default_factory=SyntheticData)
    model: ModelConfig = Field(default_factory=LogRegModel)
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    system: SystemConfig = Field(default_factory=SystemConfig)
    stop: StopConfig = Field(default_factory=lambda: StopConfig(server_steps=100))
    eval: EvalConfig = Field(default_factory=EvalConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    sweep: SweepConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _model_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = {**data, "model": {"name": data["model"]}}
        return data

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
        return self


def _rebuild_unions() -> None:
    """After a registration: rebuild every model whose validator holds a ComponentUnion, inner
    models first (a model embeds its fields' validators as they were when it was built)."""
    _TAGS.clear()
    for cls in (ComputeConfig, NetworkConfig, SystemConfig, ServerConfig, Scenario):
        cls.model_rebuild(force=True)


for _registry in (ALGORITHM_CONFIGS, DATA_CONFIGS, MODEL_CONFIGS, DIST_CONFIGS):
    _registry.on_change(_rebuild_unions)


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
    "AlgorithmBase",
    "ComponentUnion",
    "DataCommon",
    "DistBase",
    "ModelBase",
    "Scenario",
    "Strict",
    "tag_keys",
    "tag_paths",
    "tag_values",
    "union_of",
]
