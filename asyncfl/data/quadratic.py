"""The quadratic test problem with closed forms: f_i(w) = 1/2 (w - c_i)^T A_i (w - c_i).

Per client i (stream (seed, ``data.quadratic``, i)):

- A_i = U_i diag(lambda_i) U_i^T with U_i a Haar-random rotation (QR of a Gaussian matrix, signs
  fixed) and eigenvalues lambda_i in [mu, L]: for d >= 2 one equals ``mu`` and one equals ``L``
  (so f_i is exactly mu-strongly convex and L-smooth), the rest uniform in [mu, L]; for d = 1 the
  one eigenvalue is uniform in [mu, L].
- c_i ~ N(0, spread^2 I_d), the client's minimiser.

The problem is realised EXACTLY by d samples per client: a_j = sqrt(d lambda_j) u_j (u_j the j-th
column of U_i) and target b_j = a_j^T c_i, so with the ``quadratic`` model (a linear map w -> a^T w,
no bias) and the regression loss 1/2 (a^T w - b)^2,

    1/2 mean_j (a_j^T w - b_j)^2 = 1/2 (w - c_i)^T (1/d sum_j a_j a_j^T) (w - c_i) = f_i(w).

A client's test set is those same d samples (so its test loss is f_i; ``data.test_fraction`` is
ignored); the global test set is their union, whose loss is mean_i f_i(w). ``extras``: ``A``
[C, d, d], ``c`` [C, d], ``eigenvalues`` [C, d] (float64). Features and targets are stored as
float32 (the realisation is exact up to float32 rounding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asyncfl.config.schema import QuadraticData
from asyncfl.data.base import FederatedData
from asyncfl.data.pack import pack, require_no_quantity_skew
from asyncfl.errors import ScenarioError
from asyncfl.rng import numpy_generator


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """Haar-distributed orthogonal d x d matrix (QR of a Gaussian, column signs from diag R)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))


def eigenvalues(d: int, mu: float, big_l: float, rng: np.random.Generator) -> np.ndarray:
    """d eigenvalues in [mu, L]; mu and L both present when d >= 2."""
    if d == 1:
        return rng.uniform(mu, big_l, 1)
    lam = np.concatenate([[mu, big_l], rng.uniform(mu, big_l, d - 2)])
    return rng.permutation(lam)


def generate(cfg: QuadraticData, num_clients: int, seed: int) -> dict[str, np.ndarray]:
    """A [C, d, d], c [C, d], eigenvalues [C, d], and the samples x [C d, d], y [C d]."""
    d = cfg.dimension
    big_a = np.empty((num_clients, d, d))
    c = np.empty((num_clients, d))
    lams = np.empty((num_clients, d))
    xs = np.empty((num_clients, d, d))
    ys = np.empty((num_clients, d))
    for i in range(num_clients):
        rng = numpy_generator(seed, "data.quadratic", i)
        u = random_rotation(d, rng)
        lam = eigenvalues(d, cfg.mu, cfg.L, rng)
        ci = rng.normal(0.0, cfg.spread, d) if cfg.spread > 0 else np.zeros(d)
        big_a[i] = (u * lam) @ u.T
        big_a[i] = 0.5 * (big_a[i] + big_a[i].T)
        c[i], lams[i] = ci, lam
        a = (u * np.sqrt(d * lam)).T  # row j = a_j = sqrt(d lambda_j) u_j
        xs[i] = a
        ys[i] = a @ ci
    return {"A": big_a, "c": c, "eigenvalues": lams, "x": xs.reshape(-1, d), "y": ys.reshape(-1)}


def build_quadratic(cfg: QuadraticData, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    """The quadratic problem's FederatedData (task regression, num_classes 0)."""
    if cfg.L < cfg.mu:
        raise ScenarioError("data.L", f"must be >= data.mu ({cfg.mu:g}); got {cfg.L:g}")
    if cfg.partition.name != "natural":
        raise ScenarioError("data.partition", "quadratic data is generated per client; only natural is allowed")
    require_no_quantity_skew(cfg, "quadratic clients hold exactly data.dimension samples each")
    g = generate(cfg, num_clients, seed)
    d = cfg.dimension
    parts = [np.arange(i * d, (i + 1) * d, dtype=np.int64) for i in range(num_clients)]
    return pack(
        g["x"].astype(np.float32),
        g["y"].astype(np.float32),
        parts,
        parts,
        num_classes=0,
        input_shape=(d,),
        name="quadratic",
        task="regression",
        extras={"A": g["A"], "c": g["c"], "eigenvalues": g["eigenvalues"]},
    )


__all__ = ["build_quadratic", "eigenvalues", "generate", "random_rotation"]
