"""``data.dataset`` names -> builders, and the one entry point :func:`build_data`.

A builder is ``fn(cfg, num_clients, seed, base_dir) -> FederatedData``: ``cfg`` is the scenario's
``data`` mapping, ``base_dir`` the scenario file's folder (a relative ``data.root`` resolves
against it). Builders return CPU tensors; the runner moves them once with
:meth:`FederatedData.to`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncfl.config.schema import DataConfig, LeafData, TorchvisionData
from asyncfl.data.base import FederatedData
from asyncfl.data.leaf import build_leaf
from asyncfl.data.quadratic import build_quadratic
from asyncfl.data.synthetic import build_synthetic
from asyncfl.data.vision import build_vision
from asyncfl.errors import ScenarioError
from asyncfl.registry import Registry

DataBuilder = Callable[[Any, int, int, Path], FederatedData]
"""builder(cfg, num_clients, seed, base_dir) -> FederatedData on the CPU."""

DATASETS: Registry[DataBuilder] = Registry("data set", "data.dataset")


def resolve_root(root: str, base_dir: Path) -> Path:
    """``data.root`` as an absolute path: ``~`` expanded, relative paths against ``base_dir``."""
    p = Path(root).expanduser()
    return p if p.is_absolute() else (Path(base_dir) / p).resolve()


def _vision(cfg: TorchvisionData, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    return build_vision(cfg, num_clients, seed, base_dir, resolve_root(cfg.root, base_dir))


def _leaf(cfg: LeafData, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    return build_leaf(cfg, num_clients, seed, base_dir, resolve_root(cfg.root, base_dir))


DATASETS.add("synthetic", build_synthetic)
DATASETS.add("quadratic", build_quadratic)
for _name in ("mnist", "fashion_mnist", "emnist", "cifar10"):
    DATASETS.add(_name, _vision)
DATASETS.add("leaf", _leaf)


def build_data(cfg: DataConfig, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    """The scenario's federated data: ``num_clients`` clients, seeded by ``seed``, on the CPU.

    Raises :class:`~asyncfl.errors.DataNotFoundError` (files missing) or
    :class:`~asyncfl.errors.ScenarioError` (impossible settings), both one line, exit code 2."""
    if num_clients < 1:
        raise ScenarioError("clients.count", "need at least one client")
    return DATASETS.get(cfg.dataset)(cfg, num_clients, seed, Path(base_dir))


__all__ = ["DATASETS", "DataBuilder", "build_data", "resolve_root"]
