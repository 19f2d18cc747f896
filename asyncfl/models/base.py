"""Models as flat parameter vectors for torch.func.

A :class:`FlatModel` wraps an ``nn.Module`` (structure only) and exposes pure functions of a flat
parameter vector ``w`` (shape [P]): ``forward(w, x)``, ``loss(w, x, y, m)``. Flat vectors make
server arithmetic, version storage, NaN checks and stacking for vmap one-liners; ``unflatten``
gives views, so ``functional_call`` costs no copies. Everything here is vmappable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from asyncfl.rng import stream_key

Task = Literal["classification", "regression"]
LossFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""loss(w [P], x [B, ...], y [B], m [B]) -> scalar: sum_j m_j l(w; x_j, y_j) / sum_j m_j."""


@dataclass(frozen=True, eq=False)
class FlatModel:
    """A network seen as a function of one flat parameter vector.

    ``task``: ``classification`` (cross-entropy on logits, targets are class ids) or
    ``regression`` (loss 1/2 (out - y)^2 on a scalar output)."""

    module: nn.Module
    task: Task
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]

    @classmethod
    def wrap(cls, module: nn.Module, task: Task) -> FlatModel:
        named = [(n, p) for n, p in module.named_parameters()]
        for _, p in named:
            p.requires_grad_(False)
        return cls(
            module=module,
            task=task,
            names=tuple(n for n, _ in named),
            shapes=tuple(p.shape for _, p in named),
            numels=tuple(p.numel() for _, p in named),
        )

    @property
    def num_params(self) -> int:
        return sum(self.numels)

    def num_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes on the wire for one model (the network delay model's transfer size)."""
        return self.num_params * torch.empty((), dtype=dtype).element_size()

    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        """Views of ``w`` shaped as the module's parameters."""
        parts = torch.split(w, list(self.numels))
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def flatten(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def init(self, seed: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Initial w from the module's own initialisers under a generator seeded by (seed, 'model_init')."""
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(stream_key(seed, "model_init") & ((1 << 63) - 1))
            for m in self.module.modules():
                reset = getattr(m, "reset_parameters", None)
                if callable(reset):
                    reset()
            w = torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])
        finally:
            torch.random.set_rng_state(state)
        return w.to(device=device, dtype=dtype).clone()

    def forward(self, w: Tensor, x: Tensor) -> Tensor:
        return functional_call(self.module, self.unflatten(w), (x,))

    def per_sample_loss(self, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
        out = self.forward(w, x)
        if self.task == "regression":
            return 0.5 * (out.reshape(-1) - y) ** 2
        return F.cross_entropy(out, y, reduction="none")

    def loss(self, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        """Weighted mean loss; ``m`` are per-sample weights (0 marks padding)."""
        per = self.per_sample_loss(w, x, y)
        return (per * m).sum() / m.sum().clamp_min(1e-12)

    def correct(self, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Per-sample 1.0 where the prediction is right (classification), else NaN-free zeros."""
        out = self.forward(w, x)
        if self.task == "regression":
            return torch.zeros(out.shape[0], device=out.device, dtype=out.dtype)
        return (out.argmax(dim=-1) == y).to(out.dtype)


__all__ = ["FlatModel", "LossFn", "Task"]
