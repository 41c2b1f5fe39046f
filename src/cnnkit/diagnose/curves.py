"""Learning curves: loss and the main metric per epoch, train against val, as PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


LOWER_IS_BETTER = ("loss", "mae")


def plot_learning_curves(history: list[dict], path: Path, metric: str | None = None) -> Path:
    """Two panels (loss, metric), train vs val per epoch, the best val epoch marked. `metric` defaults to the
    first per-batch metric logged: accuracy, binary_accuracy (multilabel) or mae (regression)."""
    epochs = [row["epoch"] for row in history]
    if metric is None:
        logged = {k.split("_", 1)[1] for row in history for k in row if k.startswith(("train_", "val_"))}
        metric = next((m for m in ("accuracy", "binary_accuracy", "mae") if m in logged), "accuracy")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key in zip(axes, ("loss", metric)):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [row.get(f"{split}_{key}") for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, markersize=3, label=split)
        val = [row.get(f"val_{key}") for row in history]
        if all(v is not None for v in val) and val:
            best = (min if key in LOWER_IS_BETTER else max)(range(len(val)), key=lambda i: val[i])
            ax.axvline(epochs[best], color="grey", linestyle=":", label=f"best epoch {epochs[best]}")
        ax.set(xlabel="epoch", ylabel=key, title=key)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
