"""The bridge from simulated tasks to numbers: lazy, batched client updates.

A client task becomes a :class:`Job` (task, client, base model, the client's task counter). Nothing
is computed at dispatch. When the server needs an arrival's result, the pending jobs are computed
together (``batching: auto``), or just that one (``batching: none``, the way peer simulators run
clients one after another). Both give the same numbers up to floating-point rounding, because each
job's minibatches depend only on (seed, client, counter) -- never on which other jobs share its
call -- and the client rule is the same pure function. For the fully connected networks on the CPU
with one intra-op thread, and clients holding at least B samples (no padding), they are the same
bits: the dense loss below avoids the one kernel (fused addmm) whose batched form rounds
differently.

When to compute: a job can be computed once its base version exists (dispatch) and must be by its
arrival, so each job is an interval of simulated time, and a call at instant t can compute every
job whose interval contains t. Calling at the earliest arrival among the pending jobs and taking
everything pending (the greedy rule) is the classic optimal answer to covering intervals with the
fewest points: no schedule needs fewer calls. A call takes at most one chunk (``max_batch``): the
needed job and the pending others whose arrivals come soonest (the engine tells each job's arrival
time at dispatch). With more jobs pending than a chunk holds, taking more would only make more
chunks of the same size now, while a job left pending may never be needed (the run stops first,
or the task is lost or dropped as stale) and a computed one holds memory until its arrival; the
soonest arrivals are the least likely to be lost or dropped in the meantime. Jobs that will never
be needed (lost, past a round's deadline or the stop time) are never computed.

Two formulations compute a set of jobs (``auto`` picks per call by a static cost model):

- **vmapped chunk**: bases, minibatch indices and data are stacked and the rule runs once under
  ``torch.func.vmap``. ``max_batch`` bounds a chunk: by memory, and on the CPU also by the cache
  (a chunk whose working set overflows the last-level cache runs slower per job).
- **the loop**: one job after another, with a host-side sampler on the CPU and no vmap overhead
  (``functional.loss_grad`` uses the dense loss's explicit gradient, or plain
  ``torch.autograd.grad`` outside function transforms). ``batching: none`` always uses it;
  ``auto`` uses it when a chunk would hold fewer than ``min_vmap`` jobs (few pending, or a
  cache-sized chunk too small), where vmap's fixed cost per call outweighs its gain; the loop
  then computes only the needed job, since computing others early would gain nothing.

The cost model is static (device type and per-job sizes), not timed at run time, so a scenario's
numbers do not depend on the machine's load: rerunning it gives the same bits.

Minibatches: for task ``counter`` of client i, step s and draw d, each of the client's n_i samples
gets a 64-bit key from the counter-based hash (asyncfl.exec.tensor_rng) and the b smallest keys form the
batch, in increasing key order: a uniform draw without replacement within the batch, computed for
all jobs at once on the device. The draw's sub-stream is :func:`draw_index` (s, d) = s * 8 + d
whatever the rule's number of draws, so rules share minibatches where they share draws (common
random numbers: Per-FedAvg FO and HF see the same D_s and D'_s; FedAvg's step s sees D_s). A
client with n_i <= B uses all its samples (the rest of the batch is padding, weight 0);
``batch_size: null`` means every step uses the full local data set.

The loss handed to client rules (:func:`fast_loss`) is, for the fully connected networks, a
:class:`DenseLoss`: the model's loss as a direct function of the flat vector (no
``functional_call``), cross-entropy as ``logsumexp(z) - z_y`` (PyTorch's log_softmax kernel is slow
for 10 classes on the CPU), and a hand-written gradient. It equals :meth:`FlatModel.loss` and its
autograd gradient up to float rounding; other networks use :meth:`FlatModel.loss` itself.

GPU: data, models, keys and indices stay on the device; the executor never synchronises with the
host (sizes are read from a host copy; job ids go up by pinned, non-blocking copies).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from asyncfl.algorithms.base import Batches, ClientRule
from asyncfl.data.base import FederatedData
from asyncfl.exec.tensor_rng import bits_t
from asyncfl.models.base import FlatModel, LossFn
from asyncfl.models.dense import DenseNet
from asyncfl.rng import MASK64, mix64, mix64_np, stream_keys_np

_PAD = torch.iinfo(torch.int64).max

CPU_MIN_VMAP = 8
"""On the CPU a vmapped call needs at least this many jobs (else the loop runs the needed one).
Measured on a 2-core EPYC, one thread, per job: logistic regression, 2 SGD steps: loop 306 us,
vmapped chunks of 4 / 8 / 100 jobs 210 / 116 / 33 us; MLP 784-80-60-10, Per-FedAvg HF: loop
3.1 ms, chunks of 4 / 8 / 11 2.5 / 2.35 / 2.2 ms; in float64 a chunk of 5 (its cache limit) was
slower than the loop. Eight leaves a margin where vmap's fixed cost per call is amortised."""
CUDA_MIN_VMAP = 2
"""On a GPU a vmapped call of two jobs launches as many kernels as the loop does for one."""
CPU_CACHE_BYTES = 24 << 20
"""Per-chunk working set the CPU cost model aims at (a last-level cache's worth): bigger chunks
run slower per job (measured: MLP 784-80-60-10, 300 jobs per chunk ~1.6x slower per job than 100)."""
MAX_CHUNK = 4096


class Job(NamedTuple):
    """One client task to compute: start from ``base`` (a flat model), minibatches keyed by
    (seed, client, counter). ``due``: simulated time (s) at which its update reaches the server
    (infinity: never); it orders the pending jobs for chunking and never changes a job's numbers."""

    task: int
    client: int
    base: Tensor
    counter: int
    due: float = math.inf


# ------------------------------------------------------------------------------------------------
# The client loss
# ------------------------------------------------------------------------------------------------


class DenseLoss:
    """The loss of a :class:`~asyncfl.models.dense.DenseNet` as a direct function of the flat
    vector, with its gradient written out by hand (:meth:`gradient`).

    ``functional.loss_grad`` calls :meth:`gradient` when a loss has one: back-propagation through
    the few layers of a fully connected network as a dozen explicit tensor ops, instead of
    autograd's graph (CPU: ~4x less time per gradient of a small model, alone or under vmap).
    Cross-entropy is computed as logsumexp(z) - z_y (PyTorch's log_softmax kernel is slow for 10
    classes on the CPU). Both functions are pure and vmappable; they equal ``model.loss`` and
    its autograd gradient up to float rounding (tested)."""

    def __init__(self, model: FlatModel, plan: list[tuple[int, int, str, float]]) -> None:
        self.numels = list(model.numels)
        self.shapes = [tuple(s) for s in model.shapes]
        self.plan = plan  # per Linear: (weight index, bias index or -1, activation after it, alpha)
        self.regression = model.task == "regression"
        self._arange: dict[tuple[int, str], Tensor] = {}

    def _classes(self, k: int, device: torch.device) -> Tensor:
        """arange(k), cached; only tensors made outside function transforms are kept (a tensor
        made inside torch.func.grad may belong to that transform's level)."""
        key = (k, str(device))
        t = self._arange.get(key)
        if t is None:
            t = torch.arange(k, device=device)
            if torch._C._functorch.maybe_current_level() is None:
                self._arange[key] = t
        return t

    def _linear(self, parts: tuple[Tensor, ...], h: Tensor, wi: int, bi: int) -> Tensor:
        # matmul, then the bias: F.linear's fused addmm rounds differently from its batched
        # form under vmap; this way one job's numbers are the same bits alone or in any chunk.
        z = h @ parts[wi].view(self.shapes[wi]).transpose(0, 1)
        return z + parts[bi] if bi >= 0 else z

    @staticmethod
    def _act(name: str, alpha: float, z: Tensor) -> Tensor:
        if name == "elu":
            return F.elu(z, alpha=alpha)
        if name == "relu":
            return torch.relu(z)
        if name == "tanh":
            return torch.tanh(z)
        if name == "sigmoid":
            return torch.sigmoid(z)
        return z

    def _outputs(self, w: Tensor, x: Tensor) -> tuple[tuple[Tensor, ...], list[Tensor], list[Tensor]]:
        parts = torch.split(w, self.numels)
        h = torch.flatten(x, 1)
        ins, zs = [], []
        for wi, bi, act, alpha in self.plan:
            ins.append(h)
            z = self._linear(parts, h, wi, bi)
            zs.append(z)
            h = self._act(act, alpha, z)
        return parts, ins, zs

    def __call__(self, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        _, _, zs = self._outputs(w, x)
        z = zs[-1]
        if self.regression:
            per = 0.5 * (z.reshape(-1) - y) ** 2
        else:
            per = torch.logsumexp(z, -1) - z.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return (per * m).sum() / m.sum().clamp_min(1e-12)

    def gradient(self, w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        """grad_w of :meth:`__call__` [P] by explicit back-propagation."""
        parts, ins, zs = self._outputs(w, x)
        z = zs[-1]
        scale = (m / m.sum().clamp_min(1e-12)).unsqueeze(-1)
        if self.regression:
            dz = (z - y.unsqueeze(-1).to(z.dtype)) * scale
        else:
            e = torch.exp(z - z.amax(-1, keepdim=True))
            onehot = (y.unsqueeze(-1) == self._classes(z.shape[-1], z.device)).to(z.dtype)
            dz = (e / e.sum(-1, keepdim=True) - onehot) * scale
        grads: list[Tensor] = [parts[0]] * len(self.numels)
        for k in range(len(self.plan) - 1, -1, -1):
            wi, bi, _, _ = self.plan[k]
            grads[wi] = (dz.transpose(-1, -2) @ ins[k]).reshape(-1)
            if bi >= 0:
                grads[bi] = dz.sum(0)
            if k > 0:
                dh = dz @ parts[wi].view(self.shapes[wi])
                act, alpha = self.plan[k - 1][2], self.plan[k - 1][3]
                zp, hp = zs[k - 1], ins[k]
                if act == "elu":
                    dz = dh * torch.where(zp > 0, torch.ones_like(hp), hp + alpha)
                elif act == "relu":
                    dz = dh * (zp > 0).to(dh.dtype)
                elif act == "tanh":
                    dz = dh * (1.0 - hp * hp)
                elif act == "sigmoid":
                    dz = dh * (hp * (1.0 - hp))
                else:
                    dz = dh
        return torch.cat(grads)


_ACTIVATIONS: dict[type[nn.Module], str] = {nn.ELU: "elu", nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}


def fast_loss(model: FlatModel) -> LossFn:
    """The loss the executor hands to client rules: a :class:`DenseLoss` (direct forward, hand-
    written gradient) for a :class:`~asyncfl.models.dense.DenseNet` of Linear layers and
    ELU / ReLU / Tanh / Sigmoid activations; ``model.loss`` (autograd) for any other network."""
    module = model.module
    if not isinstance(module, DenseNet):
        return model.loss
    index = {name: i for i, name in enumerate(model.names)}
    plan: list[tuple[int, int, str, float]] = []
    for i, layer in enumerate(module.net):
        if isinstance(layer, nn.Linear):
            plan.append((index[f"net.{i}.weight"], index.get(f"net.{i}.bias", -1), "", 1.0))
        elif type(layer) in _ACTIVATIONS and plan and not plan[-1][2]:
            alpha = float(getattr(layer, "alpha", 1.0))
            plan[-1] = (plan[-1][0], plan[-1][1], _ACTIVATIONS[type(layer)], alpha)
        else:
            return model.loss
    if not plan or plan[-1][2]:
        return model.loss  # the output layer must be linear (logits / regression output)
    return DenseLoss(model, plan)


# ------------------------------------------------------------------------------------------------
# Minibatches
# ------------------------------------------------------------------------------------------------


DRAW_STRIDE = 8
"""Sub-streams reserved per local step: a rule draws at most this many minibatches per step."""


def draw_index(step: Any, draw: Any) -> Any:
    """Sub-stream of draw ``draw`` of local step ``step`` (ints, numpy or torch arrays): fixed
    stride, so draw d of step s is the same minibatch for every rule that makes it."""
    return step * DRAW_STRIDE + draw


class MinibatchSampler:
    """Indices of every job's minibatches from the counter-based hash: for many jobs at once on
    the device (:meth:`indices`), or for one job on the host (:meth:`indices_one`, numpy; the same
    bits, used by the CPU loop where a dozen tiny torch ops would cost more than the job)."""

    def __init__(self, data: FederatedData, seed: int, steps: int, draws: int, batch_size: int | None) -> None:
        self.data = data
        self.steps = steps
        self.draws = draws
        self.batch_size = batch_size
        dev = data.train_x.device
        self.device = dev
        keys = stream_keys_np(seed, "minibatch", np.arange(data.num_clients))
        self.keys_np = keys
        self._keys_int = [int(k) for k in keys] if data.num_clients <= 1_000_000 else None
        self.keys = torch.from_numpy(keys.view(np.int64).copy()).to(dev)
        self.sizes_np = data.train_sizes_np.astype(np.int64)
        self.offsets_np = data.train_offsets.cpu().numpy().astype(np.int64)
        if draws > DRAW_STRIDE:
            raise ValueError(f"at most {DRAW_STRIDE} draws per step, got {draws}")
        sd = draw_index(
            torch.arange(steps, device=dev, dtype=torch.int64).view(steps, 1, 1),
            torch.arange(draws, device=dev, dtype=torch.int64).view(1, draws, 1),
        )
        self._sd_shift = sd << 32
        self._jj_np: dict[int, np.ndarray] = {}
        self._wdtype = data.train_x.dtype if data.train_x.is_floating_point() else torch.float32

    def _job_key(self, client: int, counter: int) -> int:
        """mix64(key_i ^ counter): the per-job half of :func:`asyncfl.rng.bits`."""
        key = self._keys_int[client] if self._keys_int is not None else int(self.keys_np[client])
        return mix64(key ^ (counter & MASK64))

    def width(self, n_max: int) -> int:
        """Columns b of a batch for clients holding at most ``n_max`` samples."""
        return n_max if self.batch_size is None else min(self.batch_size, n_max)

    def indices(self, clients: np.ndarray, counters: np.ndarray) -> tuple[Tensor, Tensor]:
        """Global row indices [C, S, D, b] into ``data.train_x`` and weights [C, S, D, b] for the
        jobs (clients[k], counters[k]) (host int64 arrays); b = min(B, largest n_i of these
        clients). No host synchronisation: sizes are read on the host, the rest runs on the device."""
        dev = self.device
        n_max = max(int(self.sizes_np[clients].max()), 1)
        c_t = _to_device(clients, dev)
        k_t = _to_device(counters, dev)
        sizes = self.data.train_sizes[c_t]
        offsets = self.data.train_offsets[c_t]
        j = torch.arange(n_max, device=dev, dtype=torch.int64)
        valid = j.view(1, 1, 1, n_max) < sizes.view(-1, 1, 1, 1)
        if self.batch_size is None:
            local = j.view(1, 1, 1, n_max).expand(len(clients), self.steps, self.draws, n_max)
            mask = valid.expand_as(local)
        else:
            jj = self._sd_shift | j.view(1, 1, n_max)  # [S, D, n_max]: which key within the task
            h = bits_t(self.keys[c_t].view(-1, 1, 1, 1), k_t.view(-1, 1, 1, 1), jj.unsqueeze(0))
            h = torch.where(valid, h, torch.full_like(h, _PAD))
            k = min(self.batch_size, n_max)
            vals, local = torch.topk(h, k, dim=-1, largest=False, sorted=True)
            mask = vals != _PAD
        gidx = offsets.view(-1, 1, 1, 1) + torch.where(mask, local, torch.zeros_like(local))
        return gidx, mask.to(self._wdtype)

    def indices_one(self, client: int, counter: int) -> tuple[np.ndarray, int]:
        """One job's global row indices [S, D, b_i] (host int64), b_i = min(B, n_i): every column
        a real sample, so the weights are all ones. Same samples in the same order as
        :meth:`indices` (whose extra columns for this job are padding)."""
        n = int(self.sizes_np[client])
        off = int(self.offsets_np[client])
        if self.batch_size is None:
            local = np.broadcast_to(np.arange(n, dtype=np.int64), (self.steps, self.draws, n))
            return off + local, n
        jj = self._jj_np.get(n)
        if jj is None:
            sd = draw_index(
                np.arange(self.steps, dtype=np.uint64).reshape(self.steps, 1, 1),
                np.arange(self.draws, dtype=np.uint64).reshape(1, self.draws, 1),
            )
            jj = (sd << np.uint64(32)) | np.arange(n, dtype=np.uint64).reshape(1, 1, n)
            self._jj_np[n] = jj
        h = mix64_np(np.uint64(self._job_key(client, counter)) ^ jj).view(np.int64)
        b = min(self.batch_size, n)
        # A full sort of a client's few keys is cheaper than argpartition + reorder here.
        order = np.argsort(h, axis=-1)[..., :b]
        return off + order, b


def upload(t: Tensor, dev: torch.device) -> Tensor:
    """Host tensor -> ``dev`` without a host synchronisation on CUDA: a non-blocking copy from
    pinned memory (from pageable memory the driver may wait for the stream; the caching host
    allocator keeps the pinned buffer alive until the copy is done). On the CPU: ``t`` itself."""
    if dev.type == "cpu":
        return t
    return t.pin_memory().to(dev, non_blocking=True)


def _to_device(a: np.ndarray, dev: torch.device) -> Tensor:
    """Host int64 array -> device tensor (see :func:`upload`)."""
    return upload(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)), dev)


# ------------------------------------------------------------------------------------------------
# The executor
# ------------------------------------------------------------------------------------------------


class Executor:
    """Computes client updates lazily: pending jobs together, a chunk at a time, at the first need
    (``batching='auto'``), or one at a time (``'none'``). See the module docstring.

    ``max_batch``: jobs per vmapped chunk (None: from ``memory_budget`` bytes and, on the CPU, the
    cache model). ``min_vmap``: fewest jobs worth a vmapped call (None: the device's
    constant, :data:`CPU_MIN_VMAP` / :data:`CUDA_MIN_VMAP`). ``fast``: use :func:`fast_loss`
    (False: ``model.loss`` and autograd, as a peer simulator would; benchmarks compare the two).
    ``stats`` counts jobs and calls."""

    def __init__(
        self,
        model: FlatModel,
        rule: ClientRule,
        data: FederatedData,
        seed: int,
        batching: str = "auto",
        max_batch: int | None = None,
        memory_budget: int = 1 << 30,
        min_vmap: int | None = None,
        fast: bool = True,
    ) -> None:
        if batching not in ("auto", "none"):
            raise ValueError(f"batching must be auto or none, got {batching!r}")
        self.model = model
        self.rule = rule
        self.data = data
        self.batching = batching
        self.device = data.train_x.device
        self.sampler = MinibatchSampler(data, seed, rule.steps, rule.draws_per_step, rule.batch_size)
        self.pending: dict[int, Job] = {}
        self.results: dict[int, Tensor] = {}
        # (due, task) of pending jobs that will be needed, soonest first; entries of jobs no
        # longer pending are skipped when met, and the heap is rebuilt when they pile up.
        self._queue: list[tuple[float, int]] = []
        self.max_batch = int(max_batch) if max_batch else self._auto_chunk(memory_budget)
        cuda = self.device.type == "cuda"
        self.min_vmap = int(min_vmap) if min_vmap else (CUDA_MIN_VMAP if cuda else CPU_MIN_VMAP)
        self.stats: dict[str, int] = {"jobs": 0, "calls": 0, "loop_jobs": 0, "vmap_jobs": 0, "largest_call": 0}
        self.before_chunk: Callable[[], None] | None = None
        """Called before pending jobs are picked as chunk companions, to cancel jobs whose result
        will never be needed (the runner wires the engine's certain drops in)."""
        self._host_sampler = self.device.type == "cpu"
        self._ones: dict[tuple[int, ...], Tensor] = {}  # the loop's all-ones weights, by shape
        self.loss = fast_loss(model) if fast else model.loss
        loss = self.loss

        def update_one(w: Tensor, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
            return rule.client_update(loss, w, Batches(x, y, m))

        self._one: Callable[..., Tensor] = update_one
        self._many: Callable[..., Tensor] = vmap(update_one)

    # -- sizing ----------------------------------------------------------------------------------
    def job_bytes(self) -> tuple[int, int]:
        """(device bytes, CPU-cache working set) one job adds to a vmapped chunk: a rough model of
        its gathered minibatches, activations (x 8) and sampler keys, plus 16 model copies."""
        per_sample = int(np.prod(self.data.input_shape)) * self.data.train_x.element_size()
        n_max = int(self.sampler.sizes_np.max()) if self.data.num_clients else 1
        draws = self.rule.steps * self.rule.draws_per_step
        b = self.sampler.width(max(n_max, 1))
        model = self.model.num_bytes(
            self.data.train_x.dtype if self.data.train_x.is_floating_point() else torch.float32
        )
        mem = draws * b * per_sample * 8 + 16 * model + draws * n_max * 8
        # Per local step (the working set that has to stay in cache): one step's draws and a few
        # model-sized temporaries.
        cache = self.rule.draws_per_step * b * per_sample * 2 + 6 * model
        return mem, cache

    def _auto_chunk(self, budget: int) -> int:
        """Jobs per chunk: within ``budget`` bytes and, on the CPU, within the cache model."""
        mem, cache = self.job_bytes()
        n = budget // max(mem, 1)
        if self.device.type == "cpu":
            n = min(n, CPU_CACHE_BYTES // max(cache, 1))
        return int(max(1, min(MAX_CHUNK, n)))

    # -- job life ----------------------------------------------------------------------------------
    def submit(self, task: int, client: int, base: Tensor, counter: int, due: float) -> None:
        """A job to compute when needed; ``due`` (simulated s, infinity: never needed) orders
        chunk companions."""
        self.pending[task] = Job(task, client, base, counter, due)
        if due != math.inf and self.batching != "none":
            queue = self._queue
            heapq.heappush(queue, (due, task))
            if len(queue) > 2 * len(self.pending) + 64:
                self._rebuild_queue()

    def _rebuild_queue(self) -> None:
        self._queue = [(j.due, t) for t, j in self.pending.items() if j.due != math.inf]
        heapq.heapify(self._queue)

    def cancel(self, task: int) -> None:
        self.pending.pop(task, None)
        self.results.pop(task, None)

    def _soonest(self, k: int) -> list[Job]:
        """Remove and return up to ``k`` pending jobs that will be needed, soonest due first
        (ties: lower task id); jobs that will never be needed are never taken."""
        queue, pending = self._queue, self.pending
        out: list[Job] = []
        while queue and len(out) < k:
            job = pending.pop(heapq.heappop(queue)[1], None)
            if job is not None:
                out.append(job)
        return out

    def result(self, task: int) -> Tensor:
        """The update (model delta) of ``task``, computing pending jobs as needed."""
        r = self.results.pop(task, None)
        if r is not None:
            return r
        pending = self.pending
        job = pending.pop(task)
        size = min(self.max_batch, len(pending) + 1)
        if self.batching != "none" and size >= self.min_vmap and self.before_chunk is not None:
            self.before_chunk()  # may cancel pending jobs
            size = min(self.max_batch, len(pending) + 1)
        if self.batching == "none" or size < self.min_vmap:
            # The loop gains nothing from computing others now: they wait until needed (and are
            # never computed if the run stops first or the task is lost).
            return self._loop([job])[0]
        # One chunk: this job and the others needed soonest. More pending jobs would only make
        # more chunks of the same size now; later some may never be needed, and computed ones
        # hold memory until their arrival.
        jobs = [job, *self._soonest(size - 1)]
        if len(jobs) < self.min_vmap:  # too few of the others will ever be needed to share a call
            for other in jobs[1:]:
                pending[other.task] = other
                heapq.heappush(self._queue, (other.due, other.task))
            return self._loop([job])[0]
        out = self._vmap(jobs)
        results = self.results
        for other, delta in zip(jobs[1:], out[1:], strict=True):
            results[other.task] = delta
        return out[0]

    def compute(self, jobs: list[Job]) -> list[Tensor]:
        """The updates of ``jobs`` (in order) by this executor's policy, bypassing the queue
        (benchmarks and tests)."""
        if self.batching == "none":
            return self._loop(jobs)
        out: list[Tensor] = []
        for chunk in self._chunks(jobs):
            out.extend(self._loop(chunk) if len(chunk) < self.min_vmap else self._vmap(chunk))
        return out

    def _chunks(self, jobs: list[Job]) -> list[list[Job]]:
        """Equal chunks of at most ``max_batch`` jobs (no small remainder chunk)."""
        n = len(jobs)
        if n == 0:
            return []
        k = -(-n // self.max_batch)
        q, r = divmod(n, k)  # r chunks of q + 1 jobs, then k - r chunks of q
        out, start = [], 0
        for i in range(k):
            size = q + (1 if i < r else 0)
            out.append(jobs[start : start + size])
            start += size
        return out

    # -- the two formulations ---------------------------------------------------------------------
    def _loop(self, jobs: list[Job]) -> list[Tensor]:
        """One job after another, without vmap: the host sampler on the CPU, and the dense loss's
        explicit gradient or plain autograd (functional.loss_grad outside transforms)."""
        stats = self.stats
        stats["jobs"] += len(jobs)
        stats["loop_jobs"] += len(jobs)
        stats["calls"] += len(jobs)
        stats["largest_call"] = max(stats["largest_call"], 1)
        x_all, y_all = self.data.train_x, self.data.train_y
        one = self._one
        out = []
        with torch.no_grad():
            if self._host_sampler:
                sampler = self.sampler
                wdtype = sampler._wdtype
                ones = self._ones
                for job in jobs:
                    idx_np, _ = sampler.indices_one(job.client, job.counter)
                    idx = torch.from_numpy(np.ascontiguousarray(idx_np))
                    m = ones.get(idx.shape)
                    if m is None:
                        m = ones[idx.shape] = torch.ones(idx.shape, dtype=wdtype)
                    out.append(one(job.base, x_all[idx], y_all[idx], m))
            else:
                for job in jobs:
                    gidx, mask = self.sampler.indices(np.array([job.client]), np.array([job.counter]))
                    out.append(one(job.base, x_all[gidx[0]], y_all[gidx[0]], mask[0]))
        return out

    def _vmap(self, chunk: list[Job]) -> list[Tensor]:
        """One vmapped call over the chunk."""
        stats = self.stats
        stats["jobs"] += len(chunk)
        stats["vmap_jobs"] += len(chunk)
        stats["calls"] += 1
        stats["largest_call"] = max(stats["largest_call"], len(chunk))
        clients = np.fromiter((j.client for j in chunk), dtype=np.int64, count=len(chunk))
        counters = np.fromiter((j.counter for j in chunk), dtype=np.int64, count=len(chunk))
        gidx, mask = self.sampler.indices(clients, counters)
        with torch.no_grad():
            w = _stack_bases(chunk)
            out = self._many(w, self.data.train_x[gidx], self.data.train_y[gidx], mask)
        return list(out.unbind(0))


def _stack_bases(chunk: list[Job]) -> Tensor:
    """[C, P] base models: a stride-0 expansion when every job pulled the same version (no
    copy), else a stack."""
    bases = [j.base for j in chunk]
    first = bases[0]
    if all(b is first for b in bases):
        return first.unsqueeze(0).expand(len(bases), -1)
    return torch.stack(bases)


__all__ = ["CPU_MIN_VMAP", "CUDA_MIN_VMAP", "DenseLoss", "Executor", "Job", "MinibatchSampler", "fast_loss", "upload"]
