"""Token-sequence LSTM classifier: LEAF's Shakespeare model (embedding 8, 2 x LSTM 256).

x: int64 token ids [B, T] -> Embedding(vocab, E) -> ``layers`` LSTM layers of width H ->
Linear(H, num_classes) on the last time step's hidden state -> logits [B, classes].
Shakespeare: 80 character ids in, next-character logits out (vocab = classes = 81). LEAF sent140:
25 word ids in (vocab = the data's words + padding + unknown), 2 sentiment logits out; the data
puts the padding BEFORE the words, so the last step read out is the tweet's last word. (LEAF's own
sent140 model adds a dense 128 layer before the output; this one reads out directly.)

The LSTM is written out step by step in plain tensor operations (PyTorch's gate order i, f, g, o
and its initialisation U(-1/sqrt(H), 1/sqrt(H))) instead of ``nn.LSTM``, whose fused kernel has
no batching rule: this way ``torch.func.vmap`` over stacked parameter vectors and ``grad`` work.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LSTMLayer(nn.Module):
    """One LSTM layer: c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t), gates from
    W_ih x_t + b_ih + W_hh h_{t-1} + b_hh. Returns all hidden states [B, T, H]."""

    def __init__(self, input_size: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden, hidden))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        pre = x @ self.weight_ih.T + (self.bias_ih + self.bias_hh)  # [B, T, 4H], all steps at once
        h = torch.zeros_like(pre[:, 0, : self.hidden])
        c = torch.zeros_like(h)
        outs = []
        for t in range(pre.shape[1]):
            gates = pre[:, t] + h @ self.weight_hh.T
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1)


class CharLSTM(nn.Module):
    """Embedding (``vocab`` token ids) -> stacked :class:`LSTMLayer` -> Linear on the last step."""

    def __init__(self, vocab: int, embedding: int, hidden: int, layers: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding)
        self.lstm = nn.ModuleList([LSTMLayer(embedding if k == 0 else hidden, hidden) for k in range(layers)])
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for layer in self.lstm:
            h = layer(h)
        return self.out(h[:, -1])


__all__ = ["CharLSTM", "LSTMLayer"]
