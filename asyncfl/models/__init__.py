"""Networks written for torch.func (functional_call over a flat parameter vector).

Entry points: :func:`build_model` (scenario ``model`` mapping + data -> :class:`FlatModel`) and
:func:`summary` (parameter count and bytes).
"""

from asyncfl.models.base import FlatModel
from asyncfl.models.registry import MODELS, build_model, summary
from asyncfl.models.spec import InputSpec

__all__ = ["MODELS", "FlatModel", "InputSpec", "build_model", "summary"]
