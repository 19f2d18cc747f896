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
- ``sent140``: x = 5 strings [tweet id, date, query, user, text], y = the sentiment 0 or 1 (ints,
  or the strings "0" / "1"); 2 classes. The text is lowercased and split by LEAF's tokenizer
  (:func:`split_line`, ``re.findall(r"[\\w']+|[.,!?;]", line)``); its first ``data.max_words``
  tokens become word ids, features int64 [max_words]. LEAF looks words up in GloVe's vocabulary,
  which is not available offline; here the vocabulary is the ``data.vocab_size`` most frequent
  tokens of the TRAINING texts of the users kept (never test text; ties broken by the token),
  ids 2, 3, ... in that order; id :data:`PAD_ID` = 0 is padding, :data:`UNKNOWN_ID` = 1 any other
  token. Lowercasing: GloVe's vocabulary is lowercase, so LEAF (which keeps case) finds "Happy"
  unknown; lowercasing gives "Happy" and "happy" one id instead. Padding goes BEFORE the words
  (LEAF appends it), so a model reading the last step (``char_lstm``) sees the last word.
  ``FederatedData.vocab_size`` = words + 2; ``extras["vocab"]`` holds the words (id 2 first).
- ``celeba``: x = an image file name of CelebA's aligned set (e.g. ``000001.jpg``), y = smiling,
  0 or 1 (LEAF writes 0.0 / 1.0); 2 classes. Images are read from ``data.images`` (default
  ``data.root``/raw/img_align_celeba: LEAF keeps them in data/celeba/data/raw next to train/ and
  test/), only for the users kept, and processed as LEAF's model does: PIL resize to
  ``data.image_size`` square (84; PIL's default bicubic filter), then RGB; scaled to [0, 1]
  (LEAF feeds 0..255); features float32 [3, S, S].

``natural`` partition (the default): each client is one LEAF user with LEAF's own train/test
split (``data.test_fraction`` is ignored). Users with no test sample or fewer than
``data.min_samples`` samples (train + test) are skipped; if more users remain than
``clients.count``, a seeded sample of them (stream ``data.leaf.users``) is kept, in file order.
Another partition pools all users' samples and re-partitions them like a torchvision data set.
The global test set is the union of the clients' test sets.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asyncfl.bounded import InputLimitError, loads_json, read_file
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

BINARY_CLASSES = 2
"""sent140 (sentiment) and celeba (smiling) labels: 0 or 1."""

PAD_ID = 0
"""sent140 word id of padding (put before the words)."""

UNKNOWN_ID = 1
"""sent140 word id of a token outside the vocabulary."""

FIRST_WORD_ID = 2
"""sent140 word id of the most frequent training token."""

_TOKEN = re.compile(r"[\w']+|[.,!?;]")


def char_ids(text: str) -> list[int]:
    """Ids of ``text``'s characters in LEAF's table (unknown -> :data:`UNKNOWN_CHAR`)."""
    return [_CHAR_IDS.get(ch, UNKNOWN_CHAR) for ch in text]


def split_line(text: str) -> list[str]:
    """LEAF's sent140 tokenizer (models/utils/language_utils.py ``split_line``) on the lowercased
    text: runs of word characters and apostrophes, and the punctuation marks . , ! ? ; alone."""
    return _TOKEN.findall(text.lower())


def build_vocab(texts: Iterable[str], size: int) -> dict[str, int]:
    """Token -> id for the ``size`` most frequent tokens of ``texts`` (more frequent first, ties
    in token order), ids from :data:`FIRST_WORD_ID` on."""
    counts = Counter(tok for text in texts for tok in split_line(text))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    return {tok: FIRST_WORD_ID + i for i, (tok, _) in enumerate(ranked)}


def word_ids(text: str, vocab: dict[str, int], max_words: int) -> list[int]:
    """``max_words`` ids of ``text``: its first ``max_words`` tokens (unknown ->
    :data:`UNKNOWN_ID`), padded with :data:`PAD_ID` BEFORE them to the full length."""
    ids = [vocab.get(tok, UNKNOWN_ID) for tok in split_line(text)[:max_words]]
    return [PAD_ID] * (max_words - len(ids)) + ids


UserData = dict[str, dict[str, list[Any]]]

MAX_FILE_BYTES = 4 << 30
"""Largest LEAF JSON file read (LEAF's largest, FEMNIST's, are a few hundred MB); a larger one is
refused from its size, before it is read."""
MAX_FILES = 10_000
"""Most *.json files in a LEAF train/ or test/ folder (LEAF writes tens)."""


def _read_leaf_json(path: Path) -> Any:
    """A LEAF JSON file, bounded (size, number length, nesting: asyncfl.bounded): one line naming
    the file, exit 2, within a second or two for any input."""
    try:
        return loads_json(read_file(path, MAX_FILE_BYTES, follow=True), None)
    except InputLimitError as exc:
        raise DataNotFoundError(f"data.root: {path} is not a LEAF JSON file: it {exc.reason}") from None


def read_folder(folder: Path) -> tuple[list[str], UserData]:
    """Users (in file order, first appearance) and their merged samples from ``folder``/*.json."""
    users: list[str] = []
    data: UserData = {}
    paths = sorted(folder.glob("*.json"))
    if len(paths) > MAX_FILES:
        raise DataNotFoundError(
            f"data.root: {folder} holds {len(paths):,} *.json files, more than the {MAX_FILES:,} allowed"
        )
    for path in paths:
        obj = _read_leaf_json(path)
        try:
            file_users = [str(u) for u in obj["users"]]
            user_data = obj["user_data"]
            if not isinstance(obj["users"], list) or not isinstance(user_data, dict):
                raise TypeError("'users' must be a list and 'user_data' an object")
        except (KeyError, TypeError) as exc:
            raise DataNotFoundError(
                f"data.root: {path} is not a LEAF JSON file ({type(exc).__name__}: {exc})"
            ) from None
        for u in file_users:
            ud = user_data.get(u)
            if ud is None:
                raise DataNotFoundError(f"data.root: {path} lists user {u!r} without user_data")
            if not (isinstance(ud, dict) and isinstance(ud.get("x"), list) and isinstance(ud.get("y"), list)):
                raise DataNotFoundError(f"data.root: {path}: user_data of {u!r} is not an object with lists x and y")
            if u not in data:
                users.append(u)
                data[u] = {"x": [], "y": []}
            data[u]["x"].extend(ud["x"])
            data[u]["y"].extend(ud["y"])
    return users, data


def _encode(task: str, xs: list[Any], ys: list[Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """LEAF samples -> (features, int64 labels) for ``task``; samples of another task's format
    (e.g. femnist pixels read as shakespeare) are a one-line DataNotFoundError."""
    try:
        return _encode_task(task, xs, ys, where)
    except (TypeError, ValueError) as exc:
        raise DataNotFoundError(
            f"data.root: the samples in {where} do not look like LEAF {task} data (data.task={task}): "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
        ) from None


def _encode_task(task: str, xs: list[Any], ys: list[Any], where: str) -> tuple[np.ndarray, np.ndarray]:
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


def _binary_labels(task: str, ys: list[Any], where: str) -> np.ndarray:
    """0 / 1 labels as int64; LEAF writes ints (sent140) or 0.0 / 1.0 (celeba); "0" / "1" pass."""
    out = np.empty(len(ys), dtype=np.int64)
    for i, v in enumerate(ys):
        val: float | None = None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            val = float(v)
        elif isinstance(v, str):
            try:
                val = float(v.strip())
            except ValueError:
                val = None
        if val is None or val not in (0.0, 1.0):
            raise DataNotFoundError(f"data.root: {task} labels in {where} must be 0 or 1; got {v!r:.40}")
        out[i] = int(val)
    return out


def _raw_inputs(task: str, xs: list[Any], where: str) -> list[str]:
    """sent140: each sample's tweet text; celeba: each sample's image file name."""
    if task == "sent140":
        for v in xs:
            if not (isinstance(v, list) and len(v) == 5 and all(isinstance(f, str) for f in v)):
                raise DataNotFoundError(
                    f"data.root: sent140 samples in {where} must be 5 strings [id, date, query, user, text]; got {v!r:.80}"
                )
        return [v[4] for v in xs]
    for v in xs:
        if not (isinstance(v, str) and v):
            raise DataNotFoundError(f"data.root: celeba samples in {where} must be image file names; got {v!r:.80}")
    return list(xs)


def images_folder(cfg: LeafData, base_dir: Path, root: Path) -> Path:
    """``data.images`` (``~`` expanded, relative to ``base_dir``) or ``root``/raw/img_align_celeba."""
    if cfg.images is None:
        return root / "raw" / "img_align_celeba"
    p = Path(cfg.images).expanduser()
    return p if p.is_absolute() else (Path(base_dir) / p).resolve()


def load_image(path: Path, size: int) -> np.ndarray:
    """LEAF's celeba loading: PIL open, resize to ``size`` x ``size`` (bicubic, PIL's default),
    RGB; as float32 [3, size, size] in [0, 1]."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)


def _materialize(
    cfg: LeafData, data: FederatedData, raw: list[str], owner: list[str], base_dir: Path, root: Path
) -> FederatedData:
    """Swap the placeholder features (pool row ids) of sent140 / celeba for word ids / images,
    computed only for the rows the clients hold; sent140's vocabulary from the training rows."""
    tr, te = data.extras["train_index"], data.extras["test_index"]
    extras = dict(data.extras)
    vocab_size = 0
    if cfg.task == "sent140":
        vocab = build_vocab((raw[i] for i in tr), cfg.vocab_size)
        vocab_size = FIRST_WORD_ID + len(vocab)
        extras["vocab"] = np.array(list(vocab), dtype=str)

        def features(idx: np.ndarray) -> torch.Tensor:
            rows = np.array([word_ids(raw[i], vocab, cfg.max_words) for i in idx], dtype=np.int64)
            return torch.from_numpy(rows.reshape(len(idx), cfg.max_words))

    else:
        folder = images_folder(cfg, base_dir, root)
        if not folder.is_dir():
            raise DataNotFoundError(
                f"data.images: celeba images folder {folder} not found; put CelebA's aligned JPEGs there "
                "(LEAF: data/celeba/data/raw/img_align_celeba) or set data.images to their folder"
            )
        s = cfg.image_size

        def features(idx: np.ndarray) -> torch.Tensor:
            out = np.empty((len(idx), 3, s, s), dtype=np.float32)
            for k, i in enumerate(idx):
                path = folder / raw[i]
                if not path.is_file():
                    raise DataNotFoundError(
                        f"data.images: image {raw[i]!r} of user {owner[i]!r} not found: looked for {path}"
                    )
                try:
                    out[k] = load_image(path, s)
                except OSError as exc:  # PIL's UnidentifiedImageError is an OSError
                    raise DataNotFoundError(f"data.images: {path} is not a readable image ({exc})") from None
            return torch.from_numpy(out)

    test_x = features(te)
    # leaf's global test set is the union of the client test sets: the same tensor as test_x
    return replace(data, train_x=features(tr), test_x=test_x, global_x=test_x, extras=extras, vocab_size=vocab_size)


def build_leaf(cfg: LeafData, num_clients: int, seed: int, base_dir: Path, root: Path) -> FederatedData:
    """LEAF users as clients (natural), or LEAF samples pooled and re-partitioned."""
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
    # sent140 / celeba: the pool's features are first the row ids; word ids (whose vocabulary
    # depends on which rows are training rows) and images are made for the kept rows at the end.
    deferred = cfg.task in ("sent140", "celeba")
    raw: list[str] = []
    owner: list[str] = []
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    start = 0
    for u in eligible:
        for part, store in ((tr_data[u], train), (te_data[u], test)):
            where = f"user {u}"
            if deferred:
                y = _binary_labels(cfg.task, part["y"], where)
                if len(part["x"]) != len(y):
                    raise DataNotFoundError(f"data.root: {where} has {len(part['x'])} samples but {len(y)} labels")
                raw.extend(_raw_inputs(cfg.task, part["x"], where))
                owner.extend([u] * len(y))
                x = np.arange(start, start + len(y), dtype=np.int64)
            else:
                x, y = _encode(cfg.task, part["x"], part["y"], where)
            xs.append(x)
            ys.append(y)
            store.append(np.arange(start, start + len(y), dtype=np.int64))
            start += len(y)
    if not xs:
        raise DataNotFoundError(f"data.root: no usable leaf users in {root}")
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    num_classes = {"femnist": FEMNIST_CLASSES, "shakespeare": UNKNOWN_CHAR + 1}.get(cfg.task, BINARY_CLASSES)
    if cfg.task == "sent140":
        input_shape: tuple[int, ...] = (cfg.max_words,)
    elif cfg.task == "celeba":
        input_shape = (3, cfg.image_size, cfg.image_size)
    else:
        input_shape = tuple(int(s) for s in x_all.shape[1:])
    name = f"leaf-{cfg.task}"
    if cfg.partition.name != "natural":
        data = build_pooled(
            x_all, y_all, cfg, num_clients, seed, num_classes=num_classes, input_shape=input_shape, name=name
        )
    else:
        require_no_quantity_skew(cfg, "leaf users keep their own sizes")
        users = np.array(eligible)
        data = pack(
            x_all,
            y_all,
            train,
            test,
            num_classes=num_classes,
            input_shape=input_shape,
            name=name,
            extras={"users": users},
        )
    return _materialize(cfg, data, raw, owner, base_dir, root) if deferred else data


__all__ = [
    "ALL_LETTERS",
    "BINARY_CLASSES",
    "FEMNIST_CLASSES",
    "FIRST_WORD_ID",
    "PAD_ID",
    "UNKNOWN_CHAR",
    "UNKNOWN_ID",
    "build_leaf",
    "build_vocab",
    "char_ids",
    "images_folder",
    "load_image",
    "read_folder",
    "split_line",
    "word_ids",
]
