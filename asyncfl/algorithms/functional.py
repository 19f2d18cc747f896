"""Small pure building blocks shared by the client rules: gradients, Hessian-vector products,
gradient descent and the Moreau-envelope inner solve.

Every function takes a :data:`~asyncfl.models.base.LossFn` ``loss(w, x, y, m)`` (weighted mean
loss f(w; D) of a flat parameter vector ``w`` [P] on a minibatch D = (x, y, m)) and is written
for ONE client, so that ``torch.func.vmap`` can map it over many: no ``.item()``, no
data-dependent Python control flow, no in-place updates of inputs. Step counts are Python ints
(static under vmap); step sizes may be Python floats or 0-d tensors (per client under vmap).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad

from asyncfl.models.base import LossFn


def loss_grad(loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
    """grad_w f(w; D) [P] by reverse-mode autograd (torch.func.grad).

    A loss that carries its own ``gradient(w, x, y, m)`` (the executor's
    :class:`~asyncfl.exec.executor.DenseLoss`: explicit back-propagation) is differentiated by it.
    Otherwise, outside any function transform (no vmap / grad active) and when nothing
    differentiates through ``w``, plain ``torch.autograd.grad`` computes the same gradient about
    2x faster than torch.func (the executor's one-at-a-time path)."""
    custom = getattr(loss, "gradient", None)
    if custom is not None:
        return custom(w, x, y, m)
    if not w.requires_grad and torch._C._functorch.maybe_current_level() is None:
        with torch.enable_grad():
            wg = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(loss(wg, x, y, m), wg)
        return g
    return grad(loss)(w, x, y, m)


def hvp(loss: LossFn, w: Tensor, v: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
    """Exact Hessian-vector product nabla^2 f(w; D) v [P].

    Computed reverse-over-reverse, grad_w <grad_w f(w; D), v>: it costs about two gradient
    evaluations like forward-over-reverse (jvp of grad), but works for every module, including
    recurrent layers whose CPU kernels have no forward-mode derivative."""

    def directional(u: Tensor) -> Tensor:
        return torch.dot(grad(loss)(u, x, y, m), v)

    return grad(directional)(w)


def gradient_descent(
    loss: LossFn,
    w: Tensor,
    x: Tensor,
    y: Tensor,
    m: Tensor,
    lr: float | Tensor,
    steps: int,
    weight_decay: float = 0.0,
) -> Tensor:
    """``steps`` steps of w <- w - lr (grad f(w; D) + weight_decay w), all on the same batch D."""
    for _ in range(steps):
        g = loss_grad(loss, w, x, y, m)
        if weight_decay:
            g = g + weight_decay * w
        w = w - lr * g
    return w


def moreau_inner(
    loss: LossFn,
    w: Tensor,
    x: Tensor,
    y: Tensor,
    m: Tensor,
    lam: float,
    lr: float | Tensor,
    steps: int,
    weight_decay: float = 0.0,
    theta0: Tensor | None = None,
) -> Tensor:
    """Approximate theta(w) = argmin_theta h(theta; w) with pFedMe's inner objective

        h(theta; w) = f(theta; D) + lam/2 ||theta - w||^2 (+ weight_decay/2 ||theta||^2),

    by ``steps`` (K) gradient steps theta <- theta - lr grad h(theta; w), from ``theta0`` (default w).
    """
    theta = w if theta0 is None else theta0
    for _ in range(steps):
        g = loss_grad(loss, theta, x, y, m) + lam * (theta - w)
        if weight_decay:
            g = g + weight_decay * theta
        theta = theta - lr * g
    return theta


def _probe(w: Tensor) -> Tensor:
    """A fixed, deterministic, dense unit vector (start of the power iteration).

    A fixed pattern rather than a random draw keeps evaluation free of randomness (and equal for
    batched and one-at-a-time runs); an irrational frequency makes it generic, i.e. not
    orthogonal to any eigenvector a real problem has."""
    k = torch.arange(w.shape[-1], device=w.device, dtype=w.dtype)
    v = torch.cos(k * 2.399963229728653 + 0.5) + 0.1
    return v / v.norm()


def curvature_bound(loss: LossFn, w: Tensor, x: Tensor, y: Tensor, m: Tensor, iters: int) -> Tensor:
    """Estimate L = max |eigenvalue| of nabla^2 f(w; D) by ``iters`` steps of power iteration.

    Returns ||H v|| for the final unit iterate v (0-d tensor): a lower bound on L that is within a
    few percent of it after ~10 iterations on the problems here; never negative (0 when the
    client has no data)."""
    if iters < 1:
        raise ValueError("curvature_bound needs iters >= 1")
    v = _probe(w)
    hv = hvp(loss, w, v, x, y, m)
    for _ in range(iters - 1):
        v = hv / hv.norm().clamp_min(1e-30)
        hv = hvp(loss, w, v, x, y, m)
    return hv.norm()


__all__ = ["curvature_bound", "gradient_descent", "hvp", "loss_grad", "moreau_inner"]
