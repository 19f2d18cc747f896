"""LEAF benchmark data (Caldas et al. 2018) from the JSON files its preprocessing writes.

Layout: ``data.root``/train/*.json and ``data.root``/test/*.json, each file
``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}``
(other keys such as ``hierarchies`` are ignored). Files are read in name order; a user's samples
from several files are concatenated.

Tasks (``data.task``):

- ``femnist``: x = 784 floats (a 28 x 28 image as LEAF stores it, values kept as they are), y in
  0..61; features [1, 28, 28] float32, 62 classes.
- ``shakespeare``: x = an 80-character string, y = the next character. Characters become ids in
  LEAF's letter table :data:`ALL_LETTERS` (80 symbols); a character outside it (LEAF's ``find``
  gives -1) gets the extra id 80, so features are int64 [80] and there are 81 classes.
- ``sent140``, ``celeba``: not supported yet (ScenarioError).

``natural`` partition (the default): each client is one LEAF user with LEAF's own train/test
split (``data.test_fraction`` is ignored). Users with no test sample or fewer than
``data.min_samples`` samples (train + test) are skipped; if more users remain than
``clients.count``, a seeded sample of them (stream ``data.leaf.users``) is kept, in file order.
Another partition pools all users' samples and re-partitions them like a torchvision data set.
The global test set is the union of the clients' test sets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from asyncfl.config.schema import LeafData
from asyncfl.data.base import FederatedData
from asyncfl.data.pack import build_pooled, pack, require_no_quantity_skew
from asyncfl.errors import DataNotFoundError, ScenarioError
from asyncfl.rng import numpy_generator

ALL_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
"""LEAF's Shakespeare letter table (models/utils/language_utils.py): id = position."""

UNKNOWN_CHAR = len(ALL_LETTERS)
"""Id of a character outside :data:`ALL_LETTERS` (80)."""

_CHAR_IDS = {ch: i for i, ch in enumerate(ALL_LETTERS)}

FEMNIST_CLASSES = 62


def char_ids(text: str) -> list[int]:
    """Ids of ``text``'s characters in LEAF's table (unknown -> :data:`UNKNOWN_CHAR`)."""
    return [_CHAR_IDS.get(ch, UNKNOWN_CHAR) for ch in text]


UserData = dict[str, dict[str, list[Any]]]


def read_folder(folder: Path) -> tuple[list[str], UserData]:
    """Users (in file order, first appearance) and their merged samples from ``folder``/*.json."""
    users: list[str] = []
    data: UserData = {}
    for path in sorted(folder.glob("*.json")):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            file_users = [str(u) for u in obj["users"]]
            user_data = obj["user_data"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise DataNotFoundError(
                f"data.root: {path} is not a LEAF JSON file ({type(exc).__name__}: {exc})"
            ) from None
        for u in file_users:
            ud = user_data.get(u)
            if ud is None:
                raise DataNotFoundError(f"data.root: {path} lists user {u!r} without user_data")
            if u not in data:
                users.append(u)
                data[u] = {"x": [], "y": []}
            data[u]["x"].extend(ud["x"])
            data[u]["y"].extend(ud["y"])
    return users, data


def _encode(task: str, xs: list[Any], ys: list[Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """LEAF samples -> (features, int64 labels) for ``task``."""
    x: np.ndarray
    if task == "femnist":
        x = np.asarray(xs, dtype=np.float32)
        if x.size and (x.ndim != 2 or x.shape[1] != 784):
            raise DataNotFoundError(f"data.root: femnist samples in {where} must be 784 floats; got shape {x.shape}")
        y = np.asarray(ys, dtype=np.int64)
        if y.size and (y.min() < 0 or y.max() >= FEMNIST_CLASSES):
            raise DataNotFoundError(f"data.root: femnist labels in {where} must lie in 0..61")
        return x.reshape(-1, 1, 28, 28), y
    # shakespeare
    lengths = {len(s) for s in xs}
    if len(lengths) > 1:
        raise DataNotFoundError(f"data.root: shakespeare strings in {where} differ in length ({sorted(lengths)[:5]})")
    x = np.asarray([char_ids(s) for s in xs], dtype=np.int64).reshape(len(xs), -1)
    if any(len(s) != 1 for s in ys):
        raise DataNotFoundError(f"data.root: shakespeare targets in {where} must be single characters")
    y = np.asarray([_CHAR_IDS.get(s, UNKNOWN_CHAR) for s in ys], dtype=np.int64)
    return x, y


def build_leaf(cfg: LeafData, num_clients: int, seed: int, base_dir: Path, root: Path) -> FederatedData:
    """LEAF users as clients (natural), or LEAF samples pooled and re-partitioned."""
    if cfg.task in ("sent140", "celeba"):
        raise ScenarioError("data.task", f"leaf {cfg.task} is not supported yet; supported: femnist, shakespeare")
    train_dir, test_dir = root / "train", root / "test"
    have = train_dir.is_dir() and test_dir.is_dir() and any(train_dir.glob("*.json")) and any(test_dir.glob("*.json"))
    if not have:
        how = (
            ("data.download is not available for leaf; " if cfg.download else "")
            + f"run LEAF's preprocessing (github.com/TalwalkarLab/leaf, data/{cfg.task}/preprocess.sh) and set data.root to the folder holding train/ and test/"
        )
        raise DataNotFoundError(
            f"data.root: leaf {cfg.task} JSON files not found in {train_dir} and {test_dir} (looked for *.json); {how}"
        )
    tr_users, tr_data = read_folder(train_dir)
    _, te_data = read_folder(test_dir)
    eligible = [
        u
        for u in tr_users
        if u in te_data
        and len(te_data[u]["y"]) >= 1
        and len(tr_data[u]["y"]) >= 1
        and len(tr_data[u]["y"]) + len(te_data[u]["y"]) >= cfg.min_samples
    ]
    if len(eligible) < num_clients and cfg.partition.name == "natural":
        raise ScenarioError(
            "clients.count",
            f"{num_clients} clients but only {len(eligible)} leaf users in {root} have train and test samples "
            f"and at least data.min_samples={cfg.min_samples}",
        )
    if cfg.partition.name == "natural" and len(eligible) > num_clients:
        pick = numpy_generator(seed, "data.leaf.users").choice(len(eligible), size=num_clients, replace=False)
        eligible = [eligible[i] for i in np.sort(pick)]
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    start = 0
    for u in eligible:
        for part, store in ((tr_data[u], train), (te_data[u], test)):
            x, y = _encode(cfg.task, part["x"], part["y"], f"user {u}")
            xs.append(x)
            ys.append(y)
            store.append(np.arange(start, start + len(y), dtype=np.int64))
            start += len(y)
    if not xs:
        raise DataNotFoundError(f"data.root: no usable leaf users in {root}")
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    num_classes = FEMNIST_CLASSES if cfg.task == "femnist" else UNKNOWN_CHAR + 1
    input_shape = tuple(int(s) for s in x_all.shape[1:])
    name = f"leaf-{cfg.task}"
    if cfg.partition.name != "natural":
        return build_pooled(
            x_all, y_all, cfg, num_clients, seed, num_classes=num_classes, input_shape=input_shape, name=name
        )
    require_no_quantity_skew(cfg, "leaf users keep their own sizes")
    users = np.array(eligible)
    return pack(
        x_all, y_all, train, test, num_classes=num_classes, input_shape=input_shape, name=name, extras={"users": users}
    )


__all__ = ["ALL_LETTERS", "FEMNIST_CLASSES", "UNKNOWN_CHAR", "build_leaf", "char_ids", "read_folder"]
