"""``data.dataset`` names -> data sets, and the one entry point :func:`build_data`.

A :class:`DataSet` is a builder ``fn(cfg, num_clients, seed, base_dir) -> FederatedData`` (``cfg``
is the scenario's ``data`` mapping, ``base_dir`` the scenario file's folder, against which a
relative ``data.root`` resolves; builders return CPU tensors, the runner moves them once with
:meth:`FederatedData.to`) and a footprint ``fn(cfg, num_clients) -> (samples, bytes per sample)``
computed from the keys alone, which the resource guard uses before anything is built. Plug-ins
of entry-point group ``asyncfl.datasets`` join :data:`DATASETS` with a ``DataSet`` as their
``build``; their config models are in :data:`asyncfl.config.schema.DATA_CONFIGS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncfl.config.schema import DataConfig, LeafData, QuadraticData, SyntheticData, TorchvisionData
from asyncfl.data.base import FederatedData
from asyncfl.data.leaf import build_leaf
from asyncfl.data.quadratic import build_quadratic
from asyncfl.data.synthetic import build_synthetic
from asyncfl.data.vision import build_vision
from asyncfl.errors import ScenarioError
from asyncfl.registry import Registry

DataBuilder = Callable[[Any, int, int, Path], FederatedData]
"""builder(cfg, num_clients, seed, base_dir) -> FederatedData on the CPU."""

Footprint = Callable[[Any, int], tuple[float, float]]
"""footprint(cfg, num_clients) -> (samples held in all, bytes per sample): an estimate from the
scenario's keys, before anything is read or generated."""


@dataclass(frozen=True)
class DataSet:
    """A registered data set: how to build it and how big it will be."""

    build: DataBuilder
    footprint: Footprint


DATASETS: Registry[DataSet] = Registry("data set", "data.dataset", plugin_part="build")


def resolve_root(root: str, base_dir: Path) -> Path:
    """``data.root`` as an absolute path: ``~`` expanded, relative paths against ``base_dir``."""
    p = Path(root).expanduser()
    return p if p.is_absolute() else (Path(base_dir) / p).resolve()


def _vision(cfg: TorchvisionData, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    return build_vision(cfg, num_clients, seed, base_dir, resolve_root(cfg.root, base_dir))


def _leaf(cfg: LeafData, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    return build_leaf(cfg, num_clients, seed, base_dir, resolve_root(cfg.root, base_dir))


def _synthetic_size(cfg: SyntheticData, num_clients: int) -> tuple[float, float]:
    """Lognormal client sizes: the mean, with headroom for the heavy tail when sigma > 1."""
    return num_clients * cfg.mean_samples * (2.0 if cfg.sigma_samples > 1 else 1.3), cfg.dimension * 4 + 8


def _quadratic_size(cfg: QuadraticData, num_clients: int) -> tuple[float, float]:
    """``dimension`` samples per client realise A_i, doubled for the held-out split."""
    return num_clients * cfg.dimension * 2, cfg.dimension * 4 + 8


# Samples and bytes per sample (features as float32) of the pooled torchvision sets.
_POOLED = {
    "mnist": (70_000, 28 * 28 * 4),
    "fashion_mnist": (70_000, 28 * 28 * 4),
    "emnist": (814_255, 28 * 28 * 4),
    "cifar10": (60_000, 3 * 32 * 32 * 4),
}


def _vision_size(cfg: TorchvisionData, num_clients: int) -> tuple[float, float]:
    samples, per_sample = _POOLED[cfg.dataset]
    if cfg.max_samples is not None:
        samples = min(samples, cfg.max_samples)
    return float(samples), float(per_sample)


def _leaf_size(cfg: LeafData, num_clients: int) -> tuple[float, float]:
    """The JSON files' bytes (``data.root`` made absolute by the runner; relative: the working
    directory), counted as bytes of one-byte samples: a number written in JSON takes more
    characters than its 4 float32 bytes, so this bounds femnist, shakespeare and sent140 from above.
    celeba's JSON names images; each adds image_size^2 x 3 float32 values. Missing files count 0
    (building then fails with DataNotFoundError)."""
    root = resolve_root(cfg.root, Path.cwd())
    files = [*root.glob("train/*.json"), *root.glob("test/*.json")]
    text = float(sum(f.stat().st_size for f in files))
    if cfg.task == "celeba":
        return text / 40.0, 40.0 + cfg.image_size**2 * 3 * 4  # ~40 JSON characters per image entry
    return text, 1.0


DATASETS.add("synthetic", DataSet(build_synthetic, _synthetic_size))
DATASETS.add("quadratic", DataSet(build_quadratic, _quadratic_size))
for _name in _POOLED:
    DATASETS.add(_name, DataSet(_vision, _vision_size))
DATASETS.add("leaf", DataSet(_leaf, _leaf_size))


def data_footprint(cfg: DataConfig, num_clients: int) -> tuple[float, float]:
    """(samples, bytes per sample) the data set of ``cfg`` will hold for ``num_clients`` clients."""
    return DATASETS.get(cfg.dataset).footprint(cfg, num_clients)


def build_data(cfg: DataConfig, num_clients: int, seed: int, base_dir: Path) -> FederatedData:
    """The scenario's federated data: ``num_clients`` clients, seeded by ``seed``, on the CPU.

    Raises :class:`~asyncfl.errors.DataNotFoundError` (files missing) or
    :class:`~asyncfl.errors.ScenarioError` (impossible settings), both one line, exit code 2."""
    if num_clients < 1:
        raise ScenarioError("clients.count", "need at least one client")
    return DATASETS.get(cfg.dataset).build(cfg, num_clients, seed, Path(base_dir))


__all__ = ["DATASETS", "DataBuilder", "DataSet", "Footprint", "build_data", "data_footprint", "resolve_root"]
