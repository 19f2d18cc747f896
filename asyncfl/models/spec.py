"""What a model needs to know about the data: one sample's shape, its kind, the class count."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from asyncfl.data.base import FederatedData


@dataclass(frozen=True)
class InputSpec:
    """``input_shape``: one sample's feature shape; ``integer_input``: features are int64 ids
    (characters) rather than floats; ``num_classes``: output width for classification (0 for
    regression); ``dataset``: the data set's name, for error messages."""

    input_shape: tuple[int, ...]
    num_classes: int
    task: Literal["classification", "regression"]
    integer_input: bool
    dataset: str = ""

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
        return cls(
            input_shape=tuple(data.input_shape),
            num_classes=int(data.num_classes),
            task=data.task,
            integer_input=not data.train_x.is_floating_point(),
            dataset=data.name,
        )


__all__ = ["InputSpec"]
