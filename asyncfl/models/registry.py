"""``model.name`` names -> network builders, :func:`build_model` and :func:`summary`.

A builder is ``fn(cfg, spec) -> nn.Module``; ``spec`` (:class:`InputSpec`) carries the input
shape, class count and task from the :class:`FederatedData`, so switching the data set needs no
model keys. A model that cannot take the data (a CNN on flat features, a dense net on character or
word ids) is a one-line :class:`ScenarioError` on ``model.name``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from asyncfl.config.schema import CharLSTMModel, CNNModel, DNNModel, MLPModel, ModelConfig
from asyncfl.data.base import FederatedData
from asyncfl.errors import ScenarioError
from asyncfl.models import dense
from asyncfl.models.base import FlatModel
from asyncfl.models.char_lstm import CharLSTM
from asyncfl.models.cnn import CNN, conv_output_hw
from asyncfl.models.spec import InputSpec
from asyncfl.registry import Registry

ModelBuilder = Callable[[Any, InputSpec], nn.Module]
"""builder(cfg, spec) -> nn.Module (structure; parameters are set by FlatModel.init)."""

MODELS: Registry[ModelBuilder] = Registry("model", "model.name", plugin_part="build")
"""``model.name`` -> builder; plug-ins of entry-point group ``asyncfl.models`` join it. The config
models are in :data:`asyncfl.config.schema.MODEL_CONFIGS` under the same names."""


def _describe_input(spec: InputSpec) -> str:
    kind = "token ids" if spec.integer_input else "features"
    return f"data set {spec.dataset or '?'} gives {kind} of shape {spec.input_shape}"


def _need_classification(name: str, spec: InputSpec) -> None:
    if spec.task != "classification" or spec.num_classes < 2:
        raise ScenarioError("model.name", f"{name} is a classifier; {_describe_input(spec)} with a regression target")


def _need_float(name: str, spec: InputSpec) -> None:
    if spec.integer_input:
        raise ScenarioError("model.name", f"{name} needs float features; {_describe_input(spec)} (use char_lstm)")


def build_logreg(cfg: Any, spec: InputSpec) -> nn.Module:
    _need_classification("logreg", spec)
    _need_float("logreg", spec)
    return dense.logreg(spec.num_features, spec.num_classes)


def build_mlp(cfg: MLPModel, spec: InputSpec) -> nn.Module:
    _need_classification("mlp", spec)
    _need_float("mlp", spec)
    return dense.mlp(spec.num_features, cfg.hidden, spec.num_classes, cfg.activation)


def build_dnn(cfg: DNNModel, spec: InputSpec) -> nn.Module:
    _need_classification("dnn", spec)
    _need_float("dnn", spec)
    return dense.dnn(spec.num_features, cfg.hidden, spec.num_classes)


def build_cnn(cfg: CNNModel, spec: InputSpec) -> nn.Module:
    _need_classification("cnn", spec)
    if not spec.is_image:
        raise ScenarioError("model.name", f"cnn needs images (channels x height x width); {_describe_input(spec)}")
    c, h, w = spec.input_shape
    oh, ow = conv_output_hw(h, w, len(cfg.channels))
    if oh < 1 or ow < 1:
        raise ScenarioError(
            "model.channels", f"{len(cfg.channels)} conv blocks halve {h} x {w} images below 1 pixel; use fewer"
        )
    return CNN((c, h, w), cfg.channels, cfg.hidden, spec.num_classes)


def build_char_lstm(cfg: CharLSTMModel, spec: InputSpec) -> nn.Module:
    _need_classification("char_lstm", spec)
    if not spec.integer_input or len(spec.input_shape) != 1:
        raise ScenarioError("model.name", f"char_lstm needs character-id or word-id sequences; {_describe_input(spec)}")
    # Embedding rows: the data's token ids (Shakespeare: the 81 characters, which are also the
    # classes; sent140: its vocabulary plus padding and unknown).
    return CharLSTM(
        spec.vocab_size or spec.num_classes, cfg.embedding, cfg.hidden, cfg.layers, spec.num_classes, cfg.dense
    )


def build_quadratic(cfg: Any, spec: InputSpec) -> nn.Module:
    if spec.task != "regression" or len(spec.input_shape) != 1:
        raise ScenarioError("model.name", f"quadratic needs the quadratic data set; {_describe_input(spec)}")
    return dense.quadratic(spec.input_shape[0])


MODELS.add("logreg", build_logreg)
MODELS.add("mlp", build_mlp)
MODELS.add("dnn", build_dnn)
MODELS.add("cnn", build_cnn)
MODELS.add("char_lstm", build_char_lstm)
MODELS.add("quadratic", build_quadratic)


def build_model(cfg: ModelConfig, data: FederatedData) -> FlatModel:
    """The scenario's model for ``data`` (input shape, classes and task flow from the data).

    Parameters start from the module's initialisers; use :meth:`FlatModel.init` with the run seed
    for the initial flat vector."""
    spec = InputSpec.of(data)
    module = MODELS.get(cfg.name)(cfg, spec)
    return FlatModel.wrap(module, "regression" if cfg.name == "quadratic" else "classification")


def summary(model: FlatModel, name: str | None = None, dtype: torch.dtype = torch.float32) -> str:
    """Parameter count and wire size in bytes (the network model's transfer size, at ``dtype``),
    then one line per parameter tensor: name, shape, count. ``name`` labels the first line
    (default: the module's class)."""
    label = name or type(model.module).__name__
    head = (
        f"{label}: {model.num_params:,} parameters, {model.num_bytes(dtype):,} bytes "
        f"({str(dtype).removeprefix('torch.')})"
    )
    shapes = ["x".join(str(s) for s in shape) or "scalar" for shape in model.shapes]
    wn = max((len(n) for n in model.names), default=0)
    ws = max((len(s) for s in shapes), default=0)
    rows = [f"  {n:<{wn}}  {s:>{ws}}  {k:>12,}" for n, s, k in zip(model.names, shapes, model.numels, strict=True)]
    return "\n".join([head, *rows])


__all__ = [
    "MODELS",
    "ModelBuilder",
    "build_model",
    "summary",
]
