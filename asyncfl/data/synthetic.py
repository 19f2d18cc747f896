"""Synthetic(alpha, beta): the generated heterogeneous data of FedProx (Li et al. 2020) and pFedMe.

Per client k (its own stream (seed, ``data.synthetic``, k), so adding clients changes no one
else's data):

- u_k ~ N(0, alpha^2), B_k ~ N(0, beta^2)      (alpha, beta are standard deviations)
- W_k ~ N(u_k, 1) of shape [d, K], b_k ~ N(u_k, 1) of shape [K]   (the local model)
- v_k ~ N(B_k, 1) of shape [d]                  (the local feature mean)
- x ~ N(v_k, Sigma), Sigma diagonal with Sigma_jj = j^(-1.2), j = 1..d
- y = argmax softmax(W_k^T x + b_k)

``iid``: FedProx's iid rule (its ``synthetic_iid`` generator): one shared W, b ~ N(0, 1) for all
clients (stream ``data.synthetic.shared``) and v_k = B_k 1 (all zeros when beta = 0, as in
FedProx's Synthetic-IID which uses alpha = beta = 0).

Client sizes n_k = max(min_samples, 2, floor(exp(N(mu, sigma^2)))), mu = ln(mean_samples) -
sigma^2 / 2, sigma = ``sigma_samples`` (so the mean before flooring is ``mean_samples``; FedProx's
own rule, lognormal(4, 2) + 50, is heavier-tailed). Each client's samples are split into train
and test by ``data.test_fraction`` (stratified by label); the global test set is the union of
the client test sets. With a non-natural ``data.partition`` the generated samples are pooled and
re-partitioned. ``extras``: ``W`` [C, d, K], ``b`` [C, K], ``v`` [C, d] (float64). The natural clients are written
straight into preallocated train/test arrays (no pool, no gather): peak memory is the data once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from asyncfl.config.schema import SyntheticData
from asyncfl.data.base import FederatedData
from asyncfl.data.pack import assemble, build_pooled, require_no_quantity_skew
from asyncfl.data.partition import holdout_count, stratified_split
from asyncfl.rng import numpy_generator


def feature_variances(dimension: int) -> np.ndarray:
    """Sigma_jj = j^(-1.2), j = 1..d (FedProx's feature covariance)."""
    return np.power(np.arange(1, dimension + 1, dtype=np.float64), -1.2)


class _Clients:
    """The per-client draws that fix a client's size and local model (u_k, B_k, W_k, b_k, v_k,
    n_k), with each client's generator kept, positioned for its samples.

    Drawing the sizes first lets the samples be written straight into preallocated float32
    arrays (about 0.1 GB of generators per 100,000 clients) instead of a list of per-client
    arrays and their concatenation: at 100,000 clients of ~50 samples this halves peak memory."""

    def __init__(self, cfg: SyntheticData, num_clients: int, seed: int) -> None:
        d, k = cfg.dimension, cfg.classes
        self.std = np.sqrt(feature_variances(d))
        mu = math.log(cfg.mean_samples) - cfg.sigma_samples**2 / 2.0
        floor_n = max(cfg.min_samples, 2)
        shared = numpy_generator(seed, "data.synthetic.shared")
        w_shared = shared.normal(0.0, 1.0, (d, k))
        b_shared = shared.normal(0.0, 1.0, k)
        self.gens: list[np.random.Generator] = []
        self.sizes = np.empty(num_clients, dtype=np.int64)
        self.W = np.empty((num_clients, d, k))
        self.b = np.empty((num_clients, k))
        self.v = np.empty((num_clients, d))
        for i in range(num_clients):
            rng = numpy_generator(seed, "data.synthetic", i)
            u = rng.normal(0.0, cfg.alpha)
            big_b = rng.normal(0.0, cfg.beta)
            w_loc = rng.normal(u, 1.0, (d, k))
            b_loc = rng.normal(u, 1.0, k)
            v_loc = rng.normal(big_b, 1.0, d)
            self.sizes[i] = max(floor_n, int(rng.lognormal(mu, cfg.sigma_samples)))
            if cfg.iid:
                w_loc, b_loc, v_loc = w_shared, b_shared, np.full(d, big_b)
            self.W[i], self.b[i], self.v[i] = w_loc, b_loc, v_loc
            self.gens.append(rng)

    def samples(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Client ``i``'s samples (x [n_k, d] float32, y [n_k] int64); call once per client."""
        n, d = int(self.sizes[i]), len(self.std)
        x = self.v[i] + self.gens[i].standard_normal((n, d)) * self.std
        y = np.argmax(x @ self.W[i] + self.b[i], axis=1)  # softmax is monotone: argmax of the logits
        return x.astype(np.float32), y.astype(np.int64)

    def extras(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "b": self.b, "v": self.v}


def generate(
    cfg: SyntheticData, num_clients: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """All clients' samples: (x [N, d] float32, y [N] int64, sizes [C], extras W, b, v)."""
    clients = _Clients(cfg, num_clients, seed)
    total = int(clients.sizes.sum())
    x = np.empty((total, cfg.dimension), dtype=np.float32)
    y = np.empty(total, dtype=np.int64)
    start = 0
    for i, n in enumerate(clients.sizes.tolist()):
        x[start : start + n], y[start : start + n] = clients.samples(i)
        start += n
    return x, y, clients.sizes, clients.extras()


def _build_natural(cfg: SyntheticData, num_clients: int, seed: int, name: str) -> FederatedData:
    """Natural clients, each client's train and test rows written straight into place.

    The same numbers as generating the pool and calling ``pack`` (same streams, same
    :func:`stratified_split` per client with stream (seed, ``data.split``, client)), without
    the pool: peak memory is the data once, not three times."""
    clients = _Clients(cfg, num_clients, seed)
    test_n = np.array([holdout_count(int(n), cfg.test_fraction) for n in clients.sizes], dtype=np.int64)
    train_n = clients.sizes - test_n
    d = cfg.dimension
    train_x = np.empty((int(train_n.sum()), d), dtype=np.float32)
    test_x = np.empty((int(test_n.sum()), d), dtype=np.float32)
    train_y = np.empty(len(train_x), dtype=np.int64)
    test_y = np.empty(len(test_x), dtype=np.int64)
    train_index = np.empty(len(train_x), dtype=np.int64)
    test_index = np.empty(len(test_x), dtype=np.int64)
    pool = a = b = 0  # pool offset of client i; its train and test row offsets
    for i in range(num_clients):
        n = int(clients.sizes[i])
        x, y = clients.samples(i)
        tr, te = stratified_split(np.arange(n), y, cfg.test_fraction, numpy_generator(seed, "data.split", i))
        train_x[a : a + len(tr)], train_y[a : a + len(tr)], train_index[a : a + len(tr)] = x[tr], y[tr], pool + tr
        test_x[b : b + len(te)], test_y[b : b + len(te)], test_index[b : b + len(te)] = x[te], y[te], pool + te
        pool, a, b = pool + n, a + len(tr), b + len(te)
    return assemble(
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        train_n,
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
        test_n,
        num_classes=cfg.classes,
        input_shape=(d,),
        name=name,
        extras={**clients.extras(), "train_index": train_index, "test_index": test_index},
    )


def build_synthetic(cfg: SyntheticData, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    """Synthetic(alpha, beta) with its natural clients, or pooled and re-partitioned."""
    name = f"synthetic({cfg.alpha:g},{cfg.beta:g})" + ("-iid" if cfg.iid else "")
    if cfg.partition.name != "natural":
        x, y, _, extras = generate(cfg, num_clients, seed)
        return build_pooled(
            x,
            y,
            cfg,
            num_clients,
            seed,
            num_classes=cfg.classes,
            input_shape=(cfg.dimension,),
            name=name,
            extras=extras,
        )
    require_no_quantity_skew(
        cfg, "synthetic clients have their own lognormal sizes (data.mean_samples, data.sigma_samples)"
    )
    return _build_natural(cfg, num_clients, seed, name)


__all__ = ["build_synthetic", "feature_variances", "generate"]
