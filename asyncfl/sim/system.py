"""The system model: how long each client task takes and whether it is lost to dropout.

Per client i (persistent, drawn once, vectorised, counter = i; or read from ``system.profile``, or
taken from a device class of :mod:`asyncfl.sim.devices` via ``system.devices``):

- compute speed v_i: FLOP/s (``compute.model: flops``, distribution ``compute.flops_per_s``) or
  samples per second (``compute.model: samples``, ``compute.speed``), times ``speed_multiplier[i]``
  when given; both models draw from the stream ``speed``;
- latency l_i (seconds per transfer), download and upload bandwidth bd_i, bu_i (bytes per second).

Per task k of client i (k = the client's own task index 0, 1, ...; drawn on demand, scalar):

- download  = (l_i + B / bd_i) * jd(i, k) * delay_scale
- compute   = (W_i / v_i * jc(i, k) + o) * delay_scale     o = ``compute.overhead`` seconds
- upload    = (l_i + B / (r bu_i)) * ju(i, k) * delay_scale  r = ``network.upload_compression``
- dropped   = u(i, k) < p_dropout                      (the update is lost before its upload)

with B = model size in bytes, jc the compute jitter, jd and ju independent draws of the network
jitter, and W_i the work of one task in the compute model's unit:

- model ``flops``: W_i = ``task_flops[i]``, the FLOPs of one task of client i. The runner counts
  them (asyncfl.runs.runner.build): the rule's per-sample gradient evaluations per task (gradient
  and Hessian-vector evaluations x local steps x min(batch, n_i)) times the model's FLOPs for one
  per-sample gradient, counted once per model with torch's FLOP counter. Clients therefore differ
  in FLOPs only where their data size n_i is below the batch size (or the rule uses full batches):
  a task's work is its batches, not its data set. Without counted FLOPs (``task_flops`` None: a
  backend that counts none, such as the engine tests' NullBackend), one per-sample gradient
  counts as :data:`~asyncfl.sim.devices.REFERENCE_FLOPS_PER_SAMPLE` FLOPs.
- model ``samples`` (the model before issue 14): W_i = ``task_work[i]``, per-sample gradient
  evaluations; the model's size does not enter.

Streams (purposes): ``speed``, ``latency``, ``download_bandwidth``, ``upload_bandwidth``,
``compute_jitter``, ``download_jitter``, ``upload_jitter``, ``dropout`` (and ``device_class`` for
``system.devices``); each keyed by (seed, purpose, client), so adding a client never changes another
client's draws.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from asyncfl.config.schema import SystemConfig
from asyncfl.errors import ScenarioError
from asyncfl.rng import stream_keys_np, uniform
from asyncfl.sim.devices import REFERENCE_FLOPS_PER_SAMPLE, assign_devices, capacities, device_class
from asyncfl.sim.distributions import DistConfig, Distribution, make_distribution

Floats = npt.NDArray[np.float64]

PROFILE_COLUMNS = ("client", "speed", "download_bandwidth", "upload_bandwidth", "latency")
"""Columns of a profile file for compute model ``samples``; model ``flops`` reads ``flops_per_s``
in place of ``speed``. A ``device`` column (catalogue class name) fills columns left out or empty."""


class TaskTiming(NamedTuple):
    """Durations of one task in simulated seconds, and whether it is lost to dropout."""

    download: float
    compute: float
    upload: float
    dropped: bool


class _PerTask:
    """A per-task factor: a constant (no draw) or scalar draws on cached per-client keys."""

    __slots__ = ("constant", "dist", "keys")

    def __init__(self, cfg: DistConfig, seed: int, purpose: str, num_clients: int) -> None:
        self.dist: Distribution = make_distribution(cfg)
        self.constant = self.dist.constant
        self.keys: list[int] = []
        if self.constant is None:
            self.keys = stream_keys_np(seed, purpose, np.arange(num_clients)).tolist()


class SystemModel:
    """Durations of client tasks (see the module docstring for the formulas and streams).

    ``task_work[i]``: per-sample gradient evaluations one task of client i costs. ``task_flops[i]``:
    the FLOPs of one task of client i (model ``flops``; see the module docstring when None).
    ``model_bytes``: B. ``speed_multiplier``: per-client factor on speed (e.g. the
    ``speed_by_label`` coupling), applied to profile and device-class speeds too. ``base_dir``:
    directory a relative ``system.profile`` path is resolved against (the scenario file's
    directory).
    """

    def __init__(
        self,
        cfg: SystemConfig,
        num_clients: int,
        seed: int,
        task_work: npt.ArrayLike,
        model_bytes: int,
        speed_multiplier: npt.ArrayLike | None = None,
        base_dir: Path | str | None = None,
        task_flops: npt.ArrayLike | None = None,
    ) -> None:
        self.cfg = cfg
        self.num_clients = int(num_clients)
        self.seed = int(seed)
        self.model_bytes = int(model_bytes)
        work = _per_client(task_work, self.num_clients, "task_work")
        self.task_work = work
        flops_model = cfg.compute.model == "flops"
        if task_flops is None:
            flops = work * REFERENCE_FLOPS_PER_SAMPLE if flops_model else np.full(self.num_clients, math.nan)
        else:
            flops = _per_client(task_flops, self.num_clients, "task_flops")
        #: FLOPs of one task per client (NaN where unknown under model ``samples``).
        self.task_flops = _frozen(flops)
        speed_col = "flops_per_s" if flops_model else "speed"

        if cfg.profile is not None:
            speed, down, up, latency = read_profile(_resolve(cfg.profile, base_dir), self.num_clients, speed_col)
            where = "system.profile"
            keys = dict.fromkeys(("speed", "download_bandwidth", "upload_bandwidth", "latency"), where)
        elif cfg.devices is not None:
            #: Each client's device class (``system.devices``), else None.
            self.device_classes: list[str] | None = assign_devices(cfg.devices, self.num_clients, self.seed)
            fl, sp, down, up, latency = capacities(self.device_classes, "system.devices")
            speed = fl if flops_model else sp
            keys = dict.fromkeys(("speed", "download_bandwidth", "upload_bandwidth", "latency"), "system.devices")
        else:
            speed = self._persistent(cfg.compute.flops_per_s if flops_model else cfg.compute.speed, "speed")
            latency = self._persistent(cfg.network.latency, "latency")
            down = self._persistent(cfg.network.download_bandwidth, "download_bandwidth")
            up = self._persistent(cfg.network.upload_bandwidth, "upload_bandwidth")
            keys = {
                "speed": f"system.compute.{speed_col}",
                "download_bandwidth": "system.network.download_bandwidth",
                "upload_bandwidth": "system.network.upload_bandwidth",
                "latency": "system.network.latency",
            }
        if cfg.devices is None:
            self.device_classes = None
        if speed_multiplier is not None:
            mult = np.asarray(speed_multiplier, dtype=np.float64)
            if mult.shape != (self.num_clients,):
                raise ValueError(f"speed_multiplier has shape {mult.shape}, expected ({self.num_clients},)")
            speed = speed * mult
        _check_positive(speed, keys["speed"], "speed")
        _check_positive(down, keys["download_bandwidth"], "download bandwidth")
        _check_positive(up, keys["upload_bandwidth"], "upload bandwidth")
        if not np.all(np.isfinite(latency) & (latency >= 0.0)):
            raise ScenarioError(keys["latency"], "latencies must be finite and >= 0")

        #: Persistent per-client quantities (read-only arrays): speed in the compute model's unit
        #: (FLOP/s for ``flops``, samples/s for ``samples``), bytes/s, bytes/s, s.
        self.speed = _frozen(speed)
        self.download_bandwidth = _frozen(down)
        self.upload_bandwidth = _frozen(up)
        self.latency = _frozen(latency)

        scale = cfg.delay_scale
        ratio = cfg.network.upload_compression
        up_bytes = self.model_bytes if ratio == 1.0 else self.model_bytes / ratio
        # Base durations in seconds before the per-task jitter (W/v, l + B/bw, times delay_scale).
        self._base = (
            (flops if flops_model else work) / speed * scale,
            (latency + self.model_bytes / down) * scale,
            (latency + up_bytes / up) * scale,
        )
        #: Fixed compute seconds per task (``compute.overhead`` x delay_scale), not jittered.
        self.overhead = float(cfg.compute.overhead) * scale
        self._jc = _PerTask(cfg.compute.jitter, self.seed, "compute_jitter", self.num_clients)
        self._jd = _PerTask(cfg.network.jitter, self.seed, "download_jitter", self.num_clients)
        self._ju = _PerTask(cfg.network.jitter, self.seed, "upload_jitter", self.num_clients)
        self.dropout = float(cfg.dropout)
        self._drop_keys: list[int] = []
        if self.dropout > 0.0:
            self._drop_keys = stream_keys_np(self.seed, "dropout", np.arange(self.num_clients)).tolist()
        #: ``task_durations(client, counter) -> (download, compute, upload, dropped)``: the same as
        #: :meth:`task_timing` as a plain tuple, specialised to the configuration (engine hot path).
        self.task_durations: Callable[[int, int], tuple[float, float, float, bool]] = self._durations_fn()

    def _persistent(self, cfg: DistConfig, purpose: str) -> Floats:
        clients = np.arange(self.num_clients, dtype=np.uint64)
        dist = make_distribution(cfg)
        return np.asarray(dist.sample(stream_keys_np(self.seed, purpose, clients), clients), dtype=np.float64)

    def _durations_fn(self) -> Callable[[int, int], tuple[float, float, float, bool]]:
        """A closure over Python lists: per task only list lookups, and scalar draws for the
        quantities that are random. A constant jitter c is folded in as base * c, the same product
        the per-task path would compute."""
        jc, jd, ju = self._jc, self._jd, self._ju
        comp_l: list[float] = (self._base[0] * (jc.constant if jc.constant is not None else 1.0)).tolist()
        down_l: list[float] = (self._base[1] * (jd.constant if jd.constant is not None else 1.0)).tolist()
        up_l: list[float] = (self._base[2] * (ju.constant if ju.constant is not None else 1.0)).tolist()
        p = self.dropout
        ov = self.overhead
        if ov != 0.0:
            comp_l = [c + ov for c in comp_l] if jc.constant is not None else comp_l
        if jc.constant is not None and jd.constant is not None and ju.constant is not None and p == 0.0:

            def fixed(client: int, counter: int) -> tuple[float, float, float, bool]:
                return down_l[client], comp_l[client], up_l[client], False

            return fixed

        cj = None if jc.constant is not None else (jc.dist.sample_one, jc.keys)
        dj = None if jd.constant is not None else (jd.dist.sample_one, jd.keys)
        uj = None if ju.constant is not None else (ju.dist.sample_one, ju.keys)
        drop_keys = self._drop_keys

        def drawn(client: int, counter: int) -> tuple[float, float, float, bool]:
            down = down_l[client]
            if dj is not None:
                down *= dj[0](dj[1][client], counter)
            comp = comp_l[client]
            if cj is not None:
                comp = comp * cj[0](cj[1][client], counter) + ov
            up = up_l[client]
            if uj is not None:
                up *= uj[0](uj[1][client], counter)
            return down, comp, up, p > 0.0 and uniform(drop_keys[client], counter) < p

        return drawn

    def task_timing(self, client: int, counter: int) -> TaskTiming:
        """Durations (seconds) of task number ``counter`` of ``client`` and whether it drops out."""
        return TaskTiming(*self.task_durations(client, counter))

    def mean_task_time(self) -> Floats:
        """Per client, the expected download + compute + upload time in seconds (jitter at its mean)."""
        return (
            self._base[1] * self._jd.dist.mean
            + (self._base[0] * self._jc.dist.mean + self.overhead)
            + self._base[2] * self._ju.dist.mean
        )


def _resolve(path: str, base_dir: Path | str | None) -> Path:
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def _per_client(values: npt.ArrayLike, n: int, name: str) -> Floats:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"{name} has shape {a.shape}, expected ({n},)")
    if not np.all(np.isfinite(a) & (a >= 0.0)):
        raise ValueError(f"{name} must be finite and >= 0")
    return a


def _frozen(a: Floats) -> Floats:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _check_positive(a: Floats, key: str, what: str) -> None:
    bad = ~(np.isfinite(a) & (a > 0.0))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ScenarioError(key, f"{what} must be finite and > 0 for every client (client {i} has {a[i]!r})")


def read_profile(path: Path, num_clients: int, speed_column: str = "speed") -> tuple[Floats, Floats, Floats, Floats]:
    """Read a client profile CSV: columns client, ``speed_column`` (``speed``, samples/s, or
    ``flops_per_s``), download_bandwidth, upload_bandwidth (bytes/s), latency (s); one row per
    client id 0 .. num_clients - 1, extra rows ignored. An optional ``device`` column names a
    catalogue class (asyncfl/sim/devices.py) whose figures fill the columns left out or empty in
    that row; numbers given in the file win. Returns (speed, download_bandwidth, upload_bandwidth,
    latency) indexed by client. Problems raise ScenarioError("system.profile", ...)."""
    key = "system.profile"
    columns = ("client", speed_column, *PROFILE_COLUMNS[2:])
    if not path.is_file():
        raise ScenarioError(key, f"file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            has_device = "device" in header
            missing = [c for c in columns if c not in header and (c == "client" or not has_device)]
            if missing:
                hint = ""
                if speed_column == "flops_per_s" and "speed" in header:
                    hint = " (its speed column is in samples/s: set system.compute.model: samples)"
                raise ScenarioError(
                    key,
                    f"{path} lacks column(s) {', '.join(missing)}; needs {', '.join(columns)} "
                    f"(or a device column){hint}",
                )
            values = np.full((num_clients, 4), math.nan)
            seen = np.zeros(num_clients, dtype=bool)
            rows = 0
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip(): v.strip() if isinstance(v, str) else "" for k, v in row.items()}
                rows += 1
                try:
                    client = int(row["client"])
                    cls = device_class(row["device"], key) if has_device and row.get("device") else None
                    nums = []
                    for c in columns[1:]:
                        cell = row.get(c, "")
                        if cell == "" and cls is not None:
                            nums.append(float(getattr(cls, c)))
                        else:
                            nums.append(float(cell))
                except (TypeError, ValueError):
                    raise ScenarioError(key, f"{path} line {line}: values must be numbers") from None
                if 0 <= client < num_clients:
                    values[client] = nums
                    seen[client] = True
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ScenarioError(key, f"cannot read {path}: {e}") from None
    if rows < num_clients:
        raise ScenarioError(key, f"{path} has {rows} rows but clients.count is {num_clients} (one row per client)")
    if not np.all(seen):
        raise ScenarioError(key, f"{path} has no row for client {int(np.argmin(seen))}")
    return values[:, 0], values[:, 1], values[:, 2], values[:, 3]


__all__ = ["PROFILE_COLUMNS", "SystemModel", "TaskTiming", "read_profile"]
