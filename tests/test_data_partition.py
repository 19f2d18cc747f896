"""Partitions: disjointness, coverage, determinism, label skew, quantity skew, min_samples errors,
and the per-client stratified train/test split."""

from __future__ import annotations

import numpy as np
import pytest

from asyncfl.config.schema import (
    ClassesPerClientPartition,
    DirichletPartition,
    IidPartition,
    NaturalPartition,
    QuantitySkew,
    ShardsPartition,
)
from asyncfl.data.partition import PARTITIONS, apportion, client_sizes, holdout_count, partition, stratified_split
from asyncfl.errors import ScenarioError

LABELS = np.repeat(np.arange(10), 300)  # 3000 samples, 300 per label
SPECS = [
    IidPartition(),
    DirichletPartition(alpha=0.5),
    ClassesPerClientPartition(k=2),
    ClassesPerClientPartition(k=2, assignment="sliding"),
    ShardsPartition(shards_per_client=2),
]


def _split(spec, clients=20, skew=QuantitySkew(), seed=0, labels=LABELS, min_samples=4):
    return partition(labels, clients, spec, skew, min_samples, np.random.default_rng(seed))


def _counts(parts, labels=LABELS, k=10):
    return np.array([np.bincount(labels[p], minlength=k) for p in parts])


def test_registry_has_every_partition() -> None:
    assert PARTITIONS.names() == ["classes_per_client", "dirichlet", "iid", "natural", "shards"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_disjoint_covering_and_deterministic(spec) -> None:
    parts = _split(spec)
    assert len(parts) == 20
    allidx = np.concatenate(parts)
    assert len(allidx) == len(np.unique(allidx)), "a sample sits in two clients"
    # 20 clients x 2 labels covers all 10 labels, so every partition here uses every sample
    assert np.array_equal(np.sort(allidx), np.arange(len(LABELS)))
    again = _split(spec)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = _split(spec, seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))
    assert min(len(p) for p in parts) >= 4


def test_iid_sizes_equal_and_labels_mixed() -> None:
    parts = _split(IidPartition())
    assert {len(p) for p in parts} == {150}
    assert (_counts(parts) > 0).sum(axis=1).min() >= 8


def test_iid_remainder_goes_to_first_clients() -> None:
    parts = partition(np.zeros(103, dtype=np.int64), 10, IidPartition(), QuantitySkew(), 1, np.random.default_rng(0))
    assert [len(p) for p in parts] == [11, 11, 11] + [10] * 7


def test_dirichlet_small_alpha_few_labels_large_alpha_near_iid() -> None:
    small = _counts(_split(DirichletPartition(alpha=0.05), clients=50))
    large = _counts(_split(DirichletPartition(alpha=100.0), clients=10))
    frac_s = small / small.sum(axis=1, keepdims=True)
    frac_l = large / large.sum(axis=1, keepdims=True)
    # small alpha: the dominant label holds most of a client's data, few labels carry >= 5%
    assert np.median(frac_s.max(axis=1)) > 0.6
    assert np.median((frac_s >= 0.05).sum(axis=1)) <= 3
    # large alpha: every label present, proportions close to the global 10% each
    assert (large > 0).all()
    tv = 0.5 * np.abs(frac_l - 0.1).sum(axis=1)
    assert np.median(tv) < 0.1


def test_classes_per_client_gives_exactly_k_labels() -> None:
    for k in (1, 2, 3):
        counts = _counts(_split(ClassesPerClientPartition(k=k), clients=20))
        assert ((counts > 0).sum(axis=1) == k).all()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_classes_per_client_blocks_and_sliding_windows(k: int) -> None:
    """blocks: client i holds pi[i k .. i k + k - 1] (mod 10); sliding: pi[i .. i + k - 1]
    (FedProx / pFedMe's (user + j) mod 10), so with k = 2 neighbours share one label and every
    label has exactly k holders among 10 clients."""
    sets = {}
    for assignment in ("blocks", "sliding"):
        counts = _counts(_split(ClassesPerClientPartition(k=k, assignment=assignment), clients=10))
        assert ((counts > 0).sum(axis=1) == k).all()
        sets[assignment] = [frozenset(np.flatnonzero(row).tolist()) for row in counts]
    # pi is the partition's first draw from its generator (_split seeds default_rng(0))
    pi = np.random.default_rng(0).permutation(np.arange(10))
    for i in range(10):
        assert sets["sliding"][i] == frozenset(pi[(i + np.arange(k)) % 10].tolist())
        assert sets["blocks"][i] == frozenset(pi[(i * k + np.arange(k)) % 10].tolist())
    holders = np.bincount([c for s_ in sets["sliding"] for c in s_], minlength=10)
    assert (holders == k).all()


def test_classes_per_client_drops_unheld_labels_only() -> None:
    # 3 clients x 2 labels hold 6 of 10 labels; the other 4 labels' samples are left out
    parts = _split(ClassesPerClientPartition(k=2), clients=3)
    held = np.unique(LABELS[np.concatenate(parts)])
    assert len(held) == 6
    assert len(np.concatenate(parts)) == 6 * 300


def test_classes_per_client_errors() -> None:
    with pytest.raises(ScenarioError, match=r"data\.partition\.k"):
        _split(ClassesPerClientPartition(k=11))
    with pytest.raises(ScenarioError, match=r"data\.partition\.k"):
        partition(np.arange(4) % 2, 10, ClassesPerClientPartition(k=1), QuantitySkew(), 1, np.random.default_rng(0))


def test_shards_two_labels_at_most_and_equal_sizes() -> None:
    parts = _split(ShardsPartition(shards_per_client=2))
    assert {len(p) for p in parts} == {150}
    assert ((_counts(parts) > 0).sum(axis=1) <= 2).all()


def test_shards_reject_quantity_skew_and_too_many_shards() -> None:
    with pytest.raises(ScenarioError, match=r"data\.quantity_skew"):
        _split(ShardsPartition(), skew=QuantitySkew(name="lognormal"))
    with pytest.raises(ScenarioError, match="shards_per_client"):
        partition(
            np.zeros(10, dtype=np.int64),
            6,
            ShardsPartition(shards_per_client=2),
            QuantitySkew(),
            1,
            np.random.default_rng(0),
        )


@pytest.mark.parametrize(
    "skew", [QuantitySkew(name="lognormal", sigma=1.5), QuantitySkew(name="power_law", exponent=1.2)]
)
@pytest.mark.parametrize("spec", [IidPartition(), DirichletPartition(alpha=1.0), ClassesPerClientPartition(k=2)])
def test_quantity_skew_makes_unequal_sizes(skew, spec) -> None:
    parts = _split(spec, clients=30, skew=skew)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 4
    assert sizes.max() > 3 * np.median(sizes) or sizes.std() > 0.5 * sizes.mean()
    allidx = np.concatenate(parts)
    assert len(allidx) == len(np.unique(allidx))
    if spec.name != "classes_per_client":
        assert sizes.sum() == len(LABELS)


def test_client_sizes_sum_and_minimum() -> None:
    rng = np.random.default_rng(0)
    for skew in (QuantitySkew(), QuantitySkew(name="lognormal", sigma=2.0), QuantitySkew(name="power_law")):
        sizes = client_sizes(1000, 37, skew, 5, rng)
        assert sizes.sum() == 1000 and sizes.min() >= 5


def test_too_few_samples_is_one_line_scenario_error() -> None:
    with pytest.raises(ScenarioError, match=r"data\.min_samples") as info:
        partition(np.zeros(30, dtype=np.int64), 10, IidPartition(), QuantitySkew(), 4, np.random.default_rng(0))
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_natural_on_a_pool_is_a_scenario_error() -> None:
    with pytest.raises(ScenarioError, match="natural"):
        _split(NaturalPartition())


def test_apportion_is_exact() -> None:
    out = apportion(10, [1, 1, 1])
    assert out.sum() == 10 and sorted(out.tolist()) == [3, 3, 4]
    assert apportion(0, [2, 5]).tolist() == [0, 0]
    assert apportion(7, [0, 0]).sum() == 7


def test_stratified_split_follows_client_labels() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [40, 20, 10, 1])
    idx = np.arange(len(labels))
    tr, te = stratified_split(idx, labels, 0.2, rng)
    assert len(te) == holdout_count(len(idx), 0.2) == 14
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(idx)
    ctr, cte = np.bincount(labels[tr], minlength=4), np.bincount(labels[te], minlength=4)
    assert cte.tolist() == [8, 4, 2, 0]  # 20% of each label; the single sample stays in training
    assert (ctr > 0).all()


def test_holdout_count_bounds() -> None:
    assert holdout_count(2, 0.01) == 1
    assert holdout_count(2, 0.99) == 1
    assert holdout_count(100, 0.25) == 25
