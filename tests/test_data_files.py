"""Data sets read from files: torchvision layouts (IDX raw and gz, CIFAR-10 python batches) and
LEAF JSON, all written in tmp_path in the real formats; missing-data errors; the real MNIST subset."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from asyncfl.config.schema import (
    ClassesPerClientPartition,
    DirichletPartition,
    IidPartition,
    LeafData,
    NaturalPartition,
    ShardsPartition,
    TorchvisionData,
)
from asyncfl.data import build_data
from asyncfl.data import vision as vision_module
from asyncfl.data.fake import write_fake_idx_dataset, write_fake_leaf
from asyncfl.data.files import read_cifar_batch, read_idx, write_idx
from asyncfl.data.leaf import ALL_LETTERS, UNKNOWN_CHAR, char_ids
from asyncfl.errors import DataNotFoundError, ScenarioError

MNIST_5K = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-5k"
VisionName = Literal["mnist", "fashion_mnist", "emnist", "cifar10"]  # data.dataset of TorchvisionData
LeafTask = Literal["femnist", "shakespeare", "sent140", "celeba"]  # data.task of LeafData


def _check_layout(d, n_total: int) -> None:
    """Clients back to back, train/test disjoint, every pool sample used once."""
    tr, te = d.extras["train_index"], d.extras["test_index"]
    both = np.concatenate([tr, te])
    assert len(both) == len(np.unique(both)) == n_total
    assert int(d.train_sizes.sum()) == len(d.train_y) and int(d.test_sizes.sum()) == len(d.test_y)
    assert (d.train_offsets[1:] == torch.cumsum(d.train_sizes, 0)[:-1]).all()
    assert d.global_x is d.test_x


# ------------------------------------------------------------------------------------------------
# IDX / MNIST family
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    raw = path.read_bytes()
    if not gz:
        assert raw[:4] == bytes([0, 0, 8, 3]) and int.from_bytes(raw[4:8], "big") == 2
    assert np.array_equal(read_idx(path), arr)


def test_idx_bad_magic_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(DataNotFoundError, match="not an IDX file"):
        read_idx(tmp_path / "x")


@pytest.mark.parametrize(
    ("dataset", "gz"), [("mnist", False), ("mnist", True), ("fashion_mnist", True), ("emnist", False)]
)
def test_mnist_family_from_torchvision_layout(tmp_path: Path, dataset: VisionName, gz: bool) -> None:
    write_fake_idx_dataset(tmp_path / "data", dataset, n_train=300, n_test=100, gz=gz)
    cfg = TorchvisionData(dataset=dataset, root="data", partition=DirichletPartition(alpha=0.5))
    d = build_data(cfg, 8, 0, tmp_path)  # root resolves against the scenario folder
    assert d.input_shape == (1, 28, 28) and d.train_x.dtype == torch.float32
    assert d.num_classes == (47 if dataset == "emnist" else 10)
    _check_layout(d, 400)
    assert -1.0 < float(d.train_x.mean()) < 2.0  # standardised, not raw 0..255


def test_emnist_letters_shift_and_transpose(tmp_path: Path) -> None:
    folder = write_fake_idx_dataset(tmp_path, "emnist", n_train=52, n_test=26, split="letters")
    d = build_data(TorchvisionData(dataset="emnist", split="letters", root=str(tmp_path)), 2, 0, tmp_path)
    assert d.num_classes == 26 and d.name == "emnist-letters"
    y = torch.cat([d.train_y, d.test_y])
    assert int(y.min()) == 0 and int(y.max()) == 25
    raw = read_idx(folder / "emnist-letters-train-images-idx3-ubyte")
    row = int(np.flatnonzero(d.extras["train_index"] < 52)[0])  # a sample from the official train file
    i = int(d.extras["train_index"][row])
    expected = (raw[i].T.astype(np.float32) / 255 - 0.1751) / 0.3332
    np.testing.assert_allclose(d.train_x[row, 0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_max_samples_caps_the_pool(tmp_path: Path) -> None:
    write_fake_idx_dataset(tmp_path, "mnist", n_train=300, n_test=100)
    d = build_data(TorchvisionData(root=str(tmp_path), max_samples=120), 6, 0, tmp_path)
    _check_layout(d, 120)
    assert np.array_equal(
        d.extras["train_index"],
        build_data(TorchvisionData(root=str(tmp_path), max_samples=120), 6, 0, tmp_path).extras["train_index"],
    )


def test_classes_per_client_on_images_and_natural_refused(tmp_path: Path) -> None:
    write_fake_idx_dataset(tmp_path, "mnist", n_train=400, n_test=100)
    cfg = TorchvisionData(root=str(tmp_path), partition=ClassesPerClientPartition(k=2))
    d = build_data(cfg, 10, 0, tmp_path)
    for i in range(10):
        tr, te = d.client_train(i)[1], d.client_test(i)[1]
        assert len(torch.unique(tr)) == 2
        assert set(te.tolist()) <= set(tr.tolist())  # test labels follow the client's training labels
    with pytest.raises(ScenarioError, match=r"data\.partition"):
        build_data(TorchvisionData(root=str(tmp_path), partition=NaturalPartition()), 4, 0, tmp_path)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "emnist", "cifar10"])
def test_missing_files_one_line_error(tmp_path: Path, dataset: VisionName) -> None:
    with pytest.raises(DataNotFoundError) as info:
        build_data(TorchvisionData(dataset=dataset, root="nowhere"), 4, 0, tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and info.value.exit_code == 2
    assert msg.startswith("data.root:") and "data.download=true" in msg
    assert str(tmp_path / "nowhere") in msg
    assert ("test_batch" if dataset == "cifar10" else "-labels-idx1-ubyte") in msg


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(dataset: str, root: Path, split: str) -> None:
        raise OSError("network is unreachable\nsecond line")

    monkeypatch.setattr(vision_module, "download", offline)
    with pytest.raises(DataNotFoundError, match="download failed") as info:
        build_data(TorchvisionData(root=str(tmp_path), download=True), 4, 0, tmp_path)
    assert "\n" not in str(info.value) and "unreachable" in str(info.value)


# ------------------------------------------------------------------------------------------------
# CIFAR-10 python batches (pickle.dump here, in the test only)
# ------------------------------------------------------------------------------------------------

CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _write_cifar(root: Path, per_batch: int = 20, protocol: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for j, name in enumerate(CIFAR_NAMES):
        batch = {
            "batch_label": f"batch {j}",
            "labels": [int(v) for v in (np.arange(per_batch) + j) % 10],
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"f{j}_{i}.png" for i in range(per_batch)],
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
    return folder


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batches(tmp_path: Path, protocol: int) -> None:
    _write_cifar(tmp_path, protocol=protocol)
    d = build_data(TorchvisionData(dataset="cifar10", root=str(tmp_path), partition=ShardsPartition()), 6, 0, tmp_path)
    assert d.input_shape == (3, 32, 32) and tuple(d.train_x.shape[1:]) == (3, 32, 32)
    _check_layout(d, 120)


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR batch as Python 2's cPickle (protocol 2) wrote the real files: py2 ``str`` payloads
    (BINSTRING) and numpy.core.multiarray._reconstruct, hand-assembled opcode by opcode."""

    def sbs(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    n, k = data.shape
    raw = data.tobytes()
    return b"".join(
        [
            b"\x80\x02}(",  # PROTO 2, EMPTY_DICT, MARK
            sbs(b"data"),
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + sbs(b"b") + b"\x87R",
            b"(K\x01M" + struct.pack("<H", n) + b"M" + struct.pack("<H", k) + b"\x86",
            b"cnumpy\ndtype\n" + sbs(b"u1") + b"K\x00K\x01\x87R",
            b"(K\x03" + sbs(b"|") + b"NNNJ" + struct.pack("<i", -1) + b"J" + struct.pack("<i", -1) + b"K\x00tb",
            b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tb",
            sbs(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e",
            b"u.",
        ]
    )


def test_cifar_python2_pickles_like_the_real_files(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path)
    data = np.random.default_rng(1).integers(0, 256, (20, 3072), dtype=np.uint8)
    (folder / "data_batch_2").write_bytes(_py2_batch(data, [i % 10 for i in range(20)]))
    x, y = read_cifar_batch(folder / "data_batch_2")
    assert np.array_equal(x.reshape(20, -1), data) and y.tolist() == [i % 10 for i in range(20)]
    d = build_data(TorchvisionData(dataset="cifar10", root=str(tmp_path)), 4, 0, tmp_path)
    _check_layout(d, 120)


class _Evil:
    def __reduce__(self):  # what a tampered file would carry
        return (os.system, ("echo pwned",))


def test_cifar_reader_refuses_code(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path)
    with (folder / "data_batch_3").open("wb") as fh:
        pickle.dump({"data": _Evil(), "labels": [0]}, fh, protocol=2)
    with pytest.raises(DataNotFoundError, match="not allowed"):
        build_data(TorchvisionData(dataset="cifar10", root=str(tmp_path)), 2, 0, tmp_path)


# ------------------------------------------------------------------------------------------------
# LEAF JSON
# ------------------------------------------------------------------------------------------------


def test_leaf_femnist_natural_users(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path / "femnist", "femnist", users=6)
    blobs = [json.loads(p.read_text()) for p in sorted((tmp_path / "femnist" / "train").glob("*.json"))]
    tests = [json.loads(p.read_text()) for p in sorted((tmp_path / "femnist" / "test").glob("*.json"))]
    d = build_data(LeafData(root="femnist"), 6, 0, tmp_path)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 62 and d.name == "leaf-femnist"
    users = [u for b in blobs for u in b["users"]]
    assert list(d.extras["users"]) == users
    train_n = [n for b in blobs for n in b["num_samples"]]
    test_n = [n for b in tests for n in b["num_samples"]]
    assert d.train_sizes_np.tolist() == train_n and d.test_sizes_np.tolist() == test_n
    first = blobs[0]["user_data"][users[0]]
    np.testing.assert_allclose(d.train_x[0].reshape(-1).numpy(), np.array(first["x"][0], dtype=np.float32))
    assert int(d.train_y[0]) == first["y"][0]
    _check_layout(d, sum(train_n) + sum(test_n))


def test_leaf_user_subset_is_seeded_and_bounded(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path, "femnist", users=6)
    a = build_data(LeafData(root=str(tmp_path)), 3, 0, tmp_path)
    b = build_data(LeafData(root=str(tmp_path)), 3, 0, tmp_path)
    assert list(a.extras["users"]) == list(b.extras["users"]) and a.num_clients == 3
    with pytest.raises(ScenarioError, match=r"clients\.count"):
        build_data(LeafData(root=str(tmp_path)), 7, 0, tmp_path)
    pooled = build_data(LeafData(root=str(tmp_path), partition=IidPartition()), 4, 0, tmp_path)
    assert pooled.num_clients == 4


def test_leaf_shakespeare_char_ids(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path, "shakespeare", users=3)
    d = build_data(LeafData(root=str(tmp_path), task="shakespeare"), 3, 0, tmp_path)
    assert d.train_x.dtype == torch.int64 and d.input_shape == (80,)
    assert d.num_classes == len(ALL_LETTERS) + 1 == 81
    assert int(d.train_x.max()) <= UNKNOWN_CHAR and int(d.train_y.max()) <= UNKNOWN_CHAR
    assert char_ids("\n}a~") == [0, 79, ALL_LETTERS.index("a"), UNKNOWN_CHAR]
    # the fake data ends in "~" (outside LEAF's table) and client 0's first training string reaches it
    assert UNKNOWN_CHAR in d.client_train(0)[1].tolist() or UNKNOWN_CHAR in d.client_train(0)[0].reshape(-1).tolist()


def test_leaf_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        build_data(LeafData(root="missing"), 2, 0, tmp_path)
    assert "\n" not in str(info.value) and "preprocess.sh" in str(info.value)


def test_leaf_bad_json_is_a_data_error(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path, "femnist", users=2, files=1)
    next((tmp_path / "train").glob("*.json")).write_text("{not json")
    with pytest.raises(DataNotFoundError, match="not a LEAF JSON file"):
        build_data(LeafData(root=str(tmp_path)), 2, 0, tmp_path)


@pytest.mark.parametrize(("written", "task"), [("femnist", "shakespeare"), ("shakespeare", "femnist")])
def test_leaf_files_of_another_task_are_a_data_error(tmp_path: Path, written: str, task: LeafTask) -> None:
    """femnist pixels read as shakespeare text (or the reverse) name the task, in one line."""
    write_fake_leaf(tmp_path, written, users=2, files=1)
    with pytest.raises(DataNotFoundError, match=f"do not look like LEAF {task} data") as info:
        build_data(LeafData(root=str(tmp_path), task=task), 2, 0, tmp_path)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------
# The real MNIST subset in ../shared (skips where absent)
# ------------------------------------------------------------------------------------------------


def test_real_mnist_5k_two_digits_per_client() -> None:
    if not (MNIST_5K / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST subset not found at {MNIST_5K}")
    cfg = TorchvisionData(dataset="mnist", root=str(MNIST_5K), partition=ClassesPerClientPartition(k=2))
    d = build_data(cfg, 20, 0, Path("."))
    _check_layout(d, 5000)
    for i in range(20):
        assert len(torch.unique(d.client_train(i)[1])) == 2
    assert abs(float(d.train_x.mean())) < 0.1 and 0.9 < float(d.train_x.std()) < 1.1
    counts = np.bincount(torch.cat([d.train_y, d.test_y]).numpy(), minlength=10)
    assert counts.tolist() == [500] * 10
