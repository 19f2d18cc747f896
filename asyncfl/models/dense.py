"""Fully connected networks: logistic regression, MLP (Per-FedAvg), DNN (pFedMe), and the linear
map of the quadratic test problem. Inputs of any shape are flattened per sample."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class DenseNet(nn.Module):
    """x [B, *shape] -> flatten -> (Linear -> activation) per hidden width -> Linear -> [B, out].

    With no hidden layers this is multinomial logistic regression (logits; the loss applies the
    softmax). Parameters: sum over layers of (fan_in + 1) fan_out."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], out_features: int, activation: str = "relu", bias: bool = True
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b, bias=bias), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], out_features, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(torch.flatten(x, 1))


def logreg(in_features: int, num_classes: int) -> DenseNet:
    """Multinomial logistic regression: logits W x + b."""
    return DenseNet(in_features, [], num_classes)


def mlp(in_features: int, hidden: Sequence[int], num_classes: int, activation: str) -> DenseNet:
    """MLP; Per-FedAvg (Fallah et al. 2020) uses 784-80-60-10 with ELU."""
    return DenseNet(in_features, hidden, num_classes, activation)


def dnn_hidden(in_features: int) -> int:
    """pFedMe's (Dinh et al. 2020) hidden width: 20 for Synthetic (60 features, i.e. <= 100 inputs),
    100 for MNIST-sized inputs."""
    return 20 if in_features <= 100 else 100


def dnn(in_features: int, hidden: int | None, num_classes: int) -> DenseNet:
    """pFedMe's DNN: one hidden ReLU layer (784-100-10 on MNIST, 60-20-10 on Synthetic)."""
    return DenseNet(in_features, [hidden or dnn_hidden(in_features)], num_classes, "relu")


def quadratic(dimension: int) -> DenseNet:
    """w -> a^T w: one Linear(d, 1) without bias, so the flat parameter vector IS w (shape [d])."""
    return DenseNet(dimension, [], 1, bias=False)


__all__ = ["ACTIVATIONS", "DenseNet", "dnn", "dnn_hidden", "logreg", "mlp", "quadratic"]
