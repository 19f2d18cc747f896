"""Partitions of a pooled data set over clients: pure numpy, seeded, every sample used at most once.

A partition maps the pool's labels (int array, one per sample) to one index array per client.
Properties every partition here keeps (tested):

- disjoint: no sample index appears in two clients;
- coverage: every sample is used exactly once, except where a rule below says otherwise
  (``classes_per_client`` drops the labels that no client holds, which happens only when
  ``clients * k < classes``);
- deterministic: the same ``rng`` state gives the same split;
- each client gets at least ``min_samples`` samples, or a one-line :class:`ScenarioError` says why
  that is impossible and which key to change.

Client sizes (:func:`client_sizes`) come from :class:`~asyncfl.config.schema.QuantitySkew`:
``none`` (equal sizes, the first ``n % C`` clients one larger), ``lognormal`` (weights
exp(N(0, sigma^2))) or ``power_law`` (weights ~ Pareto with tail index ``exponent`` and minimum 1).
Each client gets ``min_samples`` plus its weight's share of the rest (largest-remainder rounding),
so sizes sum to the pool size exactly.

Names follow the literature: ``iid``; ``dirichlet`` (per client, label proportions
q_i ~ Dir(alpha 1); Hsu, Qi, Brown 2019); ``classes_per_client`` (k labels per client; k = 2 is
pFedMe's MNIST split, Dinh et al. 2020; Per-FedAvg, Fallah et al. 2020, uses its own split of 50
users by class halves, which this partition does not make); ``shards`` (McMahan et al.
2017: sort by label, cut ``clients * shards_per_client`` shards, deal them out).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from asyncfl.config.schema import (
    ClassesPerClientPartition,
    DirichletPartition,
    Partition,
    QuantitySkew,
    ShardsPartition,
)
from asyncfl.errors import ScenarioError
from asyncfl.registry import Registry

IntArray = npt.NDArray[np.int64]
PartitionFn = Callable[[IntArray, int, Partition, QuantitySkew, int, np.random.Generator], list[IntArray]]
"""fn(labels [N], num_clients, spec, skew, min_samples, rng) -> per-client pool indices."""

PARTITIONS: Registry[PartitionFn] = Registry("partition", "data.partition")


# ------------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------------


def apportion(total: int, weights: npt.ArrayLike, rng: np.random.Generator | None = None) -> IntArray:
    """Split the integer ``total`` in proportion to ``weights`` (largest-remainder rounding).

    The result sums to ``total`` exactly; ties in the remainders are broken by ``rng`` if given,
    else by position."""
    w = np.asarray(weights, dtype=np.float64)
    if total < 0:
        raise ValueError("total must be >= 0")
    if w.size == 0:
        if total:
            raise ValueError("cannot apportion a positive total over no weights")
        return np.zeros(0, dtype=np.int64)
    s = w.sum()
    share = np.full(w.shape, total / w.size) if s <= 0 else total * w / s
    base = np.floor(share).astype(np.int64)
    rest = int(total - base.sum())
    if rest > 0:
        frac = share - base
        tie = rng.random(w.size) if rng is not None else -np.arange(w.size, dtype=np.float64)
        order = np.lexsort((-tie, -frac))  # largest fraction first, then tie-break
        base[order[:rest]] += 1
    return base


def size_weights(num_clients: int, skew: QuantitySkew, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Relative client sizes for ``skew``: ones, exp(N(0, sigma^2)) or Pareto(exponent) + 1."""
    if skew.name == "none":
        return np.ones(num_clients)
    if skew.name == "lognormal":
        return rng.lognormal(0.0, skew.sigma, num_clients)
    return rng.pareto(skew.exponent, num_clients) + 1.0


def client_sizes(
    n_total: int, num_clients: int, skew: QuantitySkew, min_samples: int, rng: np.random.Generator
) -> IntArray:
    """Samples per client, summing to ``n_total``, each at least ``min_samples``."""
    if num_clients < 1:
        raise ScenarioError("clients.count", "need at least one client")
    if n_total < num_clients * min_samples:
        raise ScenarioError(
            "data.min_samples",
            f"{n_total} samples cannot give {num_clients} clients {min_samples} samples each; "
            "lower clients.count or data.min_samples (or raise data.max_samples)",
        )
    free = n_total - num_clients * min_samples
    if skew.name == "none":
        extra = np.full(num_clients, free // num_clients, dtype=np.int64)
        extra[: free % num_clients] += 1
    else:
        extra = apportion(free, size_weights(num_clients, skew, rng), rng)
    return extra + min_samples


def check_min_samples(parts: list[IntArray], min_samples: int, hint: str) -> None:
    """One-line ScenarioError if a client holds fewer than ``min_samples`` samples."""
    sizes = np.array([len(p) for p in parts])
    bad = np.flatnonzero(sizes < min_samples)
    if bad.size:
        i = int(bad[0])
        raise ScenarioError(
            "data.min_samples",
            f"client {i} gets {int(sizes[i])} samples (< {min_samples}; {bad.size} clients short); {hint}",
        )


def _num_classes(labels: IntArray) -> int:
    return int(labels.max()) + 1 if labels.size else 0


# ------------------------------------------------------------------------------------------------
# Partitions
# ------------------------------------------------------------------------------------------------


def partition_iid(
    labels: IntArray,
    num_clients: int,
    spec: Partition,
    skew: QuantitySkew,
    min_samples: int,
    rng: np.random.Generator,
) -> list[IntArray]:
    """Shuffle the pool and deal consecutive runs of the client sizes (every sample used)."""
    sizes = client_sizes(len(labels), num_clients, skew, min_samples, rng)
    perm = rng.permutation(len(labels)).astype(np.int64)
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(p) for p in np.split(perm, cuts)]


def partition_dirichlet(
    labels: IntArray,
    num_clients: int,
    spec: Partition,
    skew: QuantitySkew,
    min_samples: int,
    rng: np.random.Generator,
) -> list[IntArray]:
    """Per client, label proportions q_i ~ Dirichlet(alpha 1_K) (Hsu, Qi, Brown 2019).

    Client sizes n_i come from :func:`client_sizes`. Clients are filled in a random order: client i
    draws its n_i labels from q_i restricted to the labels still in stock (renormalised; if none of
    its labels is left, from the stock's own proportions), so every sample is used exactly once
    and sizes are exact. Small alpha gives few labels per client, large alpha approaches iid.
    Because sizes are fixed and every sample is used, clients filled late may receive a few
    samples of labels outside their preference (the stock left over); the dominant labels still
    follow q_i (tested: median top-label share > 0.6 at alpha = 0.05)."""
    assert isinstance(spec, DirichletPartition)
    k = _num_classes(labels)
    sizes = client_sizes(len(labels), num_clients, skew, min_samples, rng)
    q = rng.dirichlet(np.full(k, spec.alpha), size=num_clients)
    # A pool of each label, shuffled; ``taken[c]`` counts what clients consumed so far.
    by_label = [rng.permutation(np.flatnonzero(labels == c)).astype(np.int64) for c in range(k)]
    stock = np.array([len(b) for b in by_label], dtype=np.int64)
    taken = np.zeros(k, dtype=np.int64)
    parts: list[IntArray] = [np.zeros(0, dtype=np.int64)] * num_clients
    for i in rng.permutation(num_clients):
        need = int(sizes[i])
        got = np.zeros(k, dtype=np.int64)
        while need > 0:
            left = stock - taken - got
            p = q[i] * (left > 0)
            if p.sum() <= 1e-12:
                p = left.astype(np.float64)
            draw = np.minimum(rng.multinomial(need, p / p.sum()), left)
            got += draw
            need -= int(draw.sum())
        chunks = [by_label[c][taken[c] : taken[c] + got[c]] for c in range(k) if got[c]]
        taken += got
        parts[int(i)] = np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, dtype=np.int64)
    return parts


def partition_classes_per_client(
    labels: IntArray,
    num_clients: int,
    spec: Partition,
    skew: QuantitySkew,
    min_samples: int,
    rng: np.random.Generator,
) -> list[IntArray]:
    """Each client holds exactly ``k`` distinct labels.

    Labels are dealt cyclically over a seeded permutation pi of the K labels present in the pool
    (labels with no sample are skipped): client i holds pi[(s_i + j) mod K], j < k, with
    s_i = i k (``assignment: blocks``: disjoint blocks when K is a multiple of k) or s_i = i
    (``sliding``: overlapping windows, FedProx's and pFedMe's (user + j) mod 10), so each label has
    about C k / K holders. A label's samples are split
    among its holders in proportion to their quantity-skew weights (equal by default), each holder
    getting at least one. Labels no client holds (only if C k < K) are left out."""
    assert isinstance(spec, ClassesPerClientPartition)
    present = np.unique(labels)
    k_labels = len(present)
    k = spec.k
    if k > k_labels:
        raise ScenarioError("data.partition.k", f"k = {k} exceeds the {k_labels} labels present in the data")
    pi = rng.permutation(present)
    stride = k if spec.assignment == "blocks" else 1
    held = pi[(np.arange(num_clients)[:, None] * stride + np.arange(k)[None, :]) % k_labels]  # [C, k]
    weights = size_weights(num_clients, skew, rng)
    chunks: list[list[IntArray]] = [[] for _ in range(num_clients)]
    for c in present:
        holders = np.flatnonzero((held == c).any(axis=1))
        if holders.size == 0:
            continue
        idx = rng.permutation(np.flatnonzero(labels == c)).astype(np.int64)
        if idx.size < holders.size:
            raise ScenarioError(
                "data.partition.k",
                f"label {c} has {idx.size} samples for {holders.size} clients holding it; lower clients.count or k",
            )
        counts = 1 + apportion(idx.size - holders.size, weights[holders], rng)
        for h, part in zip(holders, np.split(idx, np.cumsum(counts)[:-1]), strict=True):
            chunks[int(h)].append(part)
    parts = [np.sort(np.concatenate(ch)) for ch in chunks]
    check_min_samples(parts, min_samples, "lower clients.count or data.min_samples")
    return parts


def partition_shards(
    labels: IntArray,
    num_clients: int,
    spec: Partition,
    skew: QuantitySkew,
    min_samples: int,
    rng: np.random.Generator,
) -> list[IntArray]:
    """McMahan et al. 2017: sort by label (random order within a label), cut into
    ``C * shards_per_client`` shards of equal size (the first ``N mod shards`` one longer),
    deal a random ``shards_per_client`` to each client. Every sample is used."""
    assert isinstance(spec, ShardsPartition)
    if skew.name != "none":
        raise ScenarioError("data.quantity_skew", "shards deals equal shards; use quantity_skew none")
    n_shards = num_clients * spec.shards_per_client
    if n_shards > len(labels):
        raise ScenarioError(
            "data.partition.shards_per_client",
            f"{n_shards} shards exceed the {len(labels)} samples; lower clients.count or shards_per_client",
        )
    perm = rng.permutation(len(labels))
    ordered = perm[np.argsort(labels[perm], kind="stable")].astype(np.int64)
    shards = np.array_split(ordered, n_shards)
    deal = rng.permutation(n_shards).reshape(num_clients, spec.shards_per_client)
    parts = [np.sort(np.concatenate([shards[s] for s in row])) for row in deal]
    check_min_samples(parts, min_samples, "lower clients.count or data.min_samples")
    return parts


def partition_natural(
    labels: IntArray,
    num_clients: int,
    spec: Partition,
    skew: QuantitySkew,
    min_samples: int,
    rng: np.random.Generator,
) -> list[IntArray]:
    """A pooled data set has no users of its own; ``natural`` belongs to leaf, synthetic, quadratic."""
    raise ScenarioError(
        "data.partition",
        "natural needs a data set with its own users (leaf, synthetic, quadratic); "
        "use iid, dirichlet, classes_per_client or shards",
    )


PARTITIONS.add("iid", partition_iid)
PARTITIONS.add("dirichlet", partition_dirichlet)
PARTITIONS.add("classes_per_client", partition_classes_per_client)
PARTITIONS.add("shards", partition_shards)
PARTITIONS.add("natural", partition_natural)


def partition(
    labels: npt.ArrayLike,
    num_clients: int,
    spec: Partition,
    skew: QuantitySkew,
    min_samples: int,
    rng: np.random.Generator,
) -> list[IntArray]:
    """Split pool indices 0..N-1 over ``num_clients`` clients by ``spec`` (see module docstring).

    ``labels``: int label of each pool sample (N,). Returns one sorted int64 index array per
    client."""
    lab = np.asarray(labels, dtype=np.int64)
    if num_clients < 1:
        raise ScenarioError("clients.count", "need at least one client")
    return PARTITIONS.get(spec.name)(lab, num_clients, spec, skew, min_samples, rng)


# ------------------------------------------------------------------------------------------------
# Per-client train/test split
# ------------------------------------------------------------------------------------------------


def holdout_count(n: int, test_fraction: float) -> int:
    """Test samples of a client holding ``n``: round(test_fraction n), clipped to [1, n - 1]."""
    return int(min(max(round(test_fraction * n), 1), n - 1))


def stratified_split(
    indices: IntArray, labels: IntArray, test_fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Split one client's ``indices`` into (train, test) with the same label proportions.

    The test set has T = :func:`holdout_count` samples; label c with n_c samples gives
    floor(T n_c / n) of them, the rest go by largest remainder. A label keeps at least one
    training sample whenever possible, so a client's test labels are among its training labels.
    Needs n >= 2."""
    n = len(indices)
    if n < 2:
        raise ScenarioError("data.min_samples", "every client needs at least 2 samples (one to train, one to test)")
    t_total = holdout_count(n, test_fraction)
    lab = labels[indices]
    classes, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    share = t_total * counts / n
    t = np.floor(share).astype(np.int64)  # <= counts - 1 since t_total <= n - 1
    rest = t_total - int(t.sum())
    frac = share - t
    for cap in (counts - 1, counts):  # first keep one training sample per label, then relax
        if rest <= 0:
            break
        room = cap - t
        order = np.lexsort((rng.random(len(classes)), -frac))
        for c in order:
            if rest <= 0:
                break
            if room[c] > 0:
                t[c] += 1
                room[c] -= 1
                rest -= 1
    perm = rng.permutation(n)
    # rank of each (shuffled) sample within its label: test = the first t_c of each label
    inv = inverse[perm]
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[inv[order]]
    is_test = rank < t[inv]
    shuffled = indices[perm]
    return np.sort(shuffled[~is_test]), np.sort(shuffled[is_test])


__all__ = [
    "PARTITIONS",
    "PartitionFn",
    "apportion",
    "check_min_samples",
    "client_sizes",
    "holdout_count",
    "partition",
    "partition_classes_per_client",
    "partition_dirichlet",
    "partition_iid",
    "partition_natural",
    "partition_shards",
    "size_weights",
    "stratified_split",
]
