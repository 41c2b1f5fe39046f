"""Learning curves: loss and the main metric per epoch, train against val, the best epoch marked and the
learning rate on a second y-axis, as PNG; `read_history` reads a run's history.csv back.

The metric is the one the run's recipe names (accuracy, miou, map, mask_map, ...), read from the history's
train_<metric> and val_<metric> columns; without a number in either, only the loss is drawn."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

LOWER_IS_BETTER = ("loss", "mae")
LOG_LR_DECADES = 1.0  # the lr axis is logarithmic when max/min spans more than this many decades


def read_history(path: Path) -> list[dict]:
    """history.csv → one dict per epoch: `epoch` an int, the other columns floats (None where empty)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: int(float(v)) if k == "epoch" else (float(v) if v not in ("", None) else None)
             for k, v in row.items()} for row in rows]


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def best_epoch(history: list[dict]) -> int | None:
    """The epoch (1-based, as logged) of the lowest val loss; None without a val loss."""
    rows = [r for r in history if _finite(r.get("val_loss"))]
    return min(rows, key=lambda r: r["val_loss"])["epoch"] if rows else None


DEFAULT_METRICS = ("accuracy", "binary_accuracy", "miou", "mask_map", "map", "mae")


def _has(history: list[dict], key: str) -> bool:
    return any(_finite(row.get(key)) for row in history)


def metric_columns(history: list[dict], metric: str) -> list[str]:
    """The columns of `metric` that hold a number somewhere: train_<metric> and/or val_<metric>."""
    return [f"{split}_{metric}" for split in ("train", "val") if _has(history, f"{split}_{metric}")]


def default_metric(history: list[dict]) -> str | None:
    """The first of DEFAULT_METRICS the history logs (train or val); None when it logs none of them. An
    instance run logs both map and mask_map: mask_map, its main metric, comes first."""
    return next((m for m in DEFAULT_METRICS if metric_columns(history, m)), None)


def _lr_axis(ax, epochs: list[int], lrs: list[float | None]):
    """A twin y-axis with the learning rate per epoch; log scale when it spans more than LOG_LR_DECADES."""
    twin = ax.twinx()
    twin.plot(epochs, lrs, "--", color="tab:purple", linewidth=1, alpha=0.7, label="lr")
    known = [v for v in lrs if _finite(v) and v > 0]
    if known and math.log10(max(known) / min(known)) > LOG_LR_DECADES:
        twin.set_yscale("log")
    twin.set_ylabel("learning rate", color="tab:purple")
    twin.tick_params(axis="y", colors="tab:purple")
    return twin


def _panel(ax, history: list[dict], key: str, best: int | None) -> None:
    """One panel: train and val of `key` per epoch (those logged), the best epoch marked."""
    epochs = [row["epoch"] for row in history]
    for split, style in (("train", "-o"), ("val", "-s")):
        values = [row.get(f"{split}_{key}") for row in history]
        if any(v is not None for v in values):
            ax.plot(epochs, values, style, markersize=3, label=split)
    if best is not None:
        at = next(row for row in history if row["epoch"] == best)
        ax.axvline(best, color="grey", linestyle=":", label=f"best epoch {best} (min val loss)")
        if at.get(f"val_{key}") is not None:
            ax.plot([best], [at[f"val_{key}"]], "*", color="tab:red", markersize=12, gid="best_epoch")
    ax.set(xlabel="epoch", ylabel=key, title=key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def learning_curves_figure(history: list[dict], metric: str | None = None) -> Figure:
    """The loss panel and, when the history logs it, the `metric` panel: train vs val per epoch (val alone when
    only val is logged, as detection's val_map); the best epoch (lowest val loss) marked by a dotted line and a
    star on the val curves; the learning rate on a twin y-axis of the loss panel (the figure's last Axes, when
    the history logs `lr`). `metric` defaults to the first of DEFAULT_METRICS logged. A metric without a number
    in train_<metric> or val_<metric> gets no panel: the figure is then the loss panel alone."""
    epochs = [row["epoch"] for row in history]
    metric = metric or default_metric(history)
    keys = ["loss"] + ([metric] if metric and metric_columns(history, metric) else [])
    best = best_epoch(history)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys) + (0.5 if len(keys) == 1 else 0), 4),
                             constrained_layout=True, squeeze=False)
    axes = list(axes[0])
    for ax, key in zip(axes, keys):
        _panel(ax, history, key, best)
    lrs = [row.get("lr") for row in history]
    lr_axis = _lr_axis(axes[0], epochs, lrs) if any(_finite(v) for v in lrs) else None
    for i, ax in enumerate(axes):
        handles, labels = ax.get_legend_handles_labels()
        if i == 0 and lr_axis is not None:  # one legend for both y-axes of the loss panel
            more = lr_axis.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        if handles:
            ax.legend(handles, labels, fontsize=8)
    return fig


def plot_learning_curves(history: list[dict], path: Path, metric: str | None = None) -> Path:
    """Save `learning_curves_figure(history, metric)` as a PNG at `path` (the loss panel alone when the
    history has no number for `metric`)."""
    fig = learning_curves_figure(history, metric)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
