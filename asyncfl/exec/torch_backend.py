"""The numeric side of the engine's :class:`asyncfl.sim.backend.Backend` protocol, in torch.

Holds the server model and the reference-counted version store, hands jobs to the lazy
:class:`~asyncfl.exec.executor.Executor`, applies server steps with the algorithm's server rule and
evaluates. Non-finite models or updates raise :class:`~asyncfl.errors.DivergedError`.

``local`` training (no shared model) keeps one model per client instead: a task starts from the
client's own model and its result replaces it; the "server model" reported for global metrics is
the mean of the client models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from asyncfl.algorithms.base import ClientRule
from asyncfl.algorithms.evaluation import evaluate
from asyncfl.algorithms.server import ServerStep
from asyncfl.config.schema import EvalConfig, ServerConfig
from asyncfl.data.base import FederatedData
from asyncfl.errors import DivergedError
from asyncfl.exec.executor import Executor, upload
from asyncfl.exec.versions import VersionStore
from asyncfl.models.base import FlatModel
from asyncfl.rng import numpy_generator
from asyncfl.types import ClientId, ModelVersion, SimTime

DIAGNOSTIC_METRICS = ("versions_held",)
"""Metrics about the simulator itself, not the learning: they may differ between batched and
one-at-a-time execution of the same run (batched runs free the bases of certain drops earlier)."""


class TorchBackend:
    """Server state and numerics for one run."""

    def __init__(
        self,
        model: FlatModel,
        rule: ClientRule,
        data: FederatedData,
        w0: Tensor,
        server: ServerConfig,
        eval_cfg: EvalConfig,
        seed: int,
        executor: Executor,
        model_bytes: int,
        step: ServerStep | None = None,
    ) -> None:
        self.model = model
        self.rule = rule
        self.data = data
        self.server = server
        self.eval_cfg = eval_cfg
        self.seed = seed
        self.executor = executor
        self._model_bytes = model_bytes
        self.step = step if step is not None else ServerStep.from_config(server, rule.server_rule)
        """The server step (its lr, aggregation, delta or mixing): runs get it from
        :func:`asyncfl.runs.server_rule.server_rule`."""
        self.versions = VersionStore()
        self._w0 = w0
        self.version = ModelVersion(0)
        self.versions.put(self.version, w0)
        self._task_base: dict[int, int] = {}
        self._task_client: dict[int, int] = {}
        self._sizes = data.train_sizes_np.astype(np.float64)
        self._work = np.array([rule.work(int(n)) for n in data.train_sizes_np], dtype=np.float64)
        self.local = rule.server_rule == "none"
        self.client_models: dict[int, Tensor] = {}
        self._eval_clients = self._pick_eval_clients()

    # -- Backend protocol -------------------------------------------------------------------------
    @property
    def model_bytes(self) -> int:
        return self._model_bytes

    def task_work(self, client: ClientId) -> float:
        return float(self._work[client])

    @property
    def current(self) -> Tensor:
        return self.versions.get(self.version)

    def dispatch(self, task: int, client: ClientId, base_version: ModelVersion, counter: int, due: SimTime) -> None:
        if self.local:
            base = self.client_models.get(client, self._w0)
            self._task_base[task] = -1
        else:
            base = self.versions.acquire(base_version)
            self._task_base[task] = base_version
        self._task_client[task] = client
        self.executor.submit(task, client, base, counter, float(due))

    def discard(self, task: int) -> None:
        self.executor.cancel(task)
        self._release(task)

    def cancel_certain_drops(self, tasks: Sequence[int]) -> None:
        """Stop waiting to compute ``tasks`` (the engine's :meth:`Engine.certain_drops`: they will
        be dropped as stale on arrival) and free their base versions now. The engine still records
        each drop and calls :meth:`discard` at its arrival."""
        pending = self.executor.pending
        for task in tasks:
            if task in pending:
                self.executor.cancel(task)
                base = self._task_base[task]
                if base >= 0:
                    self.versions.release(ModelVersion(base))
                    self._task_base[task] = -1  # released: discard() must not release it again

    def _release(self, task: int) -> None:
        base = self._task_base.pop(task)
        self._task_client.pop(task)
        if base >= 0:
            self.versions.release(ModelVersion(base))

    def apply(self, updates: Sequence[tuple[int, float]], new_version: ModelVersion, now: SimTime) -> None:
        tasks = [t for t, _ in updates]
        clients = [self._task_client[t] for t in tasks]
        deltas = [self.executor.result(t) for t in tasks]
        stacked = torch.stack(deltas) if deltas else self.current.new_zeros((0, self.current.numel()))
        # One finiteness check (one host sync on a GPU) per step; the culprit is sought only on failure.
        if not bool(torch.isfinite(stacked).all()):
            for c, d in zip(clients, deltas, strict=True):
                if not bool(torch.isfinite(d).all()):
                    raise DivergedError("update", int(self.version), c)
        x = self.current
        if self.local:
            for t, c, d in zip(tasks, clients, deltas, strict=True):
                base = self.client_models.get(c, self._w0)
                self.client_models[c] = base + d
                self._release(t)
            new = x.clone()  # no shared model: versions only count steps
        else:
            step = self.step
            weights = [w for _, w in updates]
            counts = [float(self._sizes[c]) for c in clients]
            coeffs = upload(torch.tensor(step.coefficients(weights, counts), dtype=x.dtype), x.device)  # no GPU sync
            bases = None
            if step.needs_bases:
                bases = torch.stack([self.versions.get(ModelVersion(self._task_base[t])) for t in tasks])
            new = step(x, stacked, bases, coeffs)
            for t in tasks:
                self._release(t)
        if not bool(torch.isfinite(new).all()):
            raise DivergedError("server model", int(new_version), clients[-1] if clients else None)
        old = self.version
        self.versions.put(new_version, new)
        self.version = new_version
        self.versions.release(old)

    def evaluate(self, version: ModelVersion, now: SimTime) -> Mapping[str, float]:
        if self.local:
            return self._evaluate_local()
        out = evaluate(
            self.model,
            self.rule,
            self.data,
            self.current,
            self._eval_clients,
            self.eval_cfg.adapt_steps,
            self.eval_cfg.grad_norm,
            None,
            self.eval_cfg.adapt_lr,
        )
        for name, value in out.items():
            if name.endswith("loss") and not np.isfinite(value):
                raise DivergedError(name, int(version))
        # Memory diagnostic, not a learning metric: batched runs free the bases of certain drops
        # earlier (cancel_certain_drops), so it can be lower than one at a time.
        out["versions_held"] = float(len(self.versions))
        return out

    # -- checkpoint state ---------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Everything needed to continue exactly: plain data (JSON) and named tensors.

        Tensors: every live version, computed-but-unused updates, local client models. Pending
        jobs are saved as (task, client, base version, counter, due; null for never): they are
        recomputed on resume, in the same chunk composition as the uninterrupted run would use."""
        tensors: dict[str, Tensor] = {f"version/{v}": self.versions.get(ModelVersion(v)) for v in self.versions.live()}
        tensors["w0"] = self._w0
        for task, delta in self.executor.results.items():
            tensors[f"result/{task}"] = delta
        for client, w in self.client_models.items():
            tensors[f"client/{client}"] = w
        jobs = [
            [j.task, j.client, self._task_base[j.task], j.counter, None if math.isinf(j.due) else j.due]
            for j in self.executor.pending.values()
        ]
        done = [[t, self._task_client[t], self._task_base[t]] for t in self.executor.results]
        busy = set(self.executor.pending) | set(self.executor.results)
        cancelled = [[t, c] for t, c in self._task_client.items() if t not in busy]
        data = {
            "version": int(self.version),
            "refs": {str(v): self.versions.refs(ModelVersion(v)) for v in self.versions.live()},
            "peak": self.versions.peak,
            "pending_jobs": jobs,
            "computed": done,
            "cancelled": cancelled,
        }
        return data, {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def load_state(self, data: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """Restore :meth:`state` into a freshly built backend of the same scenario."""
        dev, dtype = self._w0.device, self._w0.dtype

        def t(name: str) -> Tensor:
            return tensors[name].to(device=dev, dtype=dtype)

        self._w0 = t("w0")
        self.versions = VersionStore()
        for v, refs in sorted(data["refs"].items(), key=lambda kv: int(kv[0])):
            self.versions.put(ModelVersion(int(v)), t(f"version/{v}"))
            for _ in range(int(refs) - 1):
                self.versions.acquire(ModelVersion(int(v)))
        self.versions.peak = int(data["peak"])
        self.version = ModelVersion(int(data["version"]))
        self.client_models = {int(k.split("/", 1)[1]): t(k) for k in tensors if k.startswith("client/")}
        self._task_base, self._task_client = {}, {}
        self.executor.pending.clear()
        self.executor.results.clear()
        for task, client, base, counter, due in data["pending_jobs"]:
            self._task_base[task], self._task_client[task] = base, client
            w = self.client_models.get(client, self._w0) if base < 0 else self.versions.get(ModelVersion(base))
            self.executor.submit(task, client, w, counter, math.inf if due is None else float(due))
        for task, client, base in data["computed"]:
            self._task_base[task], self._task_client[task] = base, client
            self.executor.results[task] = t(f"result/{task}")
        for task, client in data.get("cancelled", []):  # see cancel_certain_drops
            self._task_base[task], self._task_client[task] = -1, client

    # -- helpers ----------------------------------------------------------------------------------
    def _pick_eval_clients(self) -> list[int] | None:
        n = self.data.num_clients
        k = self.eval_cfg.clients
        if k is None or k >= n:
            return None
        rng = numpy_generator(self.seed, "eval_clients")
        return sorted(int(c) for c in rng.choice(n, size=k, replace=False))

    def _evaluate_local(self) -> dict[str, float]:
        """Local training: each client's own model on its own test data; global metrics on the
        mean of the client models."""
        from asyncfl.algorithms.evaluation import evaluate_client_models

        n = self.data.num_clients
        models = torch.stack([self.client_models.get(c, self._w0) for c in range(n)])
        return evaluate_client_models(self.model, self.data, models, self._eval_clients)


__all__ = ["TorchBackend"]
