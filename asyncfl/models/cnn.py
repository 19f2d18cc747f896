"""LeNet-style convolutional network (McMahan et al. 2017's MNIST/CIFAR CNN), no batch norm.

x [B, C, H, W] -> per entry of ``channels``: Conv2d(5 x 5, padding 2) -> ReLU -> MaxPool(2)
-> flatten -> Linear(hidden) -> ReLU -> Linear(num_classes). With the defaults (32, 64, 512):
1 x 28 x 28 gives 64 x 7 x 7 = 3136 features before the dense layers (1,663,370 parameters for
10 classes); 3 x 32 x 32 gives 64 x 8 x 8 = 4096.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

KERNEL = 5


def conv_output_hw(height: int, width: int, blocks: int) -> tuple[int, int]:
    """Spatial size after ``blocks`` (same-padded conv, 2 x 2 max-pool) blocks."""
    for _ in range(blocks):
        height, width = height // 2, width // 2
    return height, width


class CNN(nn.Module):
    """Conv blocks then two dense layers; see the module docstring."""

    def __init__(
        self, input_shape: tuple[int, int, int], channels: Sequence[int], hidden: int, num_classes: int
    ) -> None:
        super().__init__()
        c_in, h, w = input_shape
        blocks: list[nn.Module] = []
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, KERNEL, padding=KERNEL // 2), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        oh, ow = conv_output_hw(h, w, len(channels))
        self.classifier = nn.Sequential(nn.Linear(c_in * oh * ow, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


__all__ = ["CNN", "conv_output_hw"]
