"""MNIST, Fashion-MNIST, EMNIST and CIFAR-10 from torchvision's on-disk layouts.

Files are looked for where ``torchvision.datasets.<Class>(root)`` keeps them, ``root`` being
``data.root`` resolved against the scenario file's folder:

- mnist:          root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
- fashion_mnist:  root/FashionMNIST/raw/ (same names)
- emnist:         root/EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]
- cifar10:        root/cifar-10-batches-py/{data_batch_1..5,test_batch}

With ``data.download: true`` missing files are fetched with torchvision's own downloaders (the
MNIST family's classes read IDX files only; for CIFAR-10 only the archive is downloaded and
extracted, the batches are then read here with a restricted unpickler). Missing files that cannot
be fetched raise :class:`DataNotFoundError`, one line naming the files, the folder and the fix.

The official train and test splits are pooled (as in pFedMe and Per-FedAvg), capped to
``data.max_samples`` (seeded), partitioned over clients by ``data.partition`` /
``data.quantity_skew``, and each client's samples split into train/test by ``data.test_fraction``
(stratified). The global test set is the union of the client test sets. Features: float32, pixel
/ 255 standardised with the data set's usual per-channel mean and std (below); EMNIST images are
transposed to upright (the IDX files store them transposed); EMNIST ``letters`` labels 1..26 are
shifted to 0..25.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asyncfl.config.schema import TorchvisionData
from asyncfl.data.base import FederatedData
from asyncfl.data.files import read_cifar_batch, read_idx
from asyncfl.data.pack import build_pooled
from asyncfl.errors import DataNotFoundError


@dataclass(frozen=True)
class VisionSpec:
    """Where a torchvision data set lives and how to standardise it."""

    folder: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    input_shape: tuple[int, int, int]


SPECS: dict[str, VisionSpec] = {
    "mnist": VisionSpec("MNIST/raw", (0.1307,), (0.3081,), 10, (1, 28, 28)),
    "fashion_mnist": VisionSpec("FashionMNIST/raw", (0.2860,), (0.3530,), 10, (1, 28, 28)),
    "emnist": VisionSpec("EMNIST/raw", (0.1751,), (0.3332,), 47, (1, 28, 28)),
    "cifar10": VisionSpec("cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10, (3, 32, 32)),
}

EMNIST_CLASSES: dict[str, int] = {
    "byclass": 62,
    "bymerge": 47,
    "balanced": 47,
    "letters": 26,
    "digits": 10,
    "mnist": 10,
}

CIFAR_FILES = (*tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def idx_names(dataset: str, split: str) -> list[str]:
    """IDX file stems (train images, train labels, test images, test labels)."""
    if dataset == "emnist":
        return [
            f"emnist-{split}-{part}-{kind}-ubyte"
            for part in ("train", "test")
            for kind in ("images-idx3", "labels-idx1")
        ]
    return [f"{part}-{kind}-ubyte" for part in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]


def _find(folder: Path, stem: str) -> Path | None:
    for p in (folder / stem, folder / f"{stem}.gz"):
        if p.is_file():
            return p
    return None


def _missing_error(dataset: str, folder: Path, names: list[str], download: bool, reason: str = "") -> DataNotFoundError:
    looked = ", ".join(names)
    fix = (
        f"download failed ({reason}); copy them there or check the network"
        if download
        else "set data.download=true (needs network) or copy them there"
    )
    return DataNotFoundError(f"data.root: {dataset} files not found in {folder} (looked for {looked}); {fix}")


def download(dataset: str, root: Path, split: str) -> None:
    """Fetch ``dataset`` into ``root`` with torchvision's downloaders (network needed)."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    root.mkdir(parents=True, exist_ok=True)
    if dataset == "cifar10":
        # Only download + extract: torchvision's CIFAR10 class would unpickle the batches.
        download_and_extract_archive(tvd.CIFAR10.url, str(root), filename=tvd.CIFAR10.filename, md5=tvd.CIFAR10.tgz_md5)
    elif dataset == "mnist":
        tvd.MNIST(str(root), train=True, download=True)
    elif dataset == "fashion_mnist":
        tvd.FashionMNIST(str(root), train=True, download=True)
    elif dataset == "emnist":
        tvd.EMNIST(str(root), split=split, train=True, download=True)
    else:  # pragma: no cover - guarded by the schema
        raise ValueError(dataset)


def _ensure(
    dataset: str, folder: Path, names: list[str], cfg: TorchvisionData, root: Path, found: Callable[[], bool]
) -> None:
    if found():
        return
    if not cfg.download:
        raise _missing_error(dataset, folder, names, False)
    try:
        download(dataset, root, cfg.split)
    except Exception as exc:  # any network / archive failure becomes one clear line
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise _missing_error(dataset, folder, names, True, reason) from None
    if not found():
        raise _missing_error(dataset, folder, names, True, "files still missing after download")


def load_idx_pool(dataset: str, root: Path, cfg: TorchvisionData) -> tuple[np.ndarray, np.ndarray]:
    """Pooled official train + test: images uint8 [N, 1, 28, 28], labels int64 [N]."""
    folder = root / SPECS[dataset].folder
    stems = idx_names(dataset, cfg.split)
    _ensure(dataset, folder, [f"{s}[.gz]" for s in stems], cfg, root, lambda: all(_find(folder, s) for s in stems))
    arrays = []
    for s in stems:
        path = _find(folder, s)
        assert path is not None
        arrays.append(read_idx(path))
    tr_x, tr_y, te_x, te_y = arrays
    for img, lab, part in ((tr_x, tr_y, "train"), (te_x, te_y, "test")):
        if img.ndim != 3 or len(img) != len(lab):
            raise DataNotFoundError(
                f"data.root: {dataset} {part} files in {folder} disagree: images {img.shape}, labels {lab.shape}"
            )
    x = np.concatenate([tr_x, te_x])[:, None, :, :]
    y = np.concatenate([tr_y, te_y]).astype(np.int64)
    if dataset == "emnist":
        x = np.ascontiguousarray(x.transpose(0, 1, 3, 2))
        if cfg.split == "letters":
            y = y - 1
    return x, y


def load_cifar_pool(root: Path, cfg: TorchvisionData) -> tuple[np.ndarray, np.ndarray]:
    """Pooled CIFAR-10 batches: images uint8 [N, 3, 32, 32], labels int64 [N]."""
    folder = root / SPECS["cifar10"].folder
    _ensure("cifar10", folder, list(CIFAR_FILES), cfg, root, lambda: all((folder / f).is_file() for f in CIFAR_FILES))
    parts = [read_cifar_batch(folder / f) for f in CIFAR_FILES]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def standardiser(mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images [n, C, H, W] -> float32 (x / 255 - mean_c) / std_c."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)

    def apply(rows: np.ndarray) -> np.ndarray:
        return ((rows.astype(np.float32) / np.float32(255.0)) - m) / s

    return apply


def build_vision(cfg: TorchvisionData, num_clients: int, seed: int, base_dir: Path, root: Path) -> FederatedData:
    """A torchvision data set, pooled and partitioned over ``num_clients`` clients."""
    spec = SPECS[cfg.dataset]
    if cfg.dataset == "cifar10":
        x, y = load_cifar_pool(root, cfg)
    else:
        x, y = load_idx_pool(cfg.dataset, root, cfg)
    num_classes = EMNIST_CLASSES[cfg.split] if cfg.dataset == "emnist" else spec.num_classes
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataNotFoundError(
            f"data.root: {cfg.dataset} labels span {int(y.min())}..{int(y.max())}, outside 0..{num_classes - 1}"
        )
    name = f"emnist-{cfg.split}" if cfg.dataset == "emnist" else cfg.dataset
    return build_pooled(
        x,
        y,
        cfg,
        num_clients,
        seed,
        num_classes=num_classes,
        input_shape=spec.input_shape,
        name=name,
        transform=standardiser(spec.mean, spec.std),
        max_samples=cfg.max_samples,
    )


__all__ = [
    "EMNIST_CLASSES",
    "SPECS",
    "VisionSpec",
    "build_vision",
    "download",
    "idx_names",
    "load_cifar_pool",
    "load_idx_pool",
]
