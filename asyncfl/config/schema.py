"""The scenario format: a frozen, strictly validated, fully resolved description of one run.

Every mapping forbids unknown keys, every default is filled in, and cross-field rules are checked
here, so the rest of the code can trust a :class:`Scenario`. Components with their own parameters
(algorithm, data set, partition, model, staleness weight, distributions) are tagged unions: the tag
(``algorithm.name``, ``data.dataset``, ...) selects which keys are allowed.

Units: time in simulated seconds, sizes in bytes, bandwidth in bytes per second, compute speed in
samples per second (one sample = one per-example gradient evaluation).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, StrictInt, model_validator

NonNegFloat = Annotated[float, Field(ge=0.0)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
"""Counts: integers only (a YAML ``true`` or ``3.5`` is an error, not 1 or 3)."""
NonNegInt = Annotated[StrictInt, Field(ge=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Strict(BaseModel):
    """Base of every scenario mapping: unknown keys are errors, instances are immutable, and
    numbers are finite (an infinite step size or time is a typo, not a setting: use null)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


def _shorthand(tag: str) -> Any:
    """Before-validator: a bare string ``x`` means ``{tag: x}`` (e.g. ``partition: iid``)."""

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return {tag: value}
        return value

    return convert


# ------------------------------------------------------------------------------------------------
# Distributions (units are those of the key that holds them)
# ------------------------------------------------------------------------------------------------


class ConstantDist(Strict):
    """Always ``value``. A bare number in a scenario means this."""

    dist: Literal["constant"] = "constant"
    value: NonNegFloat = 1.0


class UniformDist(Strict):
    """Uniform on [low, high]: mean (low+high)/2, variance (high-low)^2/12."""

    dist: Literal["uniform"] = "uniform"
    low: NonNegFloat
    high: NonNegFloat

    @model_validator(mode="after")
    def _order(self) -> UniformDist:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class ExponentialDist(Strict):
    """Exponential with the given ``mean`` (variance mean^2)."""

    dist: Literal["exponential"] = "exponential"
    mean: PositiveFloat


class LognormalDist(Strict):
    """exp(N(mu, sigma^2)) with mu chosen so that the mean is ``mean``:
    mu = ln(mean) - sigma^2/2; variance (exp(sigma^2) - 1) mean^2."""

    dist: Literal["lognormal"] = "lognormal"
    mean: PositiveFloat
    sigma: NonNegFloat = 0.5


class ParetoDist(Strict):
    """Pareto (heavy tail) with minimum ``scale`` (x_m) and tail index ``shape`` (a):
    mean a x_m/(a-1) for a > 1; variance x_m^2 a/((a-1)^2 (a-2)) for a > 2."""

    dist: Literal["pareto"] = "pareto"
    shape: PositiveFloat = 2.5
    scale: PositiveFloat = 1.0


class FromListDist(Strict):
    """Deterministic twin: the i-th draw is ``values[i % len(values)]`` (i = client id for
    per-client quantities, task index for per-task ones)."""

    dist: Literal["from_list"] = "from_list"
    values: Annotated[list[NonNegFloat], Field(min_length=1)]


Distribution = Annotated[
    ConstantDist | UniformDist | ExponentialDist | LognormalDist | ParetoDist | FromListDist,
    Field(discriminator="dist"),
]


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


class SGDHyper(Strict):
    """Local SGD shared by the non-personalized baselines: ``local_steps`` minibatch steps of size
    ``batch_size`` (null: the client's full training set) with step ``lr``. ``weight_decay``: mu,
    adds mu/2 ||w||^2 to the local objective. ``prox``: rho, adds rho/2 ||w - w_0||^2 (w_0 the
    pulled model): FedAsync's regularized local objective g_{x_tau}(x; z) = f(x; z) +
    rho/2 ||x - x_tau||^2 (Xie et al. 2019), FedProx's mu; 0 (default) = plain local SGD."""

    lr: PositiveFloat = 0.05
    local_steps: PositiveInt = 10
    batch_size: PositiveInt | None = 32
    weight_decay: NonNegFloat = 0.0
    prox: NonNegFloat = 0.0


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


class PerFedAvgConfig(Strict):
    """Per-FedAvg (Fallah, Mokhtari, Ozdaglar 2020). Per local step, three minibatches D, D', D'':
    w_tmp = w - alpha grad f(w; D); g = grad f(w_tmp; D');
    fo: w <- w - beta g;  hf/exact: w <- w - beta (g - alpha d), d ~ Hessian f(w; D'') g."""

    name: Literal["per_fedavg"] = "per_fedavg"
    variant: Literal["fo", "hf", "exact"] = "hf"
    alpha: NonNegFloat = 0.01
    beta: PositiveFloat = 0.05
    delta: PositiveFloat = 1e-3
    local_steps: PositiveInt = 10
    batch_size: PositiveInt | None = 32


class PFedMeConfig(Strict):
    """pFedMe (Dinh, Tran, Nguyen 2020), Moreau envelope. Per local round:
    theta ~ argmin f(theta; D) + lam/2 ||theta - w||^2 by ``inner_steps`` (K) steps of
    ``personal_lr``; then w <- w - eta lam (w - theta). ``weight_decay`` adds wd/2 ||theta||^2 to
    the inner objective (the reference code uses 0.001; default 0). The sync server's mixing
    x <- (1 - beta) x + beta mean(client models) takes beta = server.lr."""

    name: Literal["pfedme"] = "pfedme"
    lam: PositiveFloat = 15.0
    inner_steps: PositiveInt = 5
    personal_lr: PositiveFloat = 0.01
    eta: PositiveFloat = 0.01
    local_rounds: PositiveInt = 10
    batch_size: PositiveInt | None = 32
    weight_decay: NonNegFloat = 0.0


AlgorithmConfig = Annotated[
    FedAvgConfig | FedAsyncConfig | FedBuffConfig | LocalConfig | PerFedAvgConfig | PFedMeConfig,
    Field(discriminator="name"),
]


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
    """Each client holds exactly ``k`` labels (k = 2: pFedMe's MNIST split, Dinh et al. 2020;
    Per-FedAvg's paper splits 50 users by class halves instead).

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


DataConfig = Annotated[
    SyntheticData | QuadraticData | TorchvisionData | LeafData, Field(discriminator="dataset")
]


class LogRegModel(Strict):
    """Multinomial logistic regression (one linear layer)."""

    name: Literal["logreg"] = "logreg"


class MLPModel(Strict):
    """Fully connected network; default 784-80-60-10 with ELU (Per-FedAvg)."""

    name: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = [80, 60]
    activation: Literal["elu", "relu", "tanh", "sigmoid"] = "elu"


class DNNModel(Strict):
    """pFedMe's networks: one hidden layer (100 for MNIST, 20 for Synthetic) with ReLU."""

    name: Literal["dnn"] = "dnn"
    hidden: PositiveInt | None = None


class CNNModel(Strict):
    """LeNet-style two-convolution network (no batch norm)."""

    name: Literal["cnn"] = "cnn"
    channels: list[PositiveInt] = [32, 64]
    hidden: PositiveInt = 512


class CharLSTMModel(Strict):
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


class QuadraticModel(Strict):
    """The parameter vector w of the quadratic test problem (squared loss of a linear map)."""

    name: Literal["quadratic"] = "quadratic"


ModelConfig = Annotated[
    LogRegModel | MLPModel | DNNModel | CNNModel | CharLSTMModel | QuadraticModel, Field(discriminator="name")
]


class ClientsConfig(Strict):
    """``count``: number of clients (LEAF: at most the number of users)."""

    count: PositiveInt = 100


# ------------------------------------------------------------------------------------------------
# System model
# ------------------------------------------------------------------------------------------------

DistField = Annotated[Distribution, Field(discriminator="dist")]


class ComputeConfig(Strict):
    """``speed``: persistent per-client speed, samples per second. ``jitter``: per-task
    multiplicative factor on compute time (mean 1 is natural)."""

    speed: DistField = Field(default_factory=lambda: LognormalDist(mean=1000.0, sigma=0.5))
    jitter: DistField = Field(default_factory=lambda: ConstantDist(value=1.0))

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: _number_is_constant(v) for k, v in data.items()}
        return data


class NetworkConfig(Strict):
    """Per client, persistent: ``latency`` seconds per transfer and bandwidths in bytes per second;
    a transfer of B bytes takes latency + B / bandwidth, times the per-task ``jitter``."""

    latency: DistField = Field(default_factory=lambda: ConstantDist(value=0.05))
    download_bandwidth: DistField = Field(default_factory=lambda: LognormalDist(mean=2.0e6, sigma=0.5))
    upload_bandwidth: DistField = Field(default_factory=lambda: LognormalDist(mean=1.0e6, sigma=0.5))
    jitter: DistField = Field(default_factory=lambda: ConstantDist(value=1.0))

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
    (null = all). ``adapt_steps`` gradient steps of step ``adapt_lr`` personalise the server model
    before scoring (MAML family and the non-personalized baselines' fine-tuning; pFedMe solves
    theta_i(w) instead). ``grad_norm``: compute grad_norm_sq (exact autograd on full training
    data)."""

    every_steps: PositiveInt | None = 10
    """Evaluate every this many server steps (null: not by steps)."""
    every_time: PositiveFloat | None = None
    """Evaluate every this many simulated seconds (null: not by time)."""
    clients: PositiveInt | None = None
    """Clients personalised and scored at each evaluation: a seeded sample of this size (null: all)."""
    adapt_steps: NonNegInt = 1
    """Full-batch gradient steps on a client's training data that personalise the model before
    it is scored (0 scores the raw model). Ignored by pFedMe (its theta_i(w) is solved)."""
    adapt_lr: PositiveFloat | None = None
    """Step size of the evaluation's personalising gradient steps (Per-FedAvg's alpha, the
    fine-tuning step of FedAvg/FedAsync/FedBuff/local). null resolves to the algorithm's own: alpha
    for per_fedavg, the client lr (algorithm.lr) otherwise; it stays null for pfedme, whose
    personal model theta_i(w) has no step. Set one value across algorithms to compare their
    personalized accuracies at the same adaptation step. Only the scoring uses it: grad_norm_sq
    keeps the algorithm's alpha."""
    grad_norm: bool = True
    """Compute grad_norm_sq = ||grad F(w)||^2 of the paper's objective at each evaluation."""


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
        if self.algorithm.name == "local" and s.mode != "async":
            pass  # local ignores the server; any mode runs clients independently
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


__all__ = ["Scenario"]
