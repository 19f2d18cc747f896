"""The bridge from simulated tasks to numbers: lazy, batched client updates.

A client task becomes a :class:`Job` (client, base model, the client's task counter). Nothing is
computed at dispatch. When the server needs an arrival's result, every pending job is computed in
one vmapped call per chunk (``batching: auto``), or just that job (``batching: none``, the way
peer simulators run clients one after another). Both give the same numbers up to floating-point
reduction order, because each job's minibatches depend only on (seed, client, counter) -- never on
which other jobs share its chunk -- and the rule is the same pure function.

Minibatches: for task ``counter`` of client i, step s and draw d, each of the client's n_i samples
gets a 64-bit key from the counter-based hash (asyncfl.tensor_rng) and the B smallest keys form the
batch: a uniform draw without replacement within the batch, computed for all jobs at once on the
device. A client with n_i <= B uses all its samples (the rest of the batch is padding, weight 0);
``batch_size: null`` means every step uses the full local data set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import vmap

from asyncfl.algorithms.base import Batches, ClientRule
from asyncfl.data.base import FederatedData
from asyncfl.models.base import FlatModel
from asyncfl.rng import stream_keys_np
from asyncfl.tensor_rng import bits_t

_PAD = torch.iinfo(torch.int64).max


@dataclass(frozen=True)
class Job:
    """One client task to compute: start from ``base`` (a flat model), minibatches keyed by
    (seed, client, counter)."""

    task: int
    client: int
    base: Tensor
    counter: int


class MinibatchSampler:
    """Indices of every job's minibatches, drawn on the device without Python loops over samples."""

    def __init__(self, data: FederatedData, seed: int, steps: int, draws: int, batch_size: int | None) -> None:
        self.data = data
        self.steps = steps
        self.draws = draws
        self.batch_size = batch_size
        dev = data.train_x.device
        keys = stream_keys_np(seed, "minibatch", np.arange(data.num_clients)).view(np.int64)
        self.keys = torch.from_numpy(keys.copy()).to(dev)
        sd = torch.arange(steps * draws, device=dev, dtype=torch.int64).view(steps, draws, 1)
        self._sd_shift = sd << 32

    def indices(self, clients: Tensor, counters: Tensor) -> tuple[Tensor, Tensor]:
        """Global row indices [C, S, D, b] into ``data.train_x`` and weights [C, S, D, b]
        (b = min(B, largest n_i of these clients))."""
        sizes = self.data.train_sizes[clients]
        offsets = self.data.train_offsets[clients]
        n_max = int(sizes.max())
        dev = clients.device
        j = torch.arange(n_max, device=dev, dtype=torch.int64)
        valid = j.view(1, 1, 1, n_max) < sizes.view(-1, 1, 1, 1)
        if self.batch_size is None:
            local = j.view(1, 1, 1, n_max).expand(clients.shape[0], self.steps, self.draws, n_max)
            mask = valid.expand_as(local)
        else:
            jj = self._sd_shift | j.view(1, 1, n_max)  # [S, D, n_max]: which key within the task
            h = bits_t(self.keys[clients].view(-1, 1, 1, 1), counters.view(-1, 1, 1, 1), jj.unsqueeze(0))
            h = torch.where(valid, h, torch.full_like(h, _PAD))
            k = min(self.batch_size, n_max)
            vals, local = torch.topk(h, k, dim=-1, largest=False, sorted=True)
            mask = vals != _PAD
        gidx = offsets.view(-1, 1, 1, 1) + torch.where(mask, local, torch.zeros_like(local))
        return gidx, mask.to(self.data.train_x.dtype if self.data.train_x.is_floating_point() else torch.float32)


class Executor:
    """Computes client updates lazily; batched with vmap (``batching='auto'``) or one at a time.

    ``max_batch``: jobs per vmapped chunk (None: chosen from a memory budget)."""

    def __init__(
        self,
        model: FlatModel,
        rule: ClientRule,
        data: FederatedData,
        seed: int,
        batching: str = "auto",
        max_batch: int | None = None,
        memory_budget: int = 1 << 30,
    ) -> None:
        self.model = model
        self.rule = rule
        self.data = data
        self.batching = batching
        self.sampler = MinibatchSampler(data, seed, rule.steps, rule.draws_per_step, rule.batch_size)
        self.pending: dict[int, Job] = {}
        self.results: dict[int, Tensor] = {}
        self.max_batch = max_batch or self._auto_chunk(memory_budget)
        self.stats = {"jobs": 0, "calls": 0}
        loss = model.loss

        def update_one(w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
            return rule.client_update(loss, w, Batches(x, y, m))

        self._one: Callable[..., Tensor] = update_one
        self._many: Callable[..., Tensor] = vmap(update_one)

    def _auto_chunk(self, budget: int) -> int:
        """Jobs per chunk so that one chunk's minibatches and activations stay within ``budget``
        bytes (a rough model: gathered inputs x 8 for activations, plus 16 model copies)."""
        per_sample = int(np.prod(self.data.input_shape)) * self.data.train_x.element_size()
        n_max = int(self.data.train_sizes.max()) if self.data.num_clients else 1
        b = min(self.rule.batch_size or n_max, n_max)
        per_job = self.rule.steps * self.rule.draws_per_step * b * per_sample * 8 + 16 * self.model.num_bytes()
        per_job += self.rule.steps * self.rule.draws_per_step * n_max * 8  # minibatch keys
        return int(max(1, min(4096, budget // max(per_job, 1))))

    def submit(self, task: int, client: int, base: Tensor, counter: int) -> None:
        self.pending[task] = Job(task, client, base, counter)

    def cancel(self, task: int) -> None:
        self.pending.pop(task, None)
        self.results.pop(task, None)

    def result(self, task: int) -> Tensor:
        """The update (model delta) of ``task``, computing pending jobs as needed."""
        if task not in self.results:
            if self.batching == "none":
                self._compute([self.pending[task]])
            else:
                self._compute(list(self.pending.values()))
        return self.results.pop(task)

    def _compute(self, jobs: list[Job]) -> None:
        for start in range(0, len(jobs), self.max_batch):
            chunk = jobs[start : start + self.max_batch]
            deltas = self._run_chunk(chunk)
            for job, delta in zip(chunk, deltas, strict=True):
                self.results[job.task] = delta
                del self.pending[job.task]

    def _run_chunk(self, chunk: list[Job]) -> list[Tensor]:
        dev = self.data.train_x.device
        clients = torch.tensor([j.client for j in chunk], device=dev, dtype=torch.int64)
        counters = torch.tensor([j.counter for j in chunk], device=dev, dtype=torch.int64)
        gidx, mask = self.sampler.indices(clients, counters)
        x = self.data.train_x[gidx]
        y = self.data.train_y[gidx]
        self.stats["jobs"] += len(chunk)
        self.stats["calls"] += 1
        with torch.no_grad():
            if len(chunk) == 1 and self.batching == "none":
                return [self._one(chunk[0].base, x[0], y[0], mask[0])]
            w = torch.stack([j.base for j in chunk])
            out = self._many(w, x, y, mask)
        return list(out.unbind(0))


__all__ = ["Executor", "Job", "MinibatchSampler"]
