"""Assemble a :class:`FederatedData` from a pool of samples and per-client index lists.

Every data set ends here: it produces a pool (features ``x``, labels ``y``) and, per client, the
pool indices of its training and test samples. :func:`pack` gathers them back to back (client 0's
samples, then client 1's, ...) into CPU tensors: float32 features (or int64 character ids), int64
class labels (float32 regression targets). The global test set defaults to the union of the
clients' test sets, held as the same tensor as ``test_x`` (no copy).

:func:`build_pooled` is the pipeline of the pooled data sets (torchvision sets, and synthetic or
LEAF data when a non-natural partition is asked for): optional seeded cap of the pool
(``max_samples``), partition, per-client stratified train/test split, pack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from asyncfl.config.schema import DataCommon
from asyncfl.data.base import FederatedData, layout
from asyncfl.data.partition import IntArray, partition, stratified_split
from asyncfl.errors import ScenarioError
from asyncfl.rng import numpy_generator

Transform = Callable[[np.ndarray], np.ndarray]
"""Raw pool rows (e.g. uint8 images) -> model features (float32), applied after gathering."""


def _concat(parts: Sequence[IntArray]) -> IntArray:
    return np.concatenate(list(parts)).astype(np.int64) if len(parts) else np.zeros(0, dtype=np.int64)


def _features(x: np.ndarray, idx: IntArray, transform: Transform | None) -> torch.Tensor:
    rows = x[idx]
    if transform is not None:
        rows = transform(rows)
    if np.issubdtype(rows.dtype, np.integer):
        return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))


def _targets(y: np.ndarray, idx: IntArray, task: str) -> torch.Tensor:
    if task == "regression":
        return torch.from_numpy(np.ascontiguousarray(y[idx], dtype=np.float32))
    return torch.from_numpy(np.ascontiguousarray(y[idx], dtype=np.int64))


def pack(
    x: np.ndarray,
    y: np.ndarray,
    train_idx: Sequence[IntArray],
    test_idx: Sequence[IntArray],
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    name: str,
    task: Literal["classification", "regression"] = "classification",
    transform: Transform | None = None,
    global_idx: IntArray | None = None,
    extras: dict[str, np.ndarray] | None = None,
) -> FederatedData:
    """Gather the pool rows of each client's train and test indices into one FederatedData.

    ``global_idx`` None: the global test set is the union of the client test sets (the same
    tensor object as ``test_x``). ``extras`` gains ``train_index`` / ``test_index``: the pool
    index of every stored row (for tests and provenance)."""
    if len(train_idx) != len(test_idx):
        raise ValueError("train_idx and test_idx must have one entry per client")
    tr, te = _concat(train_idx), _concat(test_idx)
    more = dict(extras or {})
    more.setdefault("train_index", tr)
    more.setdefault("test_index", te)
    return assemble(
        _features(x, tr, transform),
        _targets(y, tr, task),
        np.array([len(p) for p in train_idx], dtype=np.int64),
        _features(x, te, transform),
        _targets(y, te, task),
        np.array([len(p) for p in test_idx], dtype=np.int64),
        global_xy=None if global_idx is None else (_features(x, global_idx, transform), _targets(y, global_idx, task)),
        num_classes=num_classes,
        input_shape=input_shape,
        name=name,
        task=task,
        extras=more,
    )


def assemble(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    train_sizes: np.ndarray,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    test_sizes: np.ndarray,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    name: str,
    task: Literal["classification", "regression"] = "classification",
    global_xy: tuple[torch.Tensor, torch.Tensor] | None = None,
    extras: dict[str, np.ndarray] | None = None,
) -> FederatedData:
    """A FederatedData from rows already stored client after client (client 0's rows, then
    client 1's, ...), without copying them: for generators that write each client's samples
    straight into place (Synthetic at 100,000 clients). ``global_xy`` None: the global test set is
    the union of the client test sets (the same tensors as ``test_x`` / ``test_y``)."""
    train_off, train_n = layout(train_sizes)
    test_off, test_n = layout(test_sizes)
    global_x, global_y = (test_x, test_y) if global_xy is None else global_xy
    return FederatedData(
        train_x=train_x,
        train_y=train_y,
        train_offsets=train_off,
        train_sizes=train_n,
        test_x=test_x,
        test_y=test_y,
        test_offsets=test_off,
        test_sizes=test_n,
        global_x=global_x,
        global_y=global_y,
        input_shape=tuple(int(s) for s in input_shape),
        num_classes=int(num_classes),
        task=task,
        name=name,
        extras=dict(extras or {}),
    )


def split_clients(
    parts: Sequence[IntArray], labels: npt.ArrayLike, test_fraction: float, seed: int
) -> tuple[list[IntArray], list[IntArray]]:
    """Per client, a stratified train/test split (:func:`stratified_split`) from the client's own
    stream (seed, ``data.split``, client)."""
    lab = np.asarray(labels, dtype=np.int64)
    train: list[IntArray] = []
    test: list[IntArray] = []
    for i, p in enumerate(parts):
        a, b = stratified_split(
            np.asarray(p, dtype=np.int64), lab, test_fraction, numpy_generator(seed, "data.split", i)
        )
        train.append(a)
        test.append(b)
    return train, test


def subsample(n: int, max_samples: int | None, seed: int) -> IntArray:
    """Pool rows kept under ``data.max_samples``: all (in order) or a seeded random subset (sorted)."""
    if max_samples is None or max_samples >= n:
        return np.arange(n, dtype=np.int64)
    keep = numpy_generator(seed, "data.subsample").choice(n, size=max_samples, replace=False)
    return np.sort(keep).astype(np.int64)


def require_no_quantity_skew(cfg: DataCommon, why: str) -> None:
    """Natural client sizes cannot be reshaped: quantity_skew must be ``none``."""
    if cfg.quantity_skew.name != "none":
        raise ScenarioError(
            "data.quantity_skew", f"{why}; use quantity_skew none or a pooled partition (iid, dirichlet)"
        )


def build_pooled(
    x: np.ndarray,
    y: np.ndarray,
    cfg: DataCommon,
    num_clients: int,
    seed: int,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    name: str,
    transform: Transform | None = None,
    max_samples: int | None = None,
    extras: dict[str, np.ndarray] | None = None,
) -> FederatedData:
    """Pool -> (cap) -> partition (cfg.partition, cfg.quantity_skew) -> per-client split -> pack.

    The pool's rows are the samples; ``y`` are int class labels. Streams: ``data.subsample``,
    ``data.partition``, and ``data.split`` per client, all under ``seed``."""
    keep = subsample(len(y), max_samples, seed)
    labels = np.asarray(y, dtype=np.int64)[keep]
    parts = partition(
        labels, num_clients, cfg.partition, cfg.quantity_skew, cfg.min_samples, numpy_generator(seed, "data.partition")
    )
    train, test = split_clients(parts, labels, cfg.test_fraction, seed)
    # indices so far point into the kept pool; map them back to the full pool
    train = [keep[p] for p in train]
    test = [keep[p] for p in test]
    return pack(
        x,
        np.asarray(y, dtype=np.int64),
        train,
        test,
        num_classes=num_classes,
        input_shape=input_shape,
        name=name,
        transform=transform,
        extras=extras,
    )


__all__ = ["Transform", "assemble", "build_pooled", "pack", "require_no_quantity_skew", "split_clients", "subsample"]
