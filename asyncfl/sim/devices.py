"""A small built-in catalogue of device classes, and their assignment to clients.

Each class fixes a client's FLOP/s (compute model ``flops``), samples per second (model
``samples``: the FLOP/s over :data:`REFERENCE_FLOPS_PER_SAMPLE`), download and upload bandwidth
(bytes per second) and latency (seconds per transfer). Every figure names its public source in a
comment; where a source gives no figure the value says so. Measured throughputs of dense linear
algebra (Linpack) are upper bounds for the small-batch training a client does, so the FLOP/s here
are optimistic; scale them with a profile file when you have better numbers.

Assignment (``system.devices: {class: proportion, ...}``): client i draws u_i once from the stream
``device_class`` (counter 0) and takes the first class whose cumulative proportion (classes in the
order written) exceeds u_i, so the proportions hold in expectation and adding a client never
changes another client's class. For an exact per-client assignment use ``system.profile`` with a
``device`` column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from asyncfl.errors import ScenarioError
from asyncfl.rng import stream_keys_np, uniform_np

MBIT = 1.0e6 / 8.0
"""Bytes per second in one Mbit/s."""
KBIT = 1.0e3 / 8.0
"""Bytes per second in one kbit/s."""

REFERENCE_FLOPS_PER_SAMPLE = 1.0e6
"""FLOPs of one per-sample gradient evaluation of a reference model, used only to express a class's
FLOP/s as samples per second for compute model ``samples`` (1 GFLOP/s = 1000 samples/s, the old
default speed)."""


class DeviceClass(NamedTuple):
    """Persistent capacities of one device class."""

    flops_per_s: float
    """Training throughput, FLOP/s."""
    download_bandwidth: float
    """Bytes per second."""
    upload_bandwidth: float
    """Bytes per second."""
    latency: float
    """Seconds per transfer."""

    @property
    def speed(self) -> float:
        """Samples per second (compute model ``samples``)."""
        return self.flops_per_s / REFERENCE_FLOPS_PER_SAMPLE


CATALOGUE: Mapping[str, DeviceClass] = {
    # A slow edge client: a Raspberry Pi 4 running the textbook Linpack through Python/NumPy.
    "slow_edge": DeviceClass(
        # 812 MFLOP/s: Linpack 2000 x 2000 via Python on a standard Pi 4
        # (sci-pi.org.uk, "Linpack on Pi", https://www.sci-pi.org.uk/bench/linpack.html).
        flops_per_s=0.812e9,
        # FedScale's device-capacity trace (MobiPerf-derived), sample entry
        # {'computation': 162.0, 'communication': 5648.1} with communication in kbit/s, quoted in
        # FedScale's client code; FedScale uses one bandwidth for both directions.
        download_bandwidth=5648.1 * KBIT,
        upload_bandwidth=5648.1 * KBIT,
        # 184 ms: lowest median mobile multi-server latency in Cameroon, Q1 2023
        # (Ookla Market Reports Q1 2023, https://www.ookla.com/articles, "47 New Ookla Market
        # Reports Available for Q1 2023").
        latency=0.184,
    ),
    # A mid-range edge client: a Raspberry Pi 4 with an optimised BLAS on a 4G-class link.
    "mid_edge": DeviceClass(
        # About 8 GFLOP/s: High Performance Linpack on a Raspberry Pi 4, 64-bit Raspberry Pi OS
        # (B. Feiereisen, "Benchmarking the Raspberry Pi 4 with Raspberry Pi OS64", 2022,
        # https://feiereisen.net/?page_id=924).
        flops_per_s=8.0e9,
        # 20.28 Mbit/s: global mean mobile download speed, Ookla Speedtest Global Index 2017
        # (reported by TelecomTV, "Life in the fast lane", 2017). The source gives no upload
        # figure: the upload is set to FedScale's sample entry above (5648.1 kbit/s).
        download_bandwidth=20.28 * MBIT,
        upload_bandwidth=5648.1 * KBIT,
        # 55 ms: a median mobile multi-server latency (Ethio Telecom, Q1 2023) from the same Ookla
        # Market Reports Q1 2023 article.
        latency=0.055,
    ),
    # A fast edge client: an NVIDIA Jetson Nano on a 5G link.
    "fast_edge": DeviceClass(
        # 472 GFLOP/s: NVIDIA's peak FP16 figure for the Jetson Nano (NVIDIA Jetson Nano developer
        # kit specification); a peak, far above what small-batch training sustains.
        flops_per_s=472.0e9,
        # 166.13 Mbit/s down, 21.08 Mbit/s up: global median 5G speeds, Q3 2021 (Ookla, "Growing and
        # Slowing: The State of 5G Worldwide in 2021", December 2021).
        download_bandwidth=166.13 * MBIT,
        upload_bandwidth=21.08 * MBIT,
        # 55 ms: as mid_edge (the 5G source gives no latency).
        latency=0.055,
    ),
}


def device_class(name: str, key: str) -> DeviceClass:
    """The catalogue class ``name``; a ScenarioError naming ``key`` and the choices otherwise."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ScenarioError(key, f"unknown device class {name!r}; choose from {', '.join(CATALOGUE)}") from None


def assign_devices(proportions: Mapping[str, float], num_clients: int, seed: int) -> list[str]:
    """Each client's class name, drawn by ``proportions`` (see the module docstring)."""
    names = list(proportions)
    for name in names:
        device_class(name, "system.devices")
    cum = np.cumsum(np.array([proportions[n] for n in names], dtype=np.float64))
    clients = np.arange(num_clients, dtype=np.uint64)
    u = uniform_np(stream_keys_np(seed, "device_class", clients), 0)
    idx = np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(names) - 1)
    return [names[int(i)] for i in idx]


def capacities(names: list[str], key: str) -> tuple[npt.NDArray[np.float64], ...]:
    """(flops_per_s, speed, download_bandwidth, upload_bandwidth, latency) per client of the
    classes ``names``."""
    classes = [device_class(n, key) for n in names]
    return (
        np.array([c.flops_per_s for c in classes], dtype=np.float64),
        np.array([c.speed for c in classes], dtype=np.float64),
        np.array([c.download_bandwidth for c in classes], dtype=np.float64),
        np.array([c.upload_bandwidth for c in classes], dtype=np.float64),
        np.array([c.latency for c in classes], dtype=np.float64),
    )


__all__ = ["CATALOGUE", "REFERENCE_FLOPS_PER_SAMPLE", "DeviceClass", "assign_devices", "capacities", "device_class"]
