"""LEAF sent140 and celeba: tokenization against hand-computed ids, the training-only vocabulary,
left padding and truncation, label parsing, celeba images against PIL, missing files as one-line
exit-2 errors, `asyncfl data describe`, and tiny end-to-end runs (char_lstm on sent140, cnn on
celeba) -- all on small files written in LEAF's exact format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import asyncfl
from asyncfl.cli import main
from asyncfl.config.schema import CharLSTMModel, CNNModel, IidPartition, LeafData, LogRegModel, MLPModel
from asyncfl.data import build_data
from asyncfl.data.fake import SENT140_TEST_ONLY, write_fake_leaf
from asyncfl.data.leaf import FIRST_WORD_ID, PAD_ID, UNKNOWN_ID, build_vocab, split_line, word_ids
from asyncfl.errors import DataNotFoundError, ScenarioError
from asyncfl.models import InputSpec, build_model
from asyncfl.models.char_lstm import CharLSTM

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "scenarios" / "quickstart.yaml")
TINY_RUN = [
    "--set",
    "clients.count=4",
    "--set",
    "server.concurrency=2",
    "--set",
    "stop.server_steps=4",
    "--set",
    "eval.every_steps=4",
    "--set",
    "algorithm.local_steps=2",
    "--set",
    "algorithm.batch_size=8",
]


def _blobs(root: Path, split: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / split).glob("*.json"))]


def _user_data(root: Path, split: str) -> dict[str, dict[str, list[Any]]]:
    return {u: d for b in _blobs(root, split) for u, d in b["user_data"].items()}


def _rewrite_first(root: Path, split: str, edit: Any) -> None:
    """Apply ``edit(user_data_of_first_user)`` in the first JSON file of ``split``."""
    path = sorted((root / split).glob("*.json"))[0]
    blob = json.loads(path.read_text())
    edit(blob["user_data"][blob["users"][0]])
    path.write_text(json.dumps(blob))


# ------------------------------------------------------------------------------------------------
# sent140
# ------------------------------------------------------------------------------------------------


def test_tokenizer_and_word_ids_by_hand() -> None:
    line = "I can't believe it's SO good!!! Really, good; #yay :)"
    # LEAF's regex on the lowercased text: ':' ')' '#' are dropped, '!' stands alone
    assert split_line(line) == [
        "i",
        "can't",
        "believe",
        "it's",
        "so",
        "good",
        "!",
        "!",
        "!",
        "really",
        ",",
        "good",
        ";",
        "yay",
    ]
    assert split_line(line) == [t.lower() for t in re.findall(r"[\w']+|[.,!?;]", line)]
    # counts: good 2, i 2, a 1, b 1, so 1 -> by count, ties by token; vocab_size 4 drops "so"
    vocab = build_vocab(["good good i", "I so", "b a"], 4)
    assert vocab == {"good": 2, "i": 3, "a": 4, "b": 5}
    assert FIRST_WORD_ID == 2 and PAD_ID == 0 and UNKNOWN_ID == 1
    # i so good , x -> 3 1 2 1 1, padded BEFORE the words to 6
    assert word_ids("I so GOOD, x", vocab, 6) == [0, 3, 1, 2, 1, 1]
    assert word_ids("I so GOOD, x", vocab, 2) == [3, 1]  # the FIRST max_words tokens, as LEAF
    assert word_ids(":-)", vocab, 3) == [0, 0, 0]


def test_sent140_vocab_from_training_text_of_kept_users_only(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path, "sent140", users=6)
    d = build_data(LeafData(root=str(tmp_path), task="sent140"), 3, 0, tmp_path)
    assert d.name == "leaf-sent140" and d.num_classes == 2 and d.input_shape == (25,)
    assert d.train_x.dtype == torch.int64 and tuple(d.train_x.shape[1:]) == (25,)
    train, test = _user_data(tmp_path, "train"), _user_data(tmp_path, "test")
    kept = [str(u) for u in d.extras["users"]]
    assert len(kept) == 3 and set(kept) < set(train)
    expected = build_vocab([x[4] for u in kept for x in train[u]["x"]], 10000)
    vocab = {str(w): FIRST_WORD_ID + i for i, w in enumerate(d.extras["vocab"])}
    assert vocab == expected and d.vocab_size == len(vocab) + 2
    assert SENT140_TEST_ONLY not in vocab  # only test texts hold it
    assert InputSpec.of(d).vocab_size == d.vocab_size
    # every stored row is word_ids of its text; the test-only word became UNKNOWN_ID
    for i, u in enumerate(kept):
        xs, ys = d.client_train(i)
        assert xs.tolist() == [word_ids(x[4], vocab, 25) for x in train[u]["x"]]
        assert ys.tolist() == train[u]["y"]
        tx, _ = d.client_test(i)
        assert tx.tolist() == [word_ids(x[4], vocab, 25) for x in test[u]["x"]]
        for row, x in zip(tx.tolist(), test[u]["x"], strict=True):
            toks = split_line(x[4])[:25]
            if SENT140_TEST_ONLY in toks:
                assert row[25 - len(toks) + toks.index(SENT140_TEST_ONLY)] == UNKNOWN_ID


def test_sent140_left_padding_truncation_and_vocab_cap(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path, "sent140", users=4)
    d = build_data(LeafData(root=str(tmp_path), task="sent140", max_words=10, vocab_size=5), 4, 0, tmp_path)
    assert d.input_shape == (10,) and d.vocab_size == 7 and int(d.train_x.max()) <= 6
    texts = [x[4] for u in d.extras["users"] for x in _user_data(tmp_path, "train")[str(u)]["x"]]
    n_tok = [len(split_line(t)) for t in texts]
    x = d.train_x.numpy()
    short, long = n_tok.index(min(n_tok)), n_tok.index(max(n_tok))
    assert min(n_tok) < 10 < max(n_tok)
    # padding first, then the words (the last step holds the last word)
    assert (x[short, : 10 - n_tok[short]] == PAD_ID).all() and (x[short, 10 - n_tok[short] :] != PAD_ID).all()
    assert (x[long] != PAD_ID).all()  # truncated to its first 10 tokens
    vocab = {str(w): FIRST_WORD_ID + i for i, w in enumerate(d.extras["vocab"])}
    assert x[long].tolist() == [vocab.get(t, UNKNOWN_ID) for t in split_line(texts[long])[:10]]
    # pooled: the vocabulary comes from the rows that became training rows
    p = build_data(LeafData(root=str(tmp_path), task="sent140", partition=IidPartition()), 3, 0, tmp_path)
    pool: list[str] = []  # pool order: users in file order, each user's train then test samples
    tr, te = _user_data(tmp_path, "train"), _user_data(tmp_path, "test")
    for b in _blobs(tmp_path, "train"):
        for u in b["users"]:
            if u in te:
                pool += [x[4] for x in tr[u]["x"]] + [x[4] for x in te[u]["x"]]
    assert [str(w) for w in p.extras["vocab"]] == list(build_vocab([pool[i] for i in p.extras["train_index"]], 10000))


@pytest.mark.parametrize("labels", [[0, 1], ["0", "1"], [1.0, 0.0]])
def test_sent140_label_forms(tmp_path: Path, labels: list[Any]) -> None:
    write_fake_leaf(tmp_path, "sent140", users=2, files=1)

    def edit(ud: dict[str, list[Any]]) -> None:
        ud["y"][:2] = labels

    _rewrite_first(tmp_path, "train", edit)
    d = build_data(LeafData(root=str(tmp_path), task="sent140"), 2, 0, tmp_path)
    assert d.train_y[:2].tolist() == [int(float(v)) for v in labels]


@pytest.mark.parametrize("bad", [2, "pos", None, True, -1, "0.5"])
def test_sent140_bad_label_is_one_line(tmp_path: Path, bad: Any) -> None:
    write_fake_leaf(tmp_path, "sent140", users=2, files=1)

    def edit(ud: dict[str, list[Any]]) -> None:
        ud["y"][0] = bad

    _rewrite_first(tmp_path, "train", edit)
    with pytest.raises(DataNotFoundError, match="must be 0 or 1") as info:
        build_data(LeafData(root=str(tmp_path), task="sent140"), 2, 0, tmp_path)
    assert "\n" not in str(info.value) and "data.root" in str(info.value)


def test_sent140_bad_sample_is_one_line(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path, "sent140", users=2, files=1)

    def edit(ud: dict[str, list[Any]]) -> None:
        ud["x"][0] = ud["x"][0][:4]

    _rewrite_first(tmp_path, "train", edit)
    with pytest.raises(DataNotFoundError, match="5 strings") as info:
        build_data(LeafData(root=str(tmp_path), task="sent140"), 2, 0, tmp_path)
    assert "\n" not in str(info.value)


def test_sent140_models(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path, "sent140", users=3)
    d = build_data(LeafData(root=str(tmp_path), task="sent140"), 3, 0, tmp_path)
    model = build_model(CharLSTMModel(embedding=4, hidden=8, layers=1), d)
    assert cast(CharLSTM, model.module).embed.num_embeddings == d.vocab_size  # module: typed nn.Module
    assert model.module(d.train_x[:5]).shape == (5, 2)
    for cfg, match in (
        (MLPModel(), "mlp needs float features"),
        (LogRegModel(), "logreg needs float features"),
        (CNNModel(), "cnn needs images"),
    ):
        with pytest.raises(ScenarioError, match=match) as info:
            build_model(cfg, d)
        assert "\n" not in str(info.value) and "leaf-sent140" in str(info.value)


# ------------------------------------------------------------------------------------------------
# celeba
# ------------------------------------------------------------------------------------------------


def _pil_leaf(path: Path, size: int) -> np.ndarray:
    """LEAF's _load_image (PIL's default resize filter, then RGB), as [3, S, S] in [0, 1]."""
    img = Image.open(path).resize((size, size)).convert("RGB")
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


@pytest.mark.parametrize("size", [28, 84])
def test_celeba_images_match_pil(tmp_path: Path, size: int) -> None:
    write_fake_leaf(tmp_path, "celeba", users=3, train_per_user=(3, 5), test_per_user=(1, 2))
    raw = tmp_path / "raw" / "img_align_celeba"
    with Image.open(next(raw.glob("*.jpg"))) as im:
        assert im.size == (178, 218) and im.mode == "RGB"
    d = build_data(LeafData(root=str(tmp_path), task="celeba", image_size=size), 3, 0, tmp_path)
    assert d.name == "leaf-celeba" and d.num_classes == 2 and d.input_shape == (3, size, size)
    assert d.train_x.dtype == torch.float32 and float(d.train_x.min()) >= 0.0 and float(d.train_x.max()) <= 1.0
    train, test = _user_data(tmp_path, "train"), _user_data(tmp_path, "test")
    for i, u in enumerate(str(u) for u in d.extras["users"]):
        xs, ys = d.client_train(i)
        assert ys.tolist() == [int(v) for v in train[u]["y"]]  # LEAF writes 0.0 / 1.0
        assert isinstance(train[u]["y"][0], float)
        want = np.stack([_pil_leaf(raw / name, size) for name in train[u]["x"]])
        np.testing.assert_allclose(xs.numpy(), want, atol=1e-6)
        tx, _ = d.client_test(i)
        np.testing.assert_allclose(tx[0].numpy(), _pil_leaf(raw / test[u]["x"][0], size), atol=1e-6)
    assert d.global_x is d.test_x
    model = build_model(CNNModel(channels=[4, 8], hidden=16), d)
    assert model.module(d.train_x[:2]).shape == (2, 2)
    with pytest.raises(ScenarioError, match="char_lstm needs"):
        build_model(CharLSTMModel(), d)


def test_celeba_loads_only_kept_users_and_images_key(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path / "data", "celeba", users=4, train_per_user=(3, 4), test_per_user=(1, 1))
    moved = tmp_path / "faces"
    (tmp_path / "data" / "raw" / "img_align_celeba").rename(moved)
    with pytest.raises(DataNotFoundError, match=r"data\.images") as info:
        build_data(LeafData(root="data", task="celeba", image_size=16), 2, 0, tmp_path)
    assert "\n" not in str(info.value) and "img_align_celeba" in str(info.value)
    # relative data.images resolves against the scenario's folder, like data.root
    d = build_data(LeafData(root="data", task="celeba", images="faces", image_size=16), 2, 0, tmp_path)
    assert d.num_clients == 2
    # images of users not kept are never opened: delete them all
    kept = {str(u) for u in d.extras["users"]}
    for split in ("train", "test"):
        for u, ud in _user_data(tmp_path / "data", split).items():
            if u not in kept:
                for name in ud["x"]:
                    (moved / name).unlink()
    again = build_data(LeafData(root="data", task="celeba", images=str(moved), image_size=16), 2, 0, tmp_path)
    assert torch.equal(again.train_x, d.train_x)


def test_celeba_bad_label_and_name(tmp_path: Path) -> None:
    write_fake_leaf(tmp_path, "celeba", users=2, files=1, train_per_user=(3, 3), test_per_user=(1, 1))

    def edit(ud: dict[str, list[Any]]) -> None:
        ud["y"][0] = 0.5

    _rewrite_first(tmp_path, "train", edit)
    with pytest.raises(DataNotFoundError, match=r"celeba labels .* must be 0 or 1"):
        build_data(LeafData(root=str(tmp_path), task="celeba", image_size=8), 2, 0, tmp_path)

    def edit_x(ud: dict[str, list[Any]]) -> None:
        ud["y"][0] = 1.0
        ud["x"][0] = 7

    _rewrite_first(tmp_path, "train", edit_x)
    with pytest.raises(DataNotFoundError, match="image file names"):
        build_data(LeafData(root=str(tmp_path), task="celeba", image_size=8), 2, 0, tmp_path)


def test_celeba_missing_image_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_fake_leaf(tmp_path / "leaf", "celeba", users=4, train_per_user=(3, 4), test_per_user=(1, 1))
    name = _user_data(root, "test")["0002"]["x"][0]
    (root / "raw" / "img_align_celeba" / name).unlink()
    code = main(
        [
            "run",
            QUICK,
            "--out",
            str(tmp_path / "r"),
            "--quiet",
            "--set",
            "data.dataset=leaf",
            "--set",
            "data.task=celeba",
            "--set",
            f"data.root={root}",
            "--set",
            "data.image_size=16",
            "--set",
            "model.name=cnn",
            *TINY_RUN,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "data.images" in err and name in err and str(root / "raw" / "img_align_celeba" / name) in err


# ------------------------------------------------------------------------------------------------
# command line: describe and tiny runs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sent140", "celeba"])
def test_data_describe(task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_fake_leaf(tmp_path / "leaf", task, users=5, train_per_user=(3, 6), test_per_user=(1, 2))
    fig = tmp_path / "split.png"
    code = main(
        [
            "data",
            "describe",
            QUICK,
            "--figure",
            str(fig),
            "--set",
            "clients.count=5",
            "--set",
            "server.concurrency=2",
            "--set",
            "data.dataset=leaf",
            "--set",
            f"data.task={task}",
            "--set",
            f"data.root={root}",
            "--set",
            "data.image_size=16",
            "--set",
            f"model.name={'char_lstm' if task == 'sent140' else 'cnn'}",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"leaf-{task}" in out.out and "classes       2" in out.out and fig.stat().st_size > 1000
    assert ("(25,) int64" if task == "sent140" else "(3, 16, 16) float32") in out.out


@pytest.mark.parametrize("dense", [0, 4])
def test_run_sent140_char_lstm(tmp_path: Path, capsys: pytest.CaptureFixture[str], dense: int) -> None:
    root = write_fake_leaf(tmp_path / "leaf", "sent140", users=6)
    code = main(
        [
            "run",
            QUICK,
            "--out",
            str(tmp_path / "r"),
            "--quiet",
            "--set",
            "data.dataset=leaf",
            "--set",
            "data.task=sent140",
            "--set",
            f"data.root={root}",
            "--set",
            "model.name=char_lstm",
            "--set",
            "model.embedding=8",
            "--set",
            "model.hidden=16",
            "--set",
            "model.layers=1",
            "--set",
            f"model.dense={dense}",
            *TINY_RUN,
        ]
    )
    assert code == 0, capsys.readouterr().err
    res = asyncfl.load_run(tmp_path / "r")
    assert res.status == "completed"
    assert yaml.safe_load((tmp_path / "r" / "scenario.yaml").read_text())["model"]["dense"] == dense
    assert 0.0 <= res.final_metrics["personalized_accuracy"] <= 1.0


@pytest.mark.parametrize("size", [28, 84])
def test_run_celeba_cnn(tmp_path: Path, size: int) -> None:
    """The Python API with a scenario folder: a relative data.images is made absolute in the run's
    scenario.yaml, like data.root."""
    from asyncfl.config.loader import read_yaml

    write_fake_leaf(tmp_path / "celeba", "celeba", users=4, train_per_user=(3, 5), test_per_user=(1, 2))
    (tmp_path / "celeba" / "raw" / "img_align_celeba").rename(tmp_path / "faces")
    scenario = read_yaml(QUICK)  # the scenario loader: 2.0e6 is a float (YAML 1.2), not a string
    scenario["data"] = {"dataset": "leaf", "task": "celeba", "root": "celeba", "images": "faces", "image_size": size}
    scenario["model"] = {"name": "cnn", "channels": [4, 8], "hidden": 16}
    scenario["clients"] = {"count": 4}
    scenario["server"].update(concurrency=2)
    scenario["algorithm"].update(local_steps=2, batch_size=8)
    scenario["stop"] = {"server_steps": 4}
    scenario["eval"] = {"every_steps": 4}
    res = asyncfl.run(scenario, tmp_path / "r", base_dir=tmp_path)
    assert res.status == "completed"
    saved = yaml.safe_load((tmp_path / "r" / "scenario.yaml").read_text())
    assert saved["data"]["images"] == str(tmp_path.resolve() / "faces")
    assert saved["data"]["root"] == str(tmp_path.resolve() / "celeba")
