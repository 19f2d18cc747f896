"""Federated data sets and partitions, resident on one device.

Entry point: :func:`build_data` (scenario ``data`` mapping -> :class:`FederatedData`).
Reports and figures: :mod:`asyncfl.data.describe` (imported on demand; it pulls in pandas and
matplotlib).
"""

from asyncfl.data.base import FederatedData, layout
from asyncfl.data.partition import PARTITIONS, partition, stratified_split
from asyncfl.data.registry import DATASETS, build_data, resolve_root

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "FederatedData",
    "build_data",
    "layout",
    "partition",
    "resolve_root",
    "stratified_split",
]
