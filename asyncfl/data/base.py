"""Federated data resident on one device, laid out so any client's minibatch is one gather.

All clients' training samples are concatenated in ``train_x`` / ``train_y``; client i owns rows
``train_offsets[i] : train_offsets[i] + train_sizes[i]``. Test data follows the same layout
(each client's test set has its training label distribution). ``global_x`` / ``global_y`` is a
held-out set for the global metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class FederatedData:
    """Per-client train/test data plus a global test set.

    ``input_shape``: shape of one sample's features; ``num_classes``: label count (0 for
    regression); ``task``: classification | regression; ``client_labels``: per client, the
    sorted label ids it holds (for describe / speed coupling); ``vocab_size``: for int64 token
    features, how many token ids there are (ids lie in 0..vocab_size - 1; LEAF sent140's words),
    0 when the ids share the class table (Shakespeare's characters) or the features are floats."""

    train_x: Tensor
    train_y: Tensor
    train_offsets: Tensor
    train_sizes: Tensor
    test_x: Tensor
    test_y: Tensor
    test_offsets: Tensor
    test_sizes: Tensor
    global_x: Tensor
    global_y: Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    task: Literal["classification", "regression"] = "classification"
    name: str = ""
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    vocab_size: int = 0

    @property
    def num_clients(self) -> int:
        return int(self.train_sizes.shape[0])

    @property
    def train_sizes_np(self) -> np.ndarray:
        return self.train_sizes.cpu().numpy()

    @property
    def test_sizes_np(self) -> np.ndarray:
        return self.test_sizes.cpu().numpy()

    def client_train(self, i: int) -> tuple[Tensor, Tensor]:
        o, n = int(self.train_offsets[i]), int(self.train_sizes[i])
        return self.train_x[o : o + n], self.train_y[o : o + n]

    def client_test(self, i: int) -> tuple[Tensor, Tensor]:
        o, n = int(self.test_offsets[i]), int(self.test_sizes[i])
        return self.test_x[o : o + n], self.test_y[o : o + n]

    def mean_label_fraction(self) -> np.ndarray:
        """Per client, mean training label / (num_classes - 1) in [0, 1] (0.5 for regression)."""
        if self.task != "classification" or self.num_classes < 2:
            return np.full(self.num_clients, 0.5)
        y = self.train_y.cpu().numpy().astype(np.float64)
        n = self.train_sizes_np
        owner = np.repeat(np.arange(self.num_clients), n)  # client of each row (back-to-back layout)
        sums = np.bincount(owner, weights=y, minlength=self.num_clients)
        frac = sums / np.maximum(n, 1) / (self.num_classes - 1)
        return np.where(n > 0, frac, 0.5)  # a client without samples counts as the middle

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> FederatedData:
        """Move every tensor to ``device`` once; float features take ``dtype`` if given.

        Tensors that are the same object (e.g. ``global_x is test_x`` when the global test set is
        the union of the client test sets) stay one object on the device."""
        moved: dict[int, Tensor] = {}

        def mv(t: Tensor) -> Tensor:
            if id(t) not in moved:
                if dtype is not None and t.is_floating_point():
                    moved[id(t)] = t.to(device=device, dtype=dtype)
                else:
                    moved[id(t)] = t.to(device=device)
            return moved[id(t)]

        return replace(
            self,
            train_x=mv(self.train_x),
            train_y=mv(self.train_y),
            train_offsets=self.train_offsets.to(device),
            train_sizes=self.train_sizes.to(device),
            test_x=mv(self.test_x),
            test_y=mv(self.test_y),
            test_offsets=self.test_offsets.to(device),
            test_sizes=self.test_sizes.to(device),
            global_x=mv(self.global_x),
            global_y=mv(self.global_y),
        )

    def nbytes(self) -> int:
        """Bytes held by the sample tensors (a tensor shared by two fields counts once)."""
        ts = [self.train_x, self.train_y, self.test_x, self.test_y, self.global_x, self.global_y]
        unique = {id(t): t for t in ts}
        return sum(t.element_size() * t.numel() for t in unique.values())


def layout(sizes: np.ndarray) -> tuple[Tensor, Tensor]:
    """Offsets and sizes tensors for clients stored back to back."""
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return torch.from_numpy(offsets), torch.from_numpy(sizes.copy())


__all__ = ["FederatedData", "layout"]
