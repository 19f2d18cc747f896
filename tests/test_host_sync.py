"""A CPU proxy for the GPU path's promise: no host synchronisation in the per-update hot path except
where the simulation needs a number (docs/performance.md, section GPU).

On a GPU, a host sync is a call whose result the host must wait for. :func:`counted` runs a function
under a ``TorchDispatchMode`` (ATen ops as they really run, also below ``vmap`` / ``grad``) and a
``TorchFunctionMode`` (Python-level calls, some of which dispatch nothing on the CPU) and records:

``syncs`` -- calls that synchronise with the device on CUDA:

- scalar extraction: ``aten._local_scalar_dense``, what ``.item()``, ``float(t)``, ``int(t)``,
  ``bool(t)``, ``if t:``, ``torch.is_nonzero`` and formatting a tensor call;
- ops returning a Python bool: ``aten.equal``, ``aten.allclose``;
- ops whose output shape depends on the data (the host reads a count): ``nonzero``,
  ``masked_select``, ``unique``, ``bincount``, ``repeat_interleave`` without ``output_size``, and
  indexing (``index`` / ``index_put``) with a boolean mask;
- device -> host copies: ``aten._to_copy`` / ``aten.copy_`` into the CPU from another device
  (never met on the CPU; there so that the counter stays right on a GPU);
- Python-level reads of tensor memory: ``Tensor.tolist``, ``.cpu()``, ``.numpy()``,
  ``numpy.asarray(t)`` (``__array__``) and ``.to("cpu")`` (a literal "cpu"). On a CPU tensor
  these dispatch nothing (``.numpy()`` a bare ``detach``), so only the function mode sees them
  (``t.cpu().numpy()`` counts once; reads of tensors made from host data count none);
- blocking host -> device copies, which CUDA makes with a ``cudaStreamSynchronize``:
  ``torch.tensor`` / ``torch.as_tensor`` of host data with an explicit ``device=``, and
  ``.to(device)`` / ``.cuda()`` / ``copy_`` of a *host-born* tensor (one made by ``torch.tensor``
  or ``torch.as_tensor`` from host data) without ``non_blocking``.

``maybe`` -- ``non_blocking`` uploads of a host-born tensor that is not pinned. PyTorch then calls
``cudaMemcpyAsync`` from pageable memory, which the CUDA runtime documents as possibly synchronous
with respect to the host (the driver may wait for the stream to stage the copy);
``torch.cuda.set_sync_debug_mode`` does not report it. The executor pins its uploads for this
reason (``executor.upload``; the backend uploads the server step's coefficients the same way).

What the proxy cannot see (it runs on the CPU, where nothing is asynchronous):

- the executor's job-id uploads: ``executor.upload`` returns the host tensor on the CPU, so
  its ``pin_memory()`` / ``non_blocking`` copy never runs here;
- uploads of tensors made by ``torch.from_numpy`` (not a torch function: the mode never sees it),
  and whether ``t.to(x.device)`` of any other tensor is a copy on a GPU (here both are the CPU);
- the CUDA caching allocators (a ``cudaMalloc`` retry after freeing cached blocks, pinned-memory
  allocation), ``torch.cuda.synchronize`` / events / streams, kernels that sync inside one ATen op,
  and syncs in compiled code or C++ extensions below the Python dispatcher.

So a clean proxy is necessary, not sufficient: ``test_cuda_executor_makes_no_host_sync`` in
tests/test_executor.py (``torch.cuda.set_sync_debug_mode("error")``) is the check on a GPU.

The device path on the CPU: the executor's CPU loop draws a lone job's minibatch with a host
sampler (``Executor._host_sampler``: numpy, cheaper than a dozen tiny torch ops on the CPU), a code
path a GPU run never takes. :func:`device_path` sets ``_host_sampler = False`` after construction,
so that every job is drawn by the device sampler ``MinibatchSampler.indices`` as on CUDA, and
``min_vmap = CUDA_MIN_VMAP`` (chunks of two jobs are vmapped, as on CUDA).
"""

from __future__ import annotations

import copy
import os
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
from test_executor import BASE, CASES, scenario
from torch.func import vmap
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

import asyncfl
from asyncfl.algorithms import server as server_rules
from asyncfl.algorithms.base import Batches
from asyncfl.config.loader import validate
from asyncfl.config.schema import ServerConfig
from asyncfl.exec.executor import CUDA_MIN_VMAP, Executor, MinibatchSampler
from asyncfl.exec.torch_backend import TorchBackend
from asyncfl.runs.runner import Built, build
from asyncfl.types import ClientId, ModelVersion, SimTime

ASYNCFL_DIR = os.path.dirname(os.path.abspath(asyncfl.__file__))
REPO_DIR = os.path.dirname(ASYNCFL_DIR)
TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))

# ------------------------------------------------------------------------------------------------
# the counter
# ------------------------------------------------------------------------------------------------

_aten = torch.ops.aten
_ALWAYS_SYNC = {
    _aten._local_scalar_dense.default,
    _aten.is_nonzero.default,
    _aten.equal.default,
    _aten.allclose.default,
    _aten.nonzero.default,
    _aten.masked_select.default,
    _aten._unique.default,
    _aten._unique2.default,
    _aten.unique_dim.default,
    _aten.unique_consecutive.default,
    _aten.bincount.default,
}
_INDEX_OPS = {_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default, _aten._index_put_impl_.default}
_HOST_READS = {
    torch.Tensor.tolist: "Tensor.tolist",
    torch.Tensor.cpu: "Tensor.cpu",
    torch.Tensor.numpy: "Tensor.numpy",
    torch.Tensor.__array__: "Tensor.__array__",
}
_COUNTER_FRAMES = {"_locate", "_read", "_upload", "__torch_dispatch__", "__torch_function__"}


@dataclass(frozen=True)
class Sync:
    """One host sync: the op, the innermost frame outside torch that made it (file:line function
    and its source line), and every asyncfl function on the stack, outermost first."""

    op: str
    where: str
    line: str
    functions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.op} at {self.where}: {self.line}"


def _locate(op: str) -> Sync:
    stack = [f for f in traceback.extract_stack() if f.name not in _COUNTER_FRAMES]
    f = [f for f in stack if not f.filename.startswith(TORCH_DIR + os.sep)][-1]
    where = f"{os.path.relpath(f.filename, REPO_DIR)}:{f.lineno} {f.name}"
    ours = tuple(g.name for g in stack if g.filename.startswith(ASYNCFL_DIR + os.sep))
    return Sync(op, where, (f.line or "").strip(), ours)


def _dispatch_syncs(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether this ATen call makes the host wait for the device (on a GPU)."""
    if func in _ALWAYS_SYNC:
        return True
    if func is _aten.repeat_interleave.Tensor:
        return kwargs.get("output_size") is None
    if func in _INDEX_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
    if func is _aten._to_copy.default:
        device = kwargs.get("device")
        return device is not None and torch.device(device).type == "cpu" and args[0].device.type != "cpu"
    if func is _aten.copy_.default:
        dst, src = args[0], args[1]
        return dst.device.type == "cpu" and src.device.type != "cpu"
    return False


def _to_target(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The device argument of ``Tensor.to`` (a device, a string, a tensor to match) or None."""
    if "device" in kwargs:
        return kwargs["device"]
    if len(args) > 1 and isinstance(args[1], (str, torch.device, torch.Tensor)):
        return args[1]
    return None


def _non_blocking(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if "non_blocking" in kwargs:
        return bool(kwargs["non_blocking"])
    return any(isinstance(a, bool) and a for a in args[2:])  # to(device, dtype, non_blocking) / copy_(src, nb)


@dataclass
class Counted:
    """What :func:`counted` saw: ``syncs``, ``maybe`` (see the module docstring), ``ops`` (ATen ops
    dispatched: shows the modes really were in the path) and ``out`` (the function's result)."""

    syncs: list[Sync] = field(default_factory=list)
    maybe: list[Sync] = field(default_factory=list)
    ops: int = 0
    out: Any = None

    def report(self) -> str:
        lines = [str(s) for s in self.syncs] + [f"(maybe) {s}" for s in self.maybe]
        return "\n".join(lines) or "(none)"


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, into: Counted) -> None:
        super().__init__()
        self.into = into

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        self.into.ops += 1
        if _dispatch_syncs(func, args, kwargs):
            self.into.syncs.append(_locate(func.overloadpacket.__name__))
        return func(*args, **kwargs)


class _FunctionCounter(TorchFunctionMode):
    def __init__(self, into: Counted) -> None:
        super().__init__()
        self.into = into
        self.host_born = WeakIdKeyDictionary()  # tensors made from host data, by identity
        self.last_copy: tuple[str, Any] | None = None  # (where, weakref) of the last .cpu() / .to("cpu")

    def _upload(self, src: Any, non_blocking: bool) -> None:
        if not non_blocking:
            self.into.syncs.append(_locate("host->device copy (blocking)"))
        elif not src.is_pinned():
            self.into.maybe.append(_locate("host->device copy (pageable, non_blocking)"))

    def _read(self, is_copy: bool, name: str, src: Any, out: Any) -> None:
        """A read of tensor memory on the host: a sync, unless ``src`` was made from host data or
        is the result of the copy just counted on the same line (``t.cpu().numpy()``: one copy)."""
        if src in self.host_born:
            return
        sync = _locate(name)
        last = self.last_copy
        if not is_copy and last is not None and last[0] == sync.where and last[1]() is src:
            return
        self.into.syncs.append(sync)
        if is_copy:
            self.last_copy = (sync.where, weakref.ref(out))

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _HOST_READS:
            self._read(func is torch.Tensor.cpu, _HOST_READS[func], args[0], out)
        elif func in (torch.tensor, torch.as_tensor) and args and not isinstance(args[0], torch.Tensor):
            device = kwargs.get("device")
            if device is None or device == "cpu":  # a literal "cpu" stays on the host on a GPU too
                self.host_born[out] = True
            else:
                self.into.syncs.append(_locate(f"torch.{func.__name__}(host data, device=...)"))
        elif func is torch.Tensor.to:
            target = _to_target(args, kwargs)
            if isinstance(target, str) and torch.device(target).type == "cpu":
                self._read(True, "Tensor.to('cpu')", args[0], out)  # a device -> host copy on a GPU
            elif target is not None and args[0] in self.host_born:
                self._upload(args[0], _non_blocking(args, kwargs))
        elif func is torch.Tensor.cuda and args[0] in self.host_born:
            self._upload(args[0], _non_blocking(args, kwargs))
        elif func is torch.Tensor.copy_ and args[1] in self.host_born and args[0] not in self.host_born:
            self._upload(args[1], _non_blocking(args, kwargs))
        return out


def counted(fn: Callable[[], Any]) -> Counted:
    """Run ``fn()`` and record its host syncs."""
    result = Counted()
    with _FunctionCounter(result), _DispatchCounter(result):
        result.out = fn()
    return result


# ------------------------------------------------------------------------------------------------
# the device path on the CPU
# ------------------------------------------------------------------------------------------------


def device_path(ex: Executor) -> Executor:
    """Make ``ex`` run the code a CUDA executor runs (module docstring)."""
    ex._host_sampler = False
    ex.min_vmap = CUDA_MIN_VMAP
    return ex


def built_for(name: str, **execution: Any) -> Built:
    built = build(scenario(name, **execution))
    device_path(built.backend.executor)
    return built


def dispatch_jobs(backend: TorchBackend, n: int, first_task: int = 0) -> list[int]:
    """n tasks from the current version on distinct clients, due in task order."""
    tasks = list(range(first_task, first_task + n))
    clients = backend.data.num_clients
    for t in tasks:
        backend.dispatch(t, ClientId(t % clients), backend.version, t // clients, SimTime(float(t)))
    return tasks


def results(ex: Executor, tasks: list[int]) -> list[torch.Tensor]:
    return [ex.result(t) for t in tasks]


def is_finiteness_check(s: Sync) -> bool:
    """One of apply's two documented syncs: bool(torch.isfinite(...).all())."""
    return s.op == "_local_scalar_dense" and "isfinite" in s.line and "apply" in s.functions


def in_evaluation(s: Sync) -> bool:
    return "evaluate" in s.functions or "_evaluate_local" in s.functions


RULES = [name for name in sorted(CASES) if name != "local"]  # local: fedavg's client rule


# ------------------------------------------------------------------------------------------------
# the counter itself
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn,expect",
    [
        (lambda t: t[0].item(), "_local_scalar_dense"),
        (lambda t: float(t[0]), "_local_scalar_dense"),
        (lambda t: int(t[0]), "_local_scalar_dense"),
        (lambda t: bool(t[0]), "_local_scalar_dense"),
        (lambda t: 1 if (t > 0).all() else 0, "_local_scalar_dense"),
        (lambda t: torch.is_nonzero(t[0]), "_local_scalar_dense"),
        (lambda t: f"{t[0]:.3f}", "_local_scalar_dense"),
        (lambda t: torch.equal(t, t), "equal"),
        (lambda t: torch.allclose(t, t), "allclose"),
        (lambda t: t.nonzero(), "nonzero"),
        (lambda t: t[t > 1.5], "index"),
        (lambda t: t.masked_select(t > 1.5), "masked_select"),
        (lambda t: torch.unique(t), "_unique2"),
        (lambda t: torch.repeat_interleave(t.long()), "repeat_interleave"),
        (lambda t: t.tolist(), "Tensor.tolist"),
        (lambda t: t.cpu(), "Tensor.cpu"),
        (lambda t: t.numpy(), "Tensor.numpy"),
        (lambda t: np.asarray(t), "Tensor.__array__"),
        (lambda t: t.to("cpu"), "Tensor.to('cpu')"),
        (lambda t: torch.tensor([1.0, 2.0], device=t.device), "torch.tensor(host data, device=...)"),
        (lambda t: torch.as_tensor([0.5], dtype=t.dtype, device=t.device), "torch.as_tensor(host data, device=...)"),
        (lambda t: torch.tensor([1.0]).to(t.device), "host->device copy (blocking)"),
        (lambda t: t[:1].copy_(torch.tensor([1.0])), "host->device copy (blocking)"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_counter_sees_each_kind_of_sync(fn: Callable[[torch.Tensor], Any], expect: str) -> None:
    t = torch.tensor([1.0, 2.0, 3.0])  # made outside: a tensor made from host data is read for free
    c = counted(lambda: fn(t))
    assert [s.op for s in c.syncs] == [expect] and not c.maybe, c.report()


def test_counter_counts_one_copy_once_and_host_tensors_never() -> None:
    t = torch.ones(3)
    c = counted(lambda: (t.cpu().numpy(), t.to("cpu").tolist(), torch.tensor([1.0]).numpy()))
    assert [s.op for s in c.syncs] == ["Tensor.cpu", "Tensor.to('cpu')"], c.report()

    def two_reads() -> None:
        t.cpu()
        t.numpy()

    c = counted(two_reads)
    assert [s.op for s in c.syncs] == ["Tensor.cpu", "Tensor.numpy"], c.report()


def test_counter_flags_pageable_non_blocking_uploads() -> None:
    t = torch.ones(3)
    c = counted(lambda: torch.tensor([0.5, 0.5], dtype=t.dtype).to(t.device, non_blocking=True))
    assert not c.syncs and [s.op for s in c.maybe] == ["host->device copy (pageable, non_blocking)"]


def test_counter_ignores_ordinary_ops_and_sees_below_vmap() -> None:
    t = torch.arange(12.0).view(3, 4)
    idx = torch.tensor([2, 0])

    def work() -> Any:
        a = torch.where(t > 3, t, torch.zeros_like(t))[idx]  # an integer gather
        b = torch.topk(t, 2, dim=-1, largest=False).indices
        c = vmap(lambda r: (r * r).sum())(t)
        d = torch.isfinite(t).all()  # a 0-d tensor: stays on the device until read
        return a, b, c, d, t.to(torch.float64), t.to(t.device), t.shape[0], torch.as_tensor(t, dtype=torch.float64)

    c = counted(work)
    assert not c.syncs and not c.maybe and c.ops > 8, c.report()
    # Inside vmap a scalar read of a batched tensor is refused outright, so a vmapped rule cannot
    # hide one (it raises); the proxy's work is the code around the vmapped call.
    with pytest.raises(RuntimeError, match="item"):
        vmap(lambda r: r.sum().item())(t)


def test_counter_catches_a_sync_planted_in_the_hot_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check: a client rule that reads a number is seen once per job, located, on the
    one-at-a-time path; a read of the sampler's output is seen once per vmapped chunk."""
    built = built_for("fedbuff", batching="none")
    ex = built.backend.executor
    cls = type(ex.rule)
    original = cls.client_update

    def leaky(self: Any, loss: Any, w: torch.Tensor, batches: Batches) -> torch.Tensor:
        if float(w.norm()) > 1e9:  # planted
            raise AssertionError
        return original(self, loss, w, batches)

    monkeypatch.setattr(cls, "client_update", leaky)
    tasks = dispatch_jobs(built.backend, 3)
    c = counted(partial(results, ex, tasks))
    assert [s.op for s in c.syncs] == ["_local_scalar_dense"] * 3
    assert all(s.where.startswith("tests/test_host_sync.py:") and "float(w.norm())" in s.line for s in c.syncs)
    assert all("_loop" in s.functions for s in c.syncs)
    monkeypatch.undo()

    indices = MinibatchSampler.indices

    def leaky_indices(self: MinibatchSampler, clients: np.ndarray, counters: np.ndarray) -> Any:
        gidx, mask = indices(self, clients, counters)
        assert int(gidx.max()) < self.data.train_x.shape[0]  # planted
        return gidx, mask

    monkeypatch.setattr(MinibatchSampler, "indices", leaky_indices)
    built = built_for("fedbuff")
    ex = built.backend.executor
    tasks = dispatch_jobs(built.backend, 6)
    c = counted(lambda: ex.result(tasks[0]))
    assert ex.stats["vmap_jobs"] == 6 and [s.op for s in c.syncs] == ["_local_scalar_dense"]
    assert "_vmap" in c.syncs[0].functions


# ------------------------------------------------------------------------------------------------
# the hot path
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RULES)
def test_vmapped_chunk_makes_no_host_sync(name: str) -> None:
    """(1) Executor.result forming a vmapped chunk of 6 jobs: the device sampler, the gather, the
    stacked bases and the vmapped rule make no host sync, on the first chunk and the next (caches
    filled); reading the chunk's other results makes none either."""
    built = built_for(name)
    ex = built.backend.executor
    for round_ in range(2):
        tasks = dispatch_jobs(built.backend, 6, first_task=10 * round_)
        before = ex.stats["vmap_jobs"]
        c = counted(partial(ex.result, tasks[0]))
        assert ex.stats["vmap_jobs"] - before == 6, "the call did not compute one chunk of 6"
        assert c.ops > 20 and c.out.shape == built.backend.current.shape
        assert not c.syncs and not c.maybe, c.report()
        c = counted(partial(results, ex, tasks[1:]))
        assert not c.syncs and not c.maybe, c.report()


@pytest.mark.parametrize("name", RULES)
def test_one_at_a_time_on_the_device_path_makes_no_host_sync(name: str) -> None:
    """(2) batching none with the device sampler (as on CUDA): one job per call, no host sync."""
    built = built_for(name, batching="none")
    ex = built.backend.executor
    tasks = dispatch_jobs(built.backend, 3)
    c = counted(partial(results, ex, tasks))
    assert ex.stats["loop_jobs"] == 3 and c.ops > 20
    assert not c.syncs and not c.maybe, c.report()


def test_the_cpu_only_host_sampler_loop_reads_no_tensor() -> None:
    """The CPU's own loop (host sampler; never taken on a GPU) reads no tensor either."""
    built = build(scenario("per_fedavg_hf", batching="none"))
    ex = built.backend.executor
    assert ex._host_sampler
    tasks = dispatch_jobs(built.backend, 3)
    c = counted(partial(results, ex, tasks))
    assert not c.syncs and not c.maybe, c.report()


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("name", ["fedbuff", "fedasync", "local", "pfedme"])
def test_apply_syncs_only_for_the_finiteness_checks(name: str, k: int) -> None:
    """(3) TorchBackend.apply, a normal server step of K updates (delta, mixing and local server
    rules): exactly the two syncs the docs name, the finiteness check of the stacked updates and
    the one of the new model, whatever K; computing the updates inside apply adds none."""
    built = built_for(name)
    b = built.backend
    for step in (1, 2):
        tasks = dispatch_jobs(b, k + 1, first_task=10 * step)  # one more pending: a chunk companion
        updates = [(u, 0.8) for u in tasks[:k]]
        c = counted(partial(b.apply, updates, ModelVersion(step), SimTime(float(step))))
        assert len(c.syncs) == 2 and all(is_finiteness_check(s) for s in c.syncs), c.report()
        b.discard(tasks[k])


@pytest.mark.parametrize("name", ["fedbuff", "fedasync"])
def test_apply_uploads_only_from_pinned_memory(name: str) -> None:
    """(3) The step's coefficients go up without a possible sync: a pinned, non-blocking copy."""
    built = built_for(name)
    b = built.backend
    tasks = dispatch_jobs(b, 2)
    c = counted(partial(b.apply, [(t, 0.8) for t in tasks], ModelVersion(1), SimTime(1.0)))
    assert not c.maybe, c.report()


def test_server_steps_make_no_host_sync() -> None:
    """(4) The server step functions with device coefficients (as the backend passes them), and
    step_coefficients (host floats only). With a list of floats the coefficients are uploaded by a
    blocking copy, one sync per call on CUDA: hot-path callers must pass device tensors."""
    g = torch.Generator().manual_seed(0)
    x, deltas, bases = torch.randn(7, generator=g), torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    coeffs = torch.tensor([0.2, 0.3, 0.5])
    server = ServerConfig.model_validate({"mode": "buffered", "buffer_size": 3, "aggregation": "samples"})

    def steps(cs: Any) -> Any:
        return (
            server_rules.step_coefficients(server, [1.0, 0.5, 0.25], [10.0, 20.0, 30.0]),
            server_rules.delta_step(x, deltas, cs),
            server_rules.mixing_step(x, bases + deltas, cs),
            [server_rules.apply_step(r, x, deltas, bases, cs) for r in ("delta", "mixing", "none")],
        )

    c = counted(lambda: steps(coeffs))
    assert not c.syncs and not c.maybe and c.ops > 5, c.report()
    c = counted(lambda: steps([0.2, 0.3, 0.5]))
    assert [s.op for s in c.syncs] == ["torch.as_tensor(host data, device=...)"] * 4, c.report()


@pytest.mark.parametrize("batch_size", [5, None])
def test_device_sampler_makes_no_host_sync(batch_size: int | None) -> None:
    """(4) MinibatchSampler.indices: sizes come from the host copy, the rest stays on the device."""
    data = built_for("fedbuff").data
    s = MinibatchSampler(data, 11, steps=3, draws=2, batch_size=batch_size)
    clients = np.arange(data.num_clients, dtype=np.int64)
    c = counted(lambda: s.indices(clients, clients * 3 + 1))
    assert c.out[0].shape[:3] == (data.num_clients, 3, 2) and c.ops > 5
    assert not c.syncs and not c.maybe, c.report()


@pytest.mark.parametrize(
    "name,batching",
    [
        ("fedasync", "auto"),
        ("fedbuff", "auto"),
        ("per_fedavg_hf", "auto"),
        ("pfedme", "auto"),
        ("local", "auto"),
        ("per_fedavg_exact", "none"),
    ],
)
def test_whole_run_syncs_only_for_finiteness_and_evaluation(
    name: str, batching: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(1-3) End to end, the engine driving everything on the device path: outside evaluation
    the run's only syncs are the two finiteness checks of each server step (and, pending
    asyncfl/exec/torch_backend.py:140, the coefficients' pageable upload, one per step). Evaluation syncs --
    it produces numbers -- are counted, not asserted (printed with -s)."""
    alg, server = CASES[name]
    data = copy.deepcopy(BASE)
    data.update(algorithm=alg, server=server, stop={"client_updates": 24}, eval={"every_steps": 6})
    data["execution"] = {"batching": batching}
    built = build(validate(data))
    b = built.backend
    ex = device_path(b.executor)
    calls = {"apply": 0, "evaluate": 0}
    for method in calls:
        original = getattr(b, method)

        def wrapper(*args: Any, _m: str = method, _f: Any = original, **kwargs: Any) -> Any:
            calls[_m] += 1
            return _f(*args, **kwargs)

        monkeypatch.setattr(b, method, wrapper)
    c = counted(built.engine.run)
    evaluation = [s for s in c.syncs if in_evaluation(s)]
    hot = [s for s in c.syncs if not in_evaluation(s)]
    steps = calls["apply"]
    assert steps > 3 and ex.stats["vmap_jobs" if batching == "auto" else "loop_jobs"] > 0
    assert len(hot) == 2 * steps and all(is_finiteness_check(s) for s in hot), "\n".join(map(str, hot))
    assert all("apply" in s.functions for s in c.maybe) and len(c.maybe) <= steps
    print(
        f"\n{name}: {steps} server steps, {ex.stats['vmap_jobs']} vmapped jobs / {ex.stats['loop_jobs']} "
        f"one at a time; hot-path syncs {len(hot)} ({len(hot) / steps:g} per step), maybe {len(c.maybe)}; "
        f"{calls['evaluate']} evaluations, {len(evaluation)} syncs "
        f"({len(evaluation) / max(calls['evaluate'], 1):g} each): {sorted({s.op for s in evaluation})}"
    )
