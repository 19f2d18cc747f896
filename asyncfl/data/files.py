"""Readers for the on-disk formats torchvision downloads, without pickle and without torchvision.

- IDX (LeCun's MNIST format; also Fashion-MNIST and EMNIST), raw or gzip-compressed: a big-endian
  header (two zero bytes, a type code, the number of dimensions, then each dimension as uint32)
  followed by the array. Images have magic 2051 (0x00000803), labels 2049 (0x00000801).
- CIFAR-10 python batches: pickled dicts (``data`` uint8 [10000, 3072], ``labels`` list of int).
  They are read with :class:`RestrictedUnpickler`, which only rebuilds plain containers, numpy
  arrays and dtypes; any other global in the stream is refused, so a tampered file cannot run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from asyncfl.errors import DataNotFoundError

_IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` is decompressed)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataNotFoundError(
            f"data.root: {path} is not an IDX file (bad magic number); delete it and fetch it again"
        )
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - offset < count * dtype.itemsize:
        raise DataNotFoundError(f"data.root: {path} is truncated (expected {count} values of shape {dims})")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzip-compressed if ``path`` ends in ``.gz``
    (the inverse of :func:`read_idx`; used by tests and examples)."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    blob = header + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The few globals a pickled numpy array needs, under their numpy 1.x and 2.x module names."""
    try:
        from numpy._core import multiarray as ma
        from numpy._core import numeric as nu
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
        from numpy.core import numeric as nu  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = nu._frombuffer  # type: ignore[attr-defined]
    # Python 2 pickles of bytes under protocol 2 go through _codecs.encode(str, 'latin1')
    import codecs

    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array/dtype reconstruction and ``codecs.encode``."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file") from None


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images uint8 [n, 3, 32, 32] and labels int64 [n]."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataNotFoundError(f"data.root: {path} is not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(obj, dict):
        raise DataNotFoundError(f"data.root: {path} is not a CIFAR-10 python batch (not a dict)")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise DataNotFoundError(f"data.root: {path} is not a CIFAR-10 python batch (no data/labels)")
    x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(d["labels"], dtype=np.int64)
    if len(x) != len(y):
        raise DataNotFoundError(f"data.root: {path} has {len(x)} images but {len(y)} labels")
    return x, y


__all__ = ["RestrictedUnpickler", "read_cifar_batch", "read_idx", "write_idx"]
