"""Models: shapes and parameter counts from the papers, vmap(grad) over stacked flat vectors
against a loop, the hand-written LSTM against nn.LSTM, data/model mismatch errors, summary."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from asyncfl.config.schema import (
    CharLSTMModel,
    CNNModel,
    DNNModel,
    LogRegModel,
    MLPModel,
    QuadraticData,
    QuadraticModel,
    Scenario,
)
from asyncfl.data import build_data
from asyncfl.data.base import FederatedData
from asyncfl.data.fake import write_fake_idx_dataset
from asyncfl.data.pack import pack
from asyncfl.errors import ScenarioError
from asyncfl.models import MODELS, build_model, summary
from asyncfl.models.base import FlatModel
from asyncfl.models.char_lstm import CharLSTM, LSTMLayer
from asyncfl.models.dense import DenseNet


def fake_data(shape: tuple[int, ...], classes: int, integer: bool = False, n: int = 12) -> FederatedData:
    """Two clients of random samples with the given per-sample shape."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, classes, (n, *shape)) if integer else rng.normal(size=(n, *shape)).astype(np.float32)
    y = rng.integers(0, classes, n)
    half = n // 2
    tr = [np.arange(0, half - 2), np.arange(half, n - 2)]
    te = [np.arange(half - 2, half), np.arange(n - 2, n)]
    return pack(x, y, tr, te, num_classes=classes, input_shape=shape, name=f"fake{shape}")


MNIST_LIKE = fake_data((1, 28, 28), 10)
CIFAR_LIKE = fake_data((3, 32, 32), 10)
SYNTH_LIKE = fake_data((60,), 10)
CHARS = fake_data((12,), 81, integer=True)
WORDS = replace(fake_data((25,), 2, integer=True), vocab_size=50)  # sent140-like: 25 word ids, 2 classes
QUAD = build_data(QuadraticData(dimension=4), 2, 0, Path("."))

CASES = [
    ("logreg", LogRegModel(), MNIST_LIKE),
    ("mlp", MLPModel(), MNIST_LIKE),
    ("dnn", DNNModel(), SYNTH_LIKE),
    ("cnn-mnist", CNNModel(channels=[4, 8], hidden=16), MNIST_LIKE),
    ("cnn-cifar", CNNModel(channels=[4, 8], hidden=16), CIFAR_LIKE),
    ("char_lstm", CharLSTMModel(hidden=16), CHARS),
    ("char_lstm-dense", CharLSTMModel(embedding=6, hidden=16, dense=12), WORDS),
    ("quadratic", QuadraticModel(), QUAD),
]


def test_every_model_is_registered() -> None:
    assert MODELS.names() == ["char_lstm", "cnn", "dnn", "logreg", "mlp", "quadratic"]


@pytest.mark.parametrize(("label", "cfg", "data"), CASES, ids=[c[0] for c in CASES])
def test_vmap_grad_equals_loop(label: str, cfg, data: FederatedData) -> None:
    """vmap(grad(loss)) over 3 stacked parameter vectors = 3 separate grad calls."""
    model = build_model(cfg, data)
    ws = torch.stack([model.init(seed) for seed in range(3)])
    assert ws.shape == (3, model.num_params) and not torch.equal(ws[0], ws[1])
    x, y = data.client_train(0)
    m = torch.ones(len(y))
    m[-1] = 0.0  # padding weight
    out = model.forward(ws[0], x)
    assert out.shape == ((len(y), 1) if label == "quadratic" else (len(y), data.num_classes))
    batched = vmap(grad(model.loss), in_dims=(0, None, None, None))(ws, x, y, m)
    looped = torch.stack([grad(model.loss)(w, x, y, m) for w in ws])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(batched).all() and batched.abs().sum() > 0


def test_paper_architectures_parameter_counts() -> None:
    # Per-FedAvg MLP 784-80-60-10 ELU
    assert build_model(MLPModel(), MNIST_LIKE).num_params == 784 * 80 + 80 + 80 * 60 + 60 + 60 * 10 + 10
    # pFedMe DNN: 784-100-10 on images, 60-20-10 on Synthetic (hidden chosen by input size)
    assert build_model(DNNModel(), MNIST_LIKE).num_params == 784 * 100 + 100 + 100 * 10 + 10
    assert build_model(DNNModel(), SYNTH_LIKE).num_params == 60 * 20 + 20 + 20 * 10 + 10
    assert build_model(DNNModel(hidden=7), SYNTH_LIKE).num_params == 60 * 7 + 7 + 7 * 10 + 10
    assert build_model(LogRegModel(), SYNTH_LIKE).num_params == 610
    # LeNet-style CNN, defaults 32-64 conv, 512 hidden: 64*7*7 and 64*8*8 features
    conv = 1 * 32 * 25 + 32 + 32 * 64 * 25 + 64
    assert build_model(CNNModel(), MNIST_LIKE).num_params == conv + 3136 * 512 + 512 + 512 * 10 + 10
    conv3 = 3 * 32 * 25 + 32 + 32 * 64 * 25 + 64
    assert build_model(CNNModel(), CIFAR_LIKE).num_params == conv3 + 4096 * 512 + 512 + 512 * 10 + 10
    # LEAF's Shakespeare LSTM: embedding 8, 2 x LSTM 256
    lstm = 81 * 8 + (4 * 256 * (8 + 256) + 8 * 256) + (4 * 256 * (256 + 256) + 8 * 256) + 256 * 81 + 81
    model = build_model(CharLSTMModel(), CHARS)
    assert model.num_params == lstm and model.num_bytes() == 4 * lstm
    assert model.num_bytes(torch.float64) == 8 * lstm
    assert build_model(QuadraticModel(), QUAD).num_params == 4


def test_mlp_activation_and_hidden_sizes() -> None:
    model = build_model(MLPModel(hidden=[5], activation="tanh"), SYNTH_LIKE)
    # FlatModel.module is typed nn.Module; for mlp, build_model wraps a DenseNet
    assert (
        isinstance(cast(DenseNet, model.module).net[1], torch.nn.Tanh) and model.num_params == 60 * 5 + 5 + 5 * 10 + 10
    )
    elu = build_model(MLPModel(), SYNTH_LIKE)
    assert isinstance(cast(DenseNet, elu.module).net[1], torch.nn.ELU)


def test_char_lstm_matches_torch_lstm() -> None:
    model = build_model(CharLSTMModel(hidden=16), CHARS)
    w = model.init(0)
    params = model.unflatten(w)
    ref = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
    with torch.no_grad():
        for k in range(2):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{kind}_l{k}").copy_(params[f"lstm.{k}.{kind}"])
    x = CHARS.train_x[:4]
    emb = torch.nn.functional.embedding(x, params["embed.weight"])
    h, _ = ref(emb)
    expected = h[:, -1] @ params["out.weight"].T + params["out.bias"]
    torch.testing.assert_close(model.forward(w, x), expected, rtol=1e-5, atol=1e-6)


def test_char_lstm_dense_parameter_counts() -> None:
    """LEAF's sent140 model (models/sent140/stacked_lstm.py): embedding n_hidden = 100, 2 x LSTM
    100, fc1 dense 128 (no activation), 2 logits. One LSTM layer of width H on inputs of width I
    has 4H x I + 4H x H weights and two 4H biases (PyTorch's b_ih and b_hh)."""
    v, e, h, d, k = 50, 100, 100, 128, 2

    def lstm(i: int) -> int:
        return 4 * h * (i + h) + 8 * h

    base = v * e + lstm(e) + lstm(h)
    plain = build_model(CharLSTMModel(embedding=e, hidden=h), WORDS)
    assert plain.num_params == base + h * k + k  # read-out straight from the last step
    leaf = build_model(CharLSTMModel(embedding=e, hidden=h, dense=d), WORDS)
    assert leaf.num_params == base + (h * d + d) + (d * k + k)  # + fc1 [128 x 100] + out [2 x 128]
    assert leaf.names[-4:] == ("fc.weight", "fc.bias", "out.weight", "out.bias")
    assert "fc.weight" not in plain.names and plain.names[-2:] == ("out.weight", "out.bias")
    w = leaf.init(0)
    x = WORDS.train_x[:5]
    assert leaf.forward(w, x).shape == (5, 2) and torch.isfinite(leaf.forward(w, x)).all()
    # the Shakespeare default keeps no dense layer
    assert CharLSTMModel().dense == 0


class _CharLSTMWithoutDense(torch.nn.Module):
    """The char_lstm network as it was before ``dense`` existed (embed, lstm, out)."""

    def __init__(self, vocab: int, embedding: int, hidden: int, layers: int, num_classes: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, embedding)
        self.lstm = torch.nn.ModuleList([LSTMLayer(embedding if k == 0 else hidden, hidden) for k in range(layers)])
        self.out = torch.nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.lstm:
            h = layer(h)
        return self.out(h[:, -1])


@pytest.mark.parametrize("data", [CHARS, WORDS], ids=["chars", "words"])
def test_char_lstm_dense_zero_is_the_old_network(data: FederatedData) -> None:
    """dense = 0 (the default) gives the same parameter names, count, seeded initial vector and
    outputs, bit for bit, as the network without the option, so earlier runs reproduce."""
    vocab = data.vocab_size or data.num_classes
    old = FlatModel.wrap(_CharLSTMWithoutDense(vocab, 8, 16, 2, data.num_classes), "classification")
    for cfg in (CharLSTMModel(hidden=16), CharLSTMModel(hidden=16, dense=0)):
        new = build_model(cfg, data)
        assert new.names == old.names and new.shapes == old.shapes and new.num_params == old.num_params
        for seed in (0, 3):
            w_old, w_new = old.init(seed), new.init(seed)
            assert torch.equal(w_old, w_new)
            x = data.train_x[:4]
            assert torch.equal(old.forward(w_old, x), new.forward(w_new, x))


def test_char_lstm_dense_is_linear_before_the_output() -> None:
    """With dense > 0: logits = out(fc(h_T)), no activation between (LEAF's fc1 then pred)."""
    model = build_model(CharLSTMModel(hidden=16, dense=12), WORDS)
    w = model.init(1)
    p = model.unflatten(w)
    ref = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
    with torch.no_grad():
        for k in range(2):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{kind}_l{k}").copy_(p[f"lstm.{k}.{kind}"])
    x = WORDS.train_x[:4]
    h, _ = ref(torch.nn.functional.embedding(x, p["embed.weight"]))
    fc = h[:, -1] @ p["fc.weight"].T + p["fc.bias"]
    expected = fc @ p["out.weight"].T + p["out.bias"]
    torch.testing.assert_close(model.forward(w, x), expected, rtol=1e-5, atol=1e-6)
    module = cast(CharLSTM, model.module)  # FlatModel.module is typed nn.Module
    assert module.fc is not None and (module.fc.in_features, module.fc.out_features) == (16, 12)
    assert module.out.in_features == 12


def test_init_is_seeded_and_leaves_global_rng_alone() -> None:
    model = build_model(MLPModel(), MNIST_LIKE)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = model.init(5), model.init(5)
    assert torch.equal(a, b) and torch.equal(torch.rand(1), before)


@pytest.mark.parametrize(
    ("cfg", "data", "match"),
    [
        (CNNModel(), SYNTH_LIKE, "cnn needs images"),
        (MLPModel(), CHARS, "needs float features"),
        (CharLSTMModel(), MNIST_LIKE, "char_lstm needs character-id"),
        (LogRegModel(), QUAD, "classifier"),
        (QuadraticModel(), MNIST_LIKE, "quadratic data set"),
        (CNNModel(channels=[2, 2, 2, 2, 2, 2]), MNIST_LIKE, "model.channels"),
    ],
)
def test_model_data_mismatch_is_one_line(cfg, data: FederatedData, match: str) -> None:
    with pytest.raises(ScenarioError, match=match) as info:
        build_model(cfg, data)
    assert "\n" not in str(info.value) and info.value.exit_code == 2


def test_summary_reports_count_and_bytes() -> None:
    model = build_model(DNNModel(), SYNTH_LIKE)
    text = summary(model, "dnn")
    assert text.splitlines()[0] == "dnn: 1,430 parameters, 5,720 bytes (float32)"
    assert len(text.splitlines()) == 1 + 4 and "20x60" in text


def test_scenario_switches_data_and_model(tmp_path: Path) -> None:
    """data.dataset=mnist, partition dirichlet, model cnn from a scenario mapping: input shape and
    class count flow from the data to the model."""
    write_fake_idx_dataset(tmp_path / "data", "mnist", n_train=160, n_test=40)
    sc = Scenario.model_validate(
        {
            "clients": {"count": 4},
            "server": {"concurrency": 2},
            "data": {"dataset": "mnist", "root": "data", "partition": "dirichlet"},
            "model": "cnn",
        }
    )
    data = build_data(sc.data, sc.clients.count, sc.seed, tmp_path)
    model = build_model(sc.model, data)
    w = model.init(sc.seed)
    x, y = data.client_train(0)
    assert model.forward(w, x[:3]).shape == (3, 10)
    assert torch.isfinite(model.loss(w, x, y, torch.ones(len(y))))
