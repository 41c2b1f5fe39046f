"""Learning curves: train vs val, the best epoch at the lowest val loss, the learning rate on a twin axis."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from cnnkit.diagnose.curves import best_epoch, learning_curves_figure, plot_learning_curves, read_history


def history(lrs: list[float]) -> list[dict]:
    val_loss = [1.0, 0.6, 0.4, 0.45, 0.5, 0.55]  # lowest at epoch 3, then overfitting
    return [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "train_accuracy": 0.5 + 0.08 * i, "val_loss": v,
             "val_accuracy": 0.6 + 0.05 * min(i, 2), "lr": lr, "time": 0.1}
            for i, (v, lr) in enumerate(zip(val_loss, lrs))]


def test_twin_lr_axis_and_best_epoch_at_min_val_loss():
    lrs = [1e-1, 5e-2, 1e-2, 5e-3, 1e-3, 1e-4]  # three decades: log scale
    rows = history(lrs)
    fig = learning_curves_figure(rows)
    try:
        loss_ax, metric_ax, lr_ax = fig.axes
        assert lr_ax.get_shared_x_axes().joined(lr_ax, loss_ax)  # a twinx of the loss panel
        (line,) = lr_ax.get_lines()
        np.testing.assert_allclose(line.get_ydata(), lrs)
        assert lr_ax.get_yscale() == "log"
        best = int(np.argmin([r["val_loss"] for r in rows])) + 1
        assert best_epoch(rows) == best == 3
        for ax, key in ((loss_ax, "val_loss"), (metric_ax, "val_accuracy")):
            (star,) = [ln for ln in ax.get_lines() if ln.get_gid() == "best_epoch"]
            assert list(star.get_xdata()) == [best] and list(star.get_ydata()) == [rows[best - 1][key]]
            assert any(list(ln.get_xdata()) == [best, best] for ln in ax.get_lines())  # the dotted axvline
    finally:
        plt.close(fig)


def test_linear_lr_axis_when_it_spans_less_than_a_decade(tmp_path):
    fig = learning_curves_figure(history([1e-3, 9e-4, 7e-4, 5e-4, 3e-4, 2e-4]))
    assert fig.axes[2].get_yscale() == "linear"
    plt.close(fig)
    rows = [{k: v for k, v in r.items() if k not in ("lr", "val_loss", "val_accuracy")} for r in history([1e-3] * 6)]
    fig = learning_curves_figure(rows)  # no lr, no val: two panels, nothing marked
    assert len(fig.axes) == 2 and best_epoch(rows) is None
    plt.close(fig)


def test_plot_reads_back_from_history_csv(tmp_path):
    from cnnkit.engine.callbacks import write_history

    rows = history([1e-2] * 6)
    write_history(tmp_path / "history.csv", rows)
    back = read_history(tmp_path / "history.csv")
    assert back[2]["epoch"] == 3 and back[2]["val_loss"] == 0.4
    path = plot_learning_curves(back, tmp_path / "plots" / "curves.png")
    assert path.is_file() and path.stat().st_size > 5000


def panels(fig) -> list[str]:
    """The titles of the figure's panels (the lr twin axis has none)."""
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_segmentation_history_plots_the_miou_it_logs():
    rows = [{"epoch": i + 1, "train_loss": 1.0 - 0.1 * i, "train_pixel_accuracy": 0.5 + 0.1 * i,
             "val_loss": 1.1 - 0.1 * i, "val_pixel_accuracy": 0.4 + 0.1 * i, "val_miou": 0.2 + 0.1 * i,
             "val_fw_iou": 0.3, "val_dice": 0.3} for i in range(4)]
    fig = learning_curves_figure(rows, "miou")
    try:
        assert panels(fig) == ["loss", "miou"]
        (miou,) = [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "val"]
        np.testing.assert_allclose(miou.get_ydata(), [r["val_miou"] for r in rows])
        assert not [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "train"]  # no train_miou column
    finally:
        plt.close(fig)
    fig = learning_curves_figure(rows, "pixel_accuracy")  # train and val
    assert {ln.get_label() for ln in fig.axes[1].get_lines()} >= {"train", "val"}
    plt.close(fig)
    fig = learning_curves_figure(rows)  # no metric named: the first of DEFAULT_METRICS logged
    assert panels(fig) == ["loss", "miou"]
    plt.close(fig)


def test_detection_history_plots_val_map_alone():
    rows = [{"epoch": i + 1, "train_loss": 6.0 - i, "train_loss_xy": 1.0, "val_map": 0.1 * i, "val_map50": 0.2 * i,
             "lr": 0.01, "time": 1.0} for i in range(3)]
    fig = learning_curves_figure(rows, "map")
    try:
        assert panels(fig) == ["loss", "map"]
        lines = [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "val"]
        np.testing.assert_allclose(lines[0].get_ydata(), [0.0, 0.1, 0.2])
    finally:
        plt.close(fig)
    fig = learning_curves_figure(rows)
    assert panels(fig) == ["loss", "map"]
    plt.close(fig)


def test_a_metric_without_numbers_gets_no_panel(tmp_path):
    rows = [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "val_loss": 1.0, "val_accuracy": None, "time": 0.1}
            for i in range(3)]
    for metric in (None, "accuracy", "miou"):  # not logged at all, or a column that is empty throughout
        fig = learning_curves_figure(rows, metric)
        assert panels(fig) == ["loss"] and len(fig.axes) == 1, metric
        plt.close(fig)
    with_lr = [{**r, "lr": 1e-3} for r in rows]
    fig = learning_curves_figure(with_lr, "map")
    assert panels(fig) == ["loss"] and len(fig.axes) == 2  # the loss panel and its lr twin, nothing else
    plt.close(fig)
    path = plot_learning_curves(rows, tmp_path / "loss_only.png", "map")
    assert path.is_file()
