"""What a :class:`FederatedData` holds: per-client table, one-screen text and a figure.

Used by ``asyncfl data describe FILE``. Figures are drawn on a bare :class:`matplotlib.figure.Figure`
(the Agg canvas; no pyplot, no display, no global backend change).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from asyncfl.data.base import FederatedData

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Split = Literal["train", "test"]
FIGURE_DPI = 120
"""Resolution at which ``asyncfl data describe --figure`` writes :func:`describe_figure`."""


def label_counts(data: FederatedData, split: Split = "train") -> np.ndarray:
    """Samples of each label per client, int64 [num_clients, num_classes] (0 columns for regression)."""
    k = data.num_classes if data.task == "classification" else 0
    sizes = (data.train_sizes if split == "train" else data.test_sizes).cpu().numpy().astype(np.int64)
    if k == 0:
        return np.zeros((len(sizes), 0), dtype=np.int64)
    y = (data.train_y if split == "train" else data.test_y).cpu().numpy().astype(np.int64)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    return np.bincount(owner * k + y, minlength=len(sizes) * k).reshape(len(sizes), k)


def describe(data: FederatedData) -> pd.DataFrame:
    """One row per client (index ``client``): ``train``, ``test`` sample counts, ``labels`` (distinct
    training labels), then ``label_<c>``: training samples of label c (classification only)."""
    train_counts = label_counts(data, "train")
    frame = pd.DataFrame(
        {
            "train": data.train_sizes_np.astype(np.int64),
            "test": data.test_sizes_np.astype(np.int64),
            "labels": (train_counts > 0).sum(axis=1).astype(np.int64),
        },
        index=pd.RangeIndex(data.num_clients, name="client"),
    )
    if train_counts.shape[1]:
        labels = pd.DataFrame(
            train_counts, index=frame.index, columns=[f"label_{c}" for c in range(train_counts.shape[1])]
        )
        frame = pd.concat([frame, labels], axis=1)
    return frame


def _spread(values: np.ndarray) -> str:
    if values.size == 0:
        return "-"
    q = np.percentile(values, [0, 50, 100])
    return f"min {q[0]:g}, median {q[1]:g}, max {q[2]:g}, mean {values.mean():.1f}"


def summary_text(data: FederatedData, max_rows: int = 10) -> str:
    """A one-screen summary: shapes, totals, spread of client sizes and labels per client, and the
    first ``max_rows`` clients' counts and top labels."""
    table = describe(data)
    lines = [
        f"data set      {data.name or '?'} ({data.task})",
        f"clients       {data.num_clients}",
        f"sample shape  {tuple(data.input_shape)} {str(data.train_x.dtype).removeprefix('torch.')}",
        f"classes       {data.num_classes}",
        f"samples       train {int(table['train'].sum())}, test {int(table['test'].sum())}, global test {len(data.global_y)}",
        f"train/client  {_spread(table['train'].to_numpy())}",
        f"test/client   {_spread(table['test'].to_numpy())}",
    ]
    if data.task == "classification":
        lines.append(f"labels/client {_spread(table['labels'].to_numpy())}")
    lines.append(f"memory        {data.nbytes() / 2**20:.1f} MiB")
    shown = table.head(max_rows)
    lines.append("")
    lines.append("client  train   test  labels  top labels (label:count)")
    counts = label_counts(data, "train")
    cols = shown[["train", "test", "labels"]].to_numpy(dtype=np.int64)
    for client, (n_train, n_test, n_labels) in zip(shown.index.to_list(), cols.tolist(), strict=True):
        i = int(client)  # type: ignore[arg-type]  # the index holds client ids
        top = ""
        if counts.shape[1]:
            order = np.argsort(-counts[i], kind="stable")[:5]
            top = " ".join(f"{c}:{counts[i, c]}" for c in order if counts[i, c] > 0)
        lines.append(f"{i:>6}  {n_train:>5}  {n_test:>5}  {n_labels:>6}  {top}")
    if data.num_clients > max_rows:
        lines.append(f"... {data.num_clients - max_rows} more clients")
    return "\n".join(lines)


def describe_figure(data: FederatedData, *, max_clients: int = 100) -> Figure:
    """A figure of per-client sample counts (train stacked on test) and, for classification,
    each client's training label composition (fractions, a heatmap), for the first
    ``max_clients`` clients. Drawn only: ``asyncfl data describe --figure`` writes it (atomically,
    at :data:`FIGURE_DPI`) with :func:`asyncfl.study.figures.save`, as every figure is written."""
    import seaborn as sns
    from matplotlib.figure import Figure

    table = describe(data).head(max_clients)
    n = len(table)
    classification = data.task == "classification" and data.num_classes > 0
    fig = Figure(figsize=(max(6.0, min(0.12 * n + 2.0, 18.0)), 7.0 if classification else 3.5), layout="constrained")
    axes = fig.subplots(2 if classification else 1, 1, squeeze=False)[:, 0]
    ax = axes[0]
    xs = np.arange(n)
    ax.bar(xs, table["train"], color="tab:blue", label="train", width=0.9)
    ax.bar(xs, table["test"], bottom=table["train"], color="tab:orange", label="test", width=0.9)
    ax.set_ylabel("samples")
    ax.set_xlim(-0.5, n - 0.5)
    ax.legend(loc="upper right")
    shown = f" (first {n} of {data.num_clients})" if data.num_clients > n else ""
    ax.set_title(f"{data.name or 'data'}: samples per client{shown}")
    if classification:
        counts = label_counts(data, "train")[:n].astype(np.float64)
        frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        sns.heatmap(
            frac.T, ax=axes[1], cmap="viridis", vmin=0.0, vmax=1.0, cbar_kws={"label": "share of training samples"}
        )
        axes[1].set_xlabel("client")
        axes[1].set_ylabel("label")
        axes[1].set_title("label composition per client")
        step = max(1, n // 20)
        axes[1].set_xticks(np.arange(0, n, step) + 0.5, [str(i) for i in range(0, n, step)])
        ks = counts.shape[1]
        kstep = max(1, ks // 20)
        axes[1].set_yticks(np.arange(0, ks, kstep) + 0.5, [str(i) for i in range(0, ks, kstep)])
    else:
        ax.set_xlabel("client")
    return fig


__all__ = ["FIGURE_DPI", "describe", "describe_figure", "label_counts", "summary_text"]
