"""Classification analysis of a run: confusion matrix, calibration (reliability diagram, ECE), top-k accuracy,
per-class precision/recall/F1 and the most confidently wrong images (top losses), on one split (val by default)."""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from torch import Tensor, nn

from cnnkit.config import config_from_dict
from cnnkit.data.builtin import open_source
from cnnkit.data.loader import fitted_arrays, make_loader
from cnnkit.data.sources import ImageSource, as_problem
from cnnkit.data.split import indices_from_record
from cnnkit.engine.inference import for_inference
from cnnkit.errors import CnnkitError
from cnnkit.metrics.core import classification_metrics
from cnnkit.runs.folder import ModelCard, load_model, record_test_use, run_file

CLASS_PROBLEMS = ("binary", "multiclass")
ANNOTATE_UP_TO = 20  # classes; beyond, the confusion matrix cells are too small for numbers


# ---------------------------------------------------------------- a run's split and its predictions

@dataclass
class RunSplit:
    """What a diagnosis needs of one split of a run: the model (eval, CPU), its card, the source, the indices."""

    model: nn.Module
    card: ModelCard
    source: ImageSource
    indices: np.ndarray  # (N,) into source
    split: str

    def images(self, positions: np.ndarray | list[int]) -> Tensor:
        """The split's items at `positions` as the model sees them before normalisation: (n, C, S, S) uint8."""
        c, s, _ = self.card.input_size
        return fitted_arrays(self.source, self.indices[np.asarray(positions, dtype=np.int64)], c, s, self.card.resize)

    def inputs(self, images: Tensor) -> Tensor:
        """(n, C, S, S) uint8 from `images` → the model's normalised float input."""
        from torchvision.transforms import v2

        from cnnkit.data.transforms import to_model_input

        return v2.Compose(to_model_input(self.card.mean, self.card.std, self.card.whiten))(images)

    def task(self):
        """The card's task around the model (predict_step gives probabilities)."""
        with warnings.catch_warnings():  # a mismatched loss was reported when the run trained
            warnings.simplefilter("ignore", UserWarning)
            return self.card.make_task(self.model)


def open_split(run: str | Path, split: str = "val") -> RunSplit:
    """RUN's model and the items of `split` as recorded in split.json. Only classification runs (binary,
    multiclass). The test split is read only when named, and that use is recorded in test_log.jsonl."""
    run = Path(run)
    model, card = load_model(run)
    if card.problem not in CLASS_PROBLEMS:
        raise CnnkitError(f"classification analysis needs a binary or multiclass run; {run} is {card.problem}")
    cfg = config_from_dict(yaml.safe_load(run_file(run, "config.yaml").read_text()))
    record = json.loads(run_file(run, "split.json").read_text())
    if split not in record["splits"]:
        raise CnnkitError(f"unknown split {split!r}; choose train, val or test")
    source = as_problem(open_source(cfg.data.source, cfg.data.max_bad_fraction), card.problem)
    indices = indices_from_record(source, record, split)
    if len(indices) == 0:
        raise CnnkitError(f"the {split} split of {run} is empty; nothing to analyse")
    if split == "test":
        record_test_use(run, {"split": "test", "use": "diagnose"})
    return RunSplit(model, card, source, indices, split)


@dataclass
class SplitPredictions:
    probs: Tensor  # (N, K) float probabilities; binary runs give (N, 2): [1 − p, p]
    targets: Tensor  # (N,) long class indices
    ids: list[str]  # the items' ids in the source (as in split.json)
    indices: np.ndarray  # (N,) indices into the source
    classes: list[str]


def predictions_of(data: RunSplit, batch_size: int = 256, precision: str = "auto") -> SplitPredictions:
    """The task's probabilities (predict_step, from fp32 outputs) for every item of the split, in split order;
    the model runs as predict runs it: batch norms folded, in `precision` (cnnkit.engine.inference)."""
    c, s, _ = data.card.input_size
    loader = make_loader(data.source, data.indices, channels=c, size=s, resize=data.card.resize,
                         mean=data.card.mean, std=data.card.std, whiten=data.card.whiten, batch_size=batch_size)
    model, mode = for_inference(data.model, precision)
    with warnings.catch_warnings():  # a mismatched loss was reported when the run trained
        warnings.simplefilter("ignore", UserWarning)
        task = data.card.make_task(model)
    probs, targets = [], []
    with torch.inference_mode(), mode.autocast():
        for batch in loader:
            probs.append(task.predict_step(mode.input(batch.images.to(mode.device))).float().cpu())  # (n, K)
            targets.append(batch.targets.long())
    return SplitPredictions(torch.cat(probs), torch.cat(targets), [data.source.ids[int(j)] for j in data.indices],
                            data.indices, list(data.card.classes))


def split_predictions(run: str | Path, split: str = "val") -> SplitPredictions:
    """Probabilities, targets and ids of RUN's `split` (val by default; test only when named)."""
    return predictions_of(open_split(run, split))


# ---------------------------------------------------------------- confusion matrix

def _labels(probs_or_labels: Tensor | np.ndarray) -> np.ndarray:
    x = torch.as_tensor(probs_or_labels)
    return (x.argmax(1) if x.ndim == 2 else x).long().cpu().numpy()


def confusion_matrix(probs_or_labels: Tensor | np.ndarray, targets: Tensor | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class (argmax of (N, K) scores, or (N,) labels)."""
    pred, true = _labels(probs_or_labels), torch.as_tensor(targets).long().cpu().numpy()
    if pred.shape != true.shape:
        raise CnnkitError(f"there are {len(pred)} predictions but {len(true)} targets")
    if len(true) and (min(pred.min(), true.min()) < 0 or max(pred.max(), true.max()) >= num_classes):
        raise CnnkitError(f"class indices must lie in 0..{num_classes - 1}")
    return np.bincount(true * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def normalize_confusion(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the recall of each true class on the diagonal); an empty row stays 0."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(counts: np.ndarray, classes: list[str], path: str | Path, normalized: bool = False) -> Path:
    """The confusion matrix as a heat map (rows true, columns predicted), counts or row-normalised; each cell
    annotated when there are at most 20 classes."""
    counts = np.asarray(counts)
    values = normalize_confusion(counts) if normalized else counts
    k = len(classes)
    side = min(3 + 0.5 * k, 16)
    fig, ax = plt.subplots(figsize=(side + 1, side), constrained_layout=True)
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else max(1, values.max()))
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true",
           title="confusion matrix (row-normalised)" if normalized else "confusion matrix (counts)")
    ax.set_xticklabels(classes, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticklabels(classes)
    if k <= ANNOTATE_UP_TO:
        middle = (1 if normalized else max(1, values.max())) / 2
        for i in range(k):
            for j in range(k):
                text = f"{values[i, j]:.2f}" if normalized else str(int(values[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if k > 10 else 10,
                        color="white" if values[i, j] > middle else "black")
    return _save(fig, path)


# ---------------------------------------------------------------- calibration

def _check_probs(probs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    probs, targets = torch.as_tensor(probs), torch.as_tensor(targets).long()
    if probs.ndim != 2 or targets.ndim != 1 or len(probs) != len(targets):
        raise CnnkitError(f"need probabilities (N, K) and targets (N,), got {tuple(probs.shape)} and "
                          f"{tuple(targets.shape)}")
    if len(targets) == 0:
        raise CnnkitError("no predictions to calibrate")
    return probs.detach().cpu(), targets.cpu()


def calibration_bins(probs: Tensor, targets: Tensor, bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    """Per bin of the top-label confidence: (accuracy, mean confidence, count), each (bins + 1,). Bins are
    [b/B, (b+1)/B) as in torchmetrics; the last entry holds the confidences of exactly 1."""
    probs, targets = _check_probs(probs, targets)
    conf, pred = probs.max(dim=1)  # (N,)
    correct = (pred == targets).to(conf.dtype)
    edges = torch.linspace(0, 1, bins + 1, dtype=conf.dtype)
    which = torch.bucketize(conf, edges, right=True) - 1  # (N,) in 0..bins
    count = torch.zeros(bins + 1, dtype=conf.dtype).scatter_add_(0, which, torch.ones_like(conf))
    acc = torch.zeros_like(count).scatter_add_(0, which, correct) / count.clamp_min(1)
    mean_conf = torch.zeros_like(count).scatter_add_(0, which, conf) / count.clamp_min(1)
    return acc, mean_conf, count


def expected_calibration_error(probs: Tensor, targets: Tensor, bins: int = 15) -> float:
    """Top-label ECE (Naeini et al. 2015; Guo et al. 2017): Σ_b |B_b|/N · |acc(B_b) − conf(B_b)| over equal-width
    confidence bins; the same number as torchmetrics' MulticlassCalibrationError(n_bins=bins, norm='l1')."""
    if bins < 1:
        raise CnnkitError(f"need at least one calibration bin, got {bins}")
    acc, conf, count = calibration_bins(probs, targets, bins)
    return float(((count / count.sum()) * (acc - conf).abs()).sum())


def plot_reliability(probs: Tensor, targets: Tensor, path: str | Path, bins: int = 15) -> Path:
    """Reliability diagram: accuracy per confidence bin (bars), the gap to the bin's mean confidence (hatched),
    the diagonal of perfect calibration, the share of predictions per bin underneath, and the ECE in the title."""
    acc, conf, count = calibration_bins(probs, targets, bins)  # (bins + 1,) each
    hits, total = (acc * count)[:bins].clone(), (conf * count)[:bins].clone()
    hits[-1] += acc[bins] * count[bins]  # confidences of exactly 1 drawn in the last bar
    total[-1] += conf[bins] * count[bins]
    count = torch.cat([count[:bins - 1], count[bins - 1:].sum().reshape(1)])  # (bins,)
    acc, conf = (hits / count.clamp_min(1)).numpy(), (total / count.clamp_min(1)).numpy()
    count = count.numpy()
    ece = expected_calibration_error(probs, targets, bins)
    width, left = 1.0 / bins, np.arange(bins) / bins
    used = count > 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True,
                                      constrained_layout=True)
    top.bar(left[used], acc[used], width=width, align="edge", edgecolor="black", color="tab:blue", label="accuracy")
    top.bar(left[used], (conf - acc)[used], bottom=acc[used], width=width, align="edge", fill=False,
            edgecolor="tab:red", hatch="//", label="gap to the mean confidence")
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set(ylim=(0, 1), ylabel="accuracy", title=f"reliability diagram (ECE = {ece:.3f}, {bins} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(left, count / count.sum(), width=width, align="edge", edgecolor="black", color="grey")
    bottom.set(xlim=(0, 1), xlabel="confidence (top-label probability)", ylabel="share")
    return _save(fig, path)


# ---------------------------------------------------------------- top losses

def losses_of(probs: Tensor, targets: Tensor) -> Tensor:
    """(N,) cross-entropy −log p_true of each prediction (p floored at 1e-12)."""
    probs, targets = _check_probs(probs, targets)
    return -probs.gather(1, targets[:, None]).squeeze(1).double().clamp_min(1e-12).log()


def _top_losses(pred: SplitPredictions, k: int) -> list[dict]:
    loss = losses_of(pred.probs, pred.targets)
    order = torch.argsort(loss, descending=True, stable=True)[:max(0, k)]
    rows = []
    for i in order.tolist():
        p, c = pred.probs[i].max(0)
        rows.append({"id": pred.ids[i], "position": i, "true": pred.classes[int(pred.targets[i])],
                     "predicted": pred.classes[int(c)], "probability": float(p), "loss": float(loss[i])})
    return rows


def top_losses(run: str | Path, split: str = "val", k: int = 16) -> list[dict]:
    """The k items of `split` with the highest loss −log p_true, highest first: {id, position (in the split),
    true, predicted, probability (of the prediction), loss}."""
    return _top_losses(split_predictions(run, split), k)


def captioned_grid(images: Tensor, captions: list[str], path: str | Path, columns: int = 4,
                   title: str | None = None, colours: list[str] | None = None) -> Path:
    """(n, C, H, W) uint8 images (C = 1 or 3) as a matplotlib grid, each with its caption above."""
    n = len(images)
    if n == 0:
        raise CnnkitError("no images to show")
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, img) in enumerate(zip(axes.flat, images)):
        pixels = img.permute(1, 2, 0).cpu().numpy()  # (H, W, C)
        ax.imshow(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(captions[i], fontsize=8, color=colours[i] if colours else "black")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _plot_top_losses(data: RunSplit, rows: list[dict], path: str | Path) -> Path:
    images = data.images([r["position"] for r in rows])
    captions = [f"{r['true']} / {r['predicted']} {r['probability']:.2f}\nloss {r['loss']:.2f}" for r in rows]
    colours = ["tab:red" if r["true"] != r["predicted"] else "black" for r in rows]
    return captioned_grid(images, captions, path, title=f"top losses on {data.split} (true / predicted p)",
                          colours=colours)


def plot_top_losses(run: str | Path, path: str | Path, split: str = "val", k: int = 16) -> Path:
    """A grid of the k images of `split` with the highest loss, captioned 'true / predicted p' (wrong in red)."""
    data = open_split(run, split)
    return _plot_top_losses(data, _top_losses(predictions_of(data), k), path)


# ---------------------------------------------------------------- everything at once

def top_k_accuracy(probs: Tensor, targets: Tensor, ks: tuple[int, ...] = (1, 2, 3, 5)) -> dict[int, float]:
    """{k: share of items whose true class is among the k highest probabilities}, for each k below K (and 1)."""
    probs, targets = _check_probs(probs, targets)
    kk = probs.shape[1]
    ranked = probs.argsort(dim=1, descending=True, stable=True)  # (N, K)
    hit = ranked == targets[:, None]  # (N, K): one True per row, at the true class's rank
    return {k: float(hit[:, :k].any(1).double().mean()) for k in ks if k == 1 or k < kk}


def classification_analysis(run: str | Path, out_dir: str | Path, split: str = "val", k: int = 16,
                            bins: int = 15) -> dict:
    """Confusion (counts, normalised), reliability and top-loss pictures of RUN's `split` written to out_dir as
    confusion.png, confusion_normalized.png, reliability.png and top_losses.png; returns {"split", "count",
    "confusion" (counts as lists), "ece", "top_k_accuracy" {k: acc}, "per_class" {name: {precision, recall,
    f1, support}}, "top_losses" (rows of `top_losses`), "paths" {name: path}}."""
    data = open_split(run, split)
    pred = predictions_of(data)
    out_dir = Path(out_dir)
    classes = pred.classes
    counts = confusion_matrix(pred.probs, pred.targets, len(classes))
    rows = _top_losses(pred, k)
    paths = {
        "confusion": plot_confusion(counts, classes, out_dir / "confusion.png"),
        "confusion_normalized": plot_confusion(counts, classes, out_dir / "confusion_normalized.png", True),
        "reliability": plot_reliability(pred.probs, pred.targets, out_dir / "reliability.png", bins),
        "top_losses": _plot_top_losses(data, rows, out_dir / "top_losses.png"),
    }
    metrics = classification_metrics(pred.probs, pred.targets, classes)
    return {"split": split, "count": len(pred.targets), "classes": classes, "confusion": counts.tolist(),
            "ece": expected_calibration_error(pred.probs, pred.targets, bins),
            "top_k_accuracy": top_k_accuracy(pred.probs, pred.targets), "per_class": metrics["per_class"],
            "top_losses": rows, "paths": {name: str(p) for name, p in paths.items()}}
