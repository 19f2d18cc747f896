"""Personalized evaluation and the convergence measure, batched over clients with torch.func.vmap.

At an evaluation every scored client i personalizes the server model w on its TRAINING data with
the rule's family (PersA-FL, Toghani, Lee, Uribe 2022, Sec. 5; Per-FedAvg, Fallah et al. 2020;
pFedMe, Dinh et al. 2020):

- maml (Per-FedAvg): ``adapt_steps`` full-batch gradient steps of step ``adapt_lr`` (default
  alpha, the step F_i(w) = f_i(w - alpha grad f_i(w)) assumes);
- moreau (pFedMe): theta_i(w) = argmin_theta f_i(theta) + lambda/2 ||theta - w||^2, solved accurately
  (``adapt_steps`` and ``adapt_lr`` do not apply);
- none (FedAvg, FedAsync, FedBuff, local): ``adapt_steps`` full-batch gradient steps of step
  ``adapt_lr`` (default the algorithm's client lr), i.e. fine-tuning (Jiang et al. 2019); 0 steps
  scores the raw model,

and is then scored on its own test data. Metrics (fixed names; losses in the model's loss units,
accuracies as fractions in [0, 1]):

- ``personalized_loss``, ``personalized_accuracy``: sum_i n_i^test metric_i / sum_i n_i^test over
  the scored clients (the test-size weighted mean, i.e. pooled over all scored test samples);
- ``personalized_accuracy_p10`` / ``_p50`` / ``_p90``: percentiles (linear interpolation) of the
  per-client accuracies across scored clients holding test data;
- ``majority_accuracy``: the no-collaboration reference: each scored client predicts its majority
  TRAINING label (ties: the smallest label; no training data: label 0) for all its test samples,
  averaged exactly as ``personalized_accuracy`` is (test-size weighted over the scored clients). It
  does not depend on w, so it is the same at every evaluation; a personalized accuracy at or below
  it has learned nothing a client could not get alone by counting its labels;
- ``global_loss``, ``global_accuracy``: the raw server model w on ``data.global_x / global_y``;
- ``grad_norm_sq``: ||grad F(w)||^2, F = (1/n) sum_{i=1}^n F_i the UNIFORM mean over ALL n clients
  (whatever subset is scored), with F_i the family's objective on the client's full training data
  (maml: f_i(w - alpha grad f_i(w)); moreau: the Moreau envelope; none: f_i), by exact autograd.
  It is the papers' objective, not necessarily the one a run minimises: with ``samples``
  aggregation and unequal client sizes a sync run converges to a stationary point of
  sum_i p_i F_i, and ``weight_decay`` / ``prox`` add terms F_i lacks, so it levels off above 0.

Regression models (``task == "regression"``, e.g. the quadratic test problem) report only the
losses and ``grad_norm_sq``. Client data are gathered from the back-to-back layout of
:class:`~asyncfl.data.base.FederatedData` into padded [C, n_max, ...] tensors with a 0/1 weight mask
by one index tensor per chunk, and the per-client functions are vmapped over ``chunk`` clients at a
time (None = all at once); chunking changes nothing but floating-point reduction order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.func import vmap

from asyncfl.algorithms.base import ClientRule
from asyncfl.algorithms.sgd import Local
from asyncfl.data.base import FederatedData
from asyncfl.models.base import FlatModel

METRICS_CLASSIFICATION: tuple[str, ...] = (
    "personalized_accuracy",
    "personalized_loss",
    "personalized_accuracy_p10",
    "personalized_accuracy_p50",
    "personalized_accuracy_p90",
    "majority_accuracy",
    "global_accuracy",
    "global_loss",
    "grad_norm_sq",
)
METRICS_REGRESSION: tuple[str, ...] = ("personalized_loss", "global_loss", "grad_norm_sq")

GLOBAL_CHUNK = 8192
"""Samples of the global test set scored per forward pass (bounds activation memory)."""


def gather_padded(
    x: Tensor, y: Tensor, offsets: Tensor, sizes: Tensor, clients: Tensor, n_max: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Clients' rows of a back-to-back layout as padded tensors, with one gather.

    ``x`` [N_total, *features], ``y`` [N_total]; client c owns rows offsets[c] : offsets[c] + sizes[c].
    Returns x [C, n_max, *features], y [C, n_max] and weights m [C, n_max] in ``dtype`` (1 = a real
    sample, 0 = padding; padded rows repeat a valid row so every value stays finite)."""
    dev = x.device
    clients = clients.to(dev)
    off = offsets.to(dev)[clients]
    sz = sizes.to(dev)[clients]
    j = torch.arange(n_max, device=dev, dtype=torch.int64)
    valid = j.view(1, -1) < sz.view(-1, 1)
    rows = off.view(-1, 1) + torch.where(valid, j.view(1, -1), torch.zeros_like(j).view(1, -1))
    rows = rows.clamp(0, max(int(x.shape[0]) - 1, 0))
    return x[rows], y[rows], valid.to(dtype)


def _client_index(data: FederatedData, clients: Sequence[int] | None) -> np.ndarray:
    if clients is None:
        return np.arange(data.num_clients, dtype=np.int64)
    idx = np.asarray(list(clients), dtype=np.int64)
    if idx.size == 0:
        raise ValueError("evaluate needs at least one client")
    if idx.min() < 0 or idx.max() >= data.num_clients:
        raise ValueError(f"client ids must lie in [0, {data.num_clients}), got {idx.min()}..{idx.max()}")
    return idx


def _chunks(n: int, chunk: int | None) -> list[slice]:
    step = n if chunk is None else max(1, int(chunk))
    return [slice(s, min(s + step, n)) for s in range(0, n, max(step, 1))]


def _per_client_w(w: Tensor, data: FederatedData) -> bool:
    if w.dim() == 1:
        return False
    if w.dim() == 2 and w.shape[0] == data.num_clients:
        return True
    raise ValueError(f"w must be [P] or [num_clients={data.num_clients}, P], got {tuple(w.shape)}")


def _train_chunk(data: FederatedData, idx: np.ndarray, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    n_max = max(int(data.train_sizes_np[idx].max()), 1)
    t = torch.as_tensor(idx, device=data.train_x.device)
    return gather_padded(data.train_x, data.train_y, data.train_offsets, data.train_sizes, t, n_max, dtype)


def _test_chunk(data: FederatedData, idx: np.ndarray, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    n_max = max(int(data.test_sizes_np[idx].max()), 1)
    t = torch.as_tensor(idx, device=data.test_x.device)
    return gather_padded(data.test_x, data.test_y, data.test_offsets, data.test_sizes, t, n_max, dtype)


def personalized_models(
    model: FlatModel,
    rule: ClientRule,
    data: FederatedData,
    w: Tensor,
    clients: Sequence[int] | None,
    adapt_steps: int,
    chunk: int | None = None,
    adapt_lr: float | None = None,
) -> Tensor:
    """The personalized models [C, P] of ``clients`` (None = all) from server model ``w`` [P] (or
    per-client models [num_clients, P]), each from the client's TRAINING data only; ``adapt_lr`` as
    in :func:`evaluate`."""
    idx = _client_index(data, clients)
    per_client = _per_client_w(w, data)
    loss = model.loss
    personal = personalizing_rule(rule, adapt_lr)

    def one(wc: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        return personal.personalize(loss, wc, x, y, m, adapt_steps)

    fn = vmap(one, in_dims=(0 if per_client else None, 0, 0, 0))
    out = []
    with torch.no_grad():
        for sl in _chunks(len(idx), chunk):
            part = idx[sl]
            wc = w[torch.as_tensor(part, device=w.device)] if per_client else w
            out.append(fn(wc, *_train_chunk(data, part, w.dtype)))
    return torch.cat(out)


def personalizing_rule(rule: ClientRule, adapt_lr: float | None) -> ClientRule:
    """``rule`` with its personalization step set to ``adapt_lr`` (None: unchanged): alpha for the
    maml family, lr for the none family; the moreau family solves theta_i(w) and has no step.
    Only :meth:`ClientRule.personalize` uses the result; grad F_i keeps the rule's own alpha."""
    field = rule.personal_step
    if adapt_lr is None or field is None:
        return rule
    if not adapt_lr > 0 or not np.isfinite(adapt_lr):
        raise ValueError(f"adapt_lr must be a positive finite number, got {adapt_lr}")
    if not hasattr(rule, "model_copy") or not hasattr(rule, field):
        raise ValueError(f"rule {type(rule).__name__} has no {field} to set adapt_lr on")
    return rule.model_copy(update={field: float(adapt_lr)})  # type: ignore[attr-defined, no-any-return]


def majority_accuracy(data: FederatedData, clients: Sequence[int] | None = None) -> float:
    """The ``majority_accuracy`` reference (module docstring) of ``clients`` (None = all): sum over
    scored clients of their test samples carrying their majority training label, divided by their
    test samples (nan when they hold none). Classification data only."""
    if data.task != "classification" or data.num_classes < 1:
        raise ValueError("majority_accuracy needs classification data")
    idx = _client_index(data, clients)
    k = int(data.num_classes)
    n = data.num_clients

    def counts(y: Tensor, sizes: np.ndarray) -> np.ndarray:
        owner = np.repeat(np.arange(n, dtype=np.int64), sizes.astype(np.int64))
        labels = y.detach().cpu().numpy().astype(np.int64)
        return np.bincount(owner * k + labels, minlength=n * k).reshape(n, k)

    train = counts(data.train_y, data.train_sizes_np)[idx]
    test = counts(data.test_y, data.test_sizes_np)[idx]
    major = train.argmax(axis=1)  # first maximum = smallest label; all-zero row -> label 0
    hits = test[np.arange(len(idx)), major].sum()
    total = test.sum()
    return float(hits / total) if total > 0 else float("nan")


def _score(model: FlatModel, classify: bool) -> Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    def score(theta: Tensor, x: Tensor, y: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        loss = model.loss(theta, x, y, m)
        if classify:
            acc = (model.correct(theta, x, y) * m).sum() / m.sum().clamp_min(1e-12)
        else:
            acc = torch.zeros_like(loss)
        return loss, acc

    return score


def _global_metrics(model: FlatModel, data: FederatedData, w: Tensor, classify: bool) -> dict[str, Tensor]:
    n = int(data.global_y.shape[0])
    if n == 0:
        return {}
    loss_sum = torch.zeros((), dtype=torch.float64, device=w.device)
    correct_sum = torch.zeros((), dtype=torch.float64, device=w.device)
    for s in range(0, n, GLOBAL_CHUNK):
        x, y = data.global_x[s : s + GLOBAL_CHUNK], data.global_y[s : s + GLOBAL_CHUNK]
        loss_sum = loss_sum + model.per_sample_loss(w, x, y).double().sum()
        if classify:
            correct_sum = correct_sum + model.correct(w, x, y).double().sum()
    out = {"global_loss": loss_sum / n}
    if classify:
        out["global_accuracy"] = correct_sum / n
    return out


def _grad_norm_sq(
    model: FlatModel, rule: ClientRule, data: FederatedData, w: Tensor, per_client: bool, chunk: int | None
) -> Tensor:
    """||(1/n) sum_i grad F_i(w)||^2 over all n clients; per-client models: (1/n) sum_i ||grad F_i(w_i)||^2."""
    loss = model.loss

    def one(wc: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        return rule.objective_grad(loss, wc, x, y, m)

    fn = vmap(one, in_dims=(0 if per_client else None, 0, 0, 0))
    idx = np.arange(data.num_clients, dtype=np.int64)
    total = torch.zeros(w.shape[-1], dtype=torch.float64, device=w.device)
    sq = torch.zeros((), dtype=torch.float64, device=w.device)
    for sl in _chunks(len(idx), chunk):
        part = idx[sl]
        wc = w[torch.as_tensor(part, device=w.device)] if per_client else w
        g = fn(wc, *_train_chunk(data, part, w.dtype)).double()
        if per_client:
            sq = sq + (g * g).sum()
        else:
            total = total + g.sum(0)
    n = max(data.num_clients, 1)
    if per_client:
        return sq / n
    mean = total / n
    return (mean * mean).sum()


def evaluate(
    model: FlatModel,
    rule: ClientRule,
    data: FederatedData,
    w: Tensor,
    clients: Sequence[int] | None,
    adapt_steps: int,
    grad_norm: bool,
    chunk: int | None,
    adapt_lr: float | None = None,
) -> dict[str, float]:
    """Metrics of server model ``w`` [P] (module docstring): personalized on ``clients`` (None =
    all; each personalizes on its training data and is scored on its test data), global on the
    global test set, and ``grad_norm_sq`` over all clients when ``grad_norm``.

    ``w`` may also be per-client models [num_clients, P] (local training): each client starts from
    its own row, the global metrics score the mean model (1/n) sum_i w_i, and ``grad_norm_sq`` is
    (1/n) sum_i ||grad F_i(w_i)||^2, the stationarity of every client's own problem.
    ``chunk``: clients per vmapped call (None = all). ``adapt_lr``: the step of the personalizing
    gradient steps (None: the rule's own, alpha or lr; see :func:`personalizing_rule`). Returns
    Python floats."""
    if data.num_clients == 0:
        raise ValueError("evaluate needs a data set with at least one client")
    idx = _client_index(data, clients)
    per_client = _per_client_w(w, data)
    classify = model.task == "classification" and data.task == "classification"
    loss = model.loss
    score = _score(model, classify)
    personal = personalizing_rule(rule, adapt_lr)

    # When every client is scored and grad F is wanted, a rule that can return both from one
    # computation (pFedMe: theta_i(w) gives the personal model and lam (w - theta_i(w))) does so.
    both = getattr(rule, "personalize_and_objective_grad", None)
    merged = grad_norm and clients is None and callable(both)

    def one(
        wc: Tensor, xtr: Tensor, ytr: Tensor, mtr: Tensor, xte: Tensor, yte: Tensor, mte: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        if merged:
            theta, g = both(loss, wc, xtr, ytr, mtr, adapt_steps)  # type: ignore[misc]
        else:
            theta = personal.personalize(loss, wc, xtr, ytr, mtr, adapt_steps)
            g = torch.zeros((), dtype=wc.dtype, device=wc.device)
        l_c, a_c = score(theta, xte, yte, mte)
        return l_c, a_c, g

    fn = vmap(one, in_dims=(0 if per_client else None, 0, 0, 0, 0, 0, 0))
    losses, accs = [], []
    g_sum = torch.zeros(w.shape[-1], dtype=torch.float64, device=w.device)
    g_sq = torch.zeros((), dtype=torch.float64, device=w.device)
    with torch.no_grad():
        for sl in _chunks(len(idx), chunk):
            part = idx[sl]
            wc = w[torch.as_tensor(part, device=w.device)] if per_client else w
            l_c, a_c, g_c = fn(wc, *_train_chunk(data, part, w.dtype), *_test_chunk(data, part, w.dtype))
            losses.append(l_c)
            accs.append(a_c)
            if merged:
                g_c = g_c.double()
                g_sum = g_sum + g_c.sum(0)
                g_sq = g_sq + (g_c * g_c).sum()
        w_global = w.mean(0) if per_client else w
        tensors = _global_metrics(model, data, w_global, classify)
        if merged:
            mean = g_sum / data.num_clients
            tensors["grad_norm_sq"] = g_sq / data.num_clients if per_client else (mean * mean).sum()
        elif grad_norm:
            tensors["grad_norm_sq"] = _grad_norm_sq(model, rule, data, w, per_client, chunk)

    # One host transfer for everything the device computed.
    loss_np = torch.cat(losses).double().cpu().numpy()
    acc_np = torch.cat(accs).double().cpu().numpy()
    scalars = {k: float(v) for k, v in tensors.items()}
    n_test = data.test_sizes_np[idx].astype(np.float64)
    denom = n_test.sum()
    out: dict[str, float] = {}
    out["personalized_loss"] = float((n_test * loss_np).sum() / denom) if denom > 0 else float("nan")
    if classify:
        out["personalized_accuracy"] = float((n_test * acc_np).sum() / denom) if denom > 0 else float("nan")
        held = acc_np[n_test > 0]
        for q in (10, 50, 90):
            out[f"personalized_accuracy_p{q}"] = float(np.percentile(held, q)) if held.size else float("nan")
        out["majority_accuracy"] = majority_accuracy(data, clients)
    out.update(scalars)
    return out


_RAW = Local.model_construct(lr=0.0, local_steps=1, batch_size=None)  # lr 0: no scenario takes it
"""A rule whose personalization with 0 steps is the identity and whose objective is f_i."""


def evaluate_client_models(
    model: FlatModel,
    data: FederatedData,
    models: Tensor,
    clients: Sequence[int] | None,
    grad_norm: bool = True,
    chunk: int | None = None,
) -> dict[str, float]:
    """Local training's metrics: each client's own model ``models[i]`` ([num_clients, P]) scored
    as is on its own test data (personalized_*), the mean model on the global set (global_*), and
    ``grad_norm_sq`` = (1/n) sum_i ||grad f_i(w_i)||^2 over all clients."""
    return evaluate(model, _RAW, data, models, clients, 0, grad_norm, chunk)


__all__ = [
    "GLOBAL_CHUNK",
    "METRICS_CLASSIFICATION",
    "METRICS_REGRESSION",
    "evaluate",
    "evaluate_client_models",
    "gather_padded",
    "majority_accuracy",
    "personalized_models",
    "personalizing_rule",
]
