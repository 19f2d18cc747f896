"""What a model needs to know about the data: one sample's shape, its kind, the class count."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from asyncfl.data.base import FederatedData


@dataclass(frozen=True)
class InputSpec:
    """``input_shape``: one sample's feature shape; ``integer_input``: features are int64 token
    ids (characters, words) rather than floats; ``num_classes``: output width for classification
    (0 for regression); ``dataset``: the data set's name, for error messages; ``vocab_size``: the
    number of token ids (an embedding's rows) for integer input -- the data's own count (LEAF
    sent140: words + padding + unknown), else ``num_classes`` (Shakespeare: 81 characters are both
    inputs and targets); 0 for float input."""

    input_shape: tuple[int, ...]
    num_classes: int
    task: Literal["classification", "regression"]
    integer_input: bool
    dataset: str = ""
    vocab_size: int = 0

    @property
    def num_features(self) -> int:
        """Features after flattening one sample (e.g. 784 for 1 x 28 x 28)."""
        return math.prod(self.input_shape)

    @property
    def is_image(self) -> bool:
        """Channels x height x width float input."""
        return len(self.input_shape) == 3 and not self.integer_input

    @classmethod
    def of(cls, data: FederatedData) -> InputSpec:
        integer = not data.train_x.is_floating_point()
        return cls(
            input_shape=tuple(data.input_shape),
            num_classes=int(data.num_classes),
            task=data.task,
            integer_input=integer,
            dataset=data.name,
            vocab_size=(int(data.vocab_size) or int(data.num_classes)) if integer else 0,
        )


__all__ = ["InputSpec"]
