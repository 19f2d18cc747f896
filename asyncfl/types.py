"""Units the simulator keeps apart: simulated seconds, model versions, staleness and client ids.

``NewType`` makes mixing them up a type error (mypy) while costing nothing at run time.
"""

from __future__ import annotations

from typing import NewType

SimTime = NewType("SimTime", float)
"""Simulated time in seconds since the start of the run."""

ModelVersion = NewType("ModelVersion", int)
"""Server model version: 0 at start, +1 on every applied server step."""

Staleness = NewType("Staleness", int)
"""tau = server version when an update is applied - version the client pulled (>= 0)."""

ClientId = NewType("ClientId", int)
"""Index of a client, 0 .. clients.count - 1."""

__all__ = ["ClientId", "ModelVersion", "SimTime", "Staleness"]
