"""Tiny stand-ins written in the REAL on-disk formats, for tests and offline examples.

Each writer lays files out exactly where the loaders (and torchvision) look for them, so a
scenario pointed at the folder runs without network. (CIFAR-10's pickled batches are written by
the tests themselves; the package writes no pickles.) Pixels are seeded noise plus a label-
dependent bright block, so simple models can learn them; labels cycle through the classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from asyncfl.data.files import write_idx
from asyncfl.data.leaf import ALL_LETTERS
from asyncfl.data.vision import EMNIST_CLASSES, SPECS, idx_names


def _images(n: int, labels: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    x = rng.integers(0, 64, size=(n, *shape), dtype=np.uint8)
    h = shape[-2]
    for i, lab in enumerate(labels):
        r = (int(lab) * 3) % (h - 4)
        x[i, ..., r : r + 4, 2:10] = 250
    return x


def write_fake_idx_dataset(
    root: Path,
    dataset: str = "mnist",
    n_train: int = 200,
    n_test: int = 50,
    split: str = "balanced",
    gz: bool = False,
    seed: int = 0,
) -> Path:
    """MNIST / Fashion-MNIST / EMNIST IDX files under ``root`` in torchvision's layout; returns
    the raw folder. EMNIST ``letters`` labels are written as 1..26, as in the real files."""
    folder = Path(root) / SPECS[dataset].folder
    k = EMNIST_CLASSES[split] if dataset == "emnist" else 10
    rng = np.random.default_rng(seed)
    stems = idx_names(dataset, split)
    for (img_stem, lab_stem), n in zip((stems[0:2], stems[2:4]), (n_train, n_test), strict=True):
        labels = (np.arange(n) % k).astype(np.uint8)
        labels = rng.permutation(labels)
        images = _images(n, labels, (28, 28), rng)
        if dataset == "emnist" and split == "letters":
            labels = labels + 1
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{img_stem}{suffix}", images)
        write_idx(folder / f"{lab_stem}{suffix}", labels)
    return folder


SENT140_POSITIVE = ("love", "great", "happy", "good", "awesome", "thanks")
SENT140_NEGATIVE = ("sad", "hate", "bad", "awful", "tired", "sick")
SENT140_FILLER = (*(f"w{i}" for i in range(30)), "the", "a", "i", "you", "it's", "today", "@friend")
SENT140_TEST_ONLY = "unseenword"
"""A token every fake sent140 TEST text holds and no training text does."""


def _tweet(rng: np.random.Generator, label: int, test: bool) -> str:
    n = int(rng.integers(2, 33))  # some tweets exceed LEAF's 25 words
    words = list(rng.choice(SENT140_FILLER, size=n))
    cue = SENT140_POSITIVE if label else SENT140_NEGATIVE
    for pos in rng.choice(n, size=min(n, 3), replace=False):
        words[int(pos)] = str(rng.choice(cue))
    if test:
        words.insert(int(rng.integers(0, n)), SENT140_TEST_ONLY)
    words[0] = words[0].capitalize()
    return " ".join(words) + str(rng.choice([".", "!", "?", " ;)", "..."]))


def _face(rng: np.random.Generator, label: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 [height, width, 3]: noise, a skin-toned oval, and a bright mouth band if smiling."""
    img = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    oval = ((yy - height * 0.5) / (height * 0.35)) ** 2 + ((xx - width * 0.5) / (width * 0.3)) ** 2 <= 1.0
    img[oval] = (200, 160, 130)
    if label:
        r0, r1 = int(height * 0.62), int(height * 0.7)
        img[r0:r1, int(width * 0.35) : int(width * 0.65)] = 250
    return img


def write_fake_leaf(
    root: Path,
    task: str = "femnist",
    users: int = 6,
    train_per_user: tuple[int, int] = (8, 16),
    test_per_user: tuple[int, int] = (2, 5),
    files: int = 2,
    seed: int = 0,
    image_size: tuple[int, int] = (178, 218),
) -> Path:
    """LEAF JSON files ``root``/train/*.json and ``root``/test/*.json (users split over ``files``
    files) in the format LEAF's preprocessing writes. femnist: 784 floats in [0, 1] and labels
    0..61; shakespeare: 80-char strings and the next character; sent140: [tweet id, date, query,
    user, text] and the sentiment 0 / 1 (texts carry label cue words, some exceed 25 words, and
    every test text holds :data:`SENT140_TEST_ONLY`); celeba: image file names and smiling as
    0.0 / 1.0 (as LEAF writes it), with the JPEGs (``image_size`` = width x height pixels, 178 x
    218 like CelebA's aligned images) in ``root``/raw/img_align_celeba, LEAF's layout.
    Returns ``root``."""
    rng = np.random.default_rng(seed)
    prefix = {"sent140": "tw_user", "celeba": ""}.get(task, "f_")
    names = [f"{prefix}{i:04d}" for i in range(users)]
    text = "".join(rng.choice(list(ALL_LETTERS[1:]), size=4000)) + "~"  # one character outside the table
    images = Path(root) / "raw" / "img_align_celeba"
    counter = [0]

    def sample(user: int, n: int, test: bool) -> tuple[list[Any], list[Any]]:
        if task == "femnist":
            ys = [int(v) for v in rng.integers(0, 62, n)]
            xs = [[float(v) for v in np.round(rng.random(784), 3)] for _ in range(n)]
            return xs, ys
        if task == "sent140":
            labels = [int(v) for v in rng.integers(0, 2, n)]
            rows: list[Any] = []
            for lab in labels:
                counter[0] += 1
                date = f"Mon Apr 06 22:{counter[0] % 60:02d}:00 PDT 2009"
                rows.append([str(1467810000 + counter[0]), date, "NO_QUERY", names[user], _tweet(rng, lab, test)])
            return rows, labels
        if task == "celeba":
            from PIL import Image

            images.mkdir(parents=True, exist_ok=True)
            labels = [int(v) for v in rng.integers(0, 2, n)]
            files_: list[Any] = []
            for lab in labels:
                counter[0] += 1
                fname = f"{counter[0]:06d}.jpg"
                Image.fromarray(_face(rng, lab, *image_size)).save(images / fname, quality=90)
                files_.append(fname)
            return files_, [float(v) for v in labels]  # LEAF: (int(attr) + 1) / 2
        starts = rng.integers(0, len(text) - 81, n)
        starts[0] = len(text) - 81 if user == 0 else starts[0]
        return [text[s : s + 80] for s in starts], [text[s + 80] for s in starts]

    for split, (lo, hi) in (("train", train_per_user), ("test", test_per_user)):
        folder = Path(root) / split
        folder.mkdir(parents=True, exist_ok=True)
        for f, chunk in enumerate(np.array_split(np.arange(users), files)):
            blob: dict[str, object] = {"users": [], "num_samples": [], "user_data": {}}
            for u in chunk:
                n = int(rng.integers(lo, hi + 1))
                xs, ys = sample(int(u), n, split == "test")
                blob["users"].append(names[u])  # type: ignore[attr-defined]
                blob["num_samples"].append(n)  # type: ignore[attr-defined]
                blob["user_data"][names[u]] = {"x": xs, "y": ys}  # type: ignore[index]
            (folder / f"all_data_{f}_niid_0_keep_0_{split}_9.json").write_text(json.dumps(blob), encoding="utf-8")
    return Path(root)


__all__ = ["SENT140_TEST_ONLY", "write_fake_idx_dataset", "write_fake_leaf"]
