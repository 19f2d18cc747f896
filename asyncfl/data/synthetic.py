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
re-partitioned. ``extras``: ``W`` [C, d, K], ``b`` [C, K], ``v`` [C, d] (float64).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from asyncfl.config.schema import SyntheticData
from asyncfl.data.base import FederatedData
from asyncfl.data.pack import build_pooled, pack, require_no_quantity_skew, split_clients
from asyncfl.rng import numpy_generator


def feature_variances(dimension: int) -> np.ndarray:
    """Sigma_jj = j^(-1.2), j = 1..d (FedProx's feature covariance)."""
    return np.power(np.arange(1, dimension + 1, dtype=np.float64), -1.2)


def generate(
    cfg: SyntheticData, num_clients: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """All clients' samples: (x [N, d] float32, y [N] int64, sizes [C], extras W, b, v)."""
    d, k = cfg.dimension, cfg.classes
    std = np.sqrt(feature_variances(d))
    mu = math.log(cfg.mean_samples) - cfg.sigma_samples**2 / 2.0
    floor_n = max(cfg.min_samples, 2)
    shared = numpy_generator(seed, "data.synthetic.shared")
    w_shared = shared.normal(0.0, 1.0, (d, k))
    b_shared = shared.normal(0.0, 1.0, k)
    xs, ys, sizes = [], [], []
    ws = np.empty((num_clients, d, k))
    bs = np.empty((num_clients, k))
    vs = np.empty((num_clients, d))
    for i in range(num_clients):
        rng = numpy_generator(seed, "data.synthetic", i)
        u = rng.normal(0.0, cfg.alpha)
        big_b = rng.normal(0.0, cfg.beta)
        w_loc = rng.normal(u, 1.0, (d, k))
        b_loc = rng.normal(u, 1.0, k)
        v_loc = rng.normal(big_b, 1.0, d)
        n = max(floor_n, int(rng.lognormal(mu, cfg.sigma_samples)))
        if cfg.iid:
            w_loc, b_loc, v_loc = w_shared, b_shared, np.full(d, big_b)
        x = v_loc + rng.standard_normal((n, d)) * std
        y = np.argmax(x @ w_loc + b_loc, axis=1)  # softmax is monotone: argmax of the logits
        xs.append(x.astype(np.float32))
        ys.append(y.astype(np.int64))
        sizes.append(n)
        ws[i], bs[i], vs[i] = w_loc, b_loc, v_loc
    extras = {"W": ws, "b": bs, "v": vs}
    return np.concatenate(xs), np.concatenate(ys), np.array(sizes, dtype=np.int64), extras


def build_synthetic(cfg: SyntheticData, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    """Synthetic(alpha, beta) with its natural clients, or pooled and re-partitioned."""
    x, y, sizes, extras = generate(cfg, num_clients, seed)
    name = f"synthetic({cfg.alpha:g},{cfg.beta:g})" + ("-iid" if cfg.iid else "")
    if cfg.partition.name != "natural":
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
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    parts = [np.arange(s, s + n, dtype=np.int64) for s, n in zip(starts, sizes, strict=True)]
    train, test = split_clients(parts, y, cfg.test_fraction, seed)
    return pack(x, y, train, test, num_classes=cfg.classes, input_shape=(cfg.dimension,), name=name, extras=extras)


__all__ = ["build_synthetic", "feature_variances", "generate"]
