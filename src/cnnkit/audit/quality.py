"""Image quality, outliers and class balance: the pictures a data set would be better without, and what its counts
ask of the loss.

- `image_stats`: per image, sharpness "blur" (the variance of the Laplacian of the grey image at a fixed 128x128
  working size, so a large and a small photo compare, divided by the variance of the grey image + 1, so that a dark
  or low-contrast picture is not called blurry: the share of the image's energy in its finest detail; hymenoptera's
  photos span 0.045-3.0, median 0.35, a flat picture is 0), brightness (mean luminance 0..1), contrast (standard
  deviation of the luminance 0..1), width, height, aspect ratio (long side / short side), and whether an RGB image
  is grey (the 99th percentile of max(R,G,B) - min(R,G,B) over its pixels within 10 of 255: JPEG's colour noise
  on a grey picture stays below it).
- `quality_issues`: flags against absolute limits and against the set itself, with robust z-scores
  (z = (x - median) / (1.4826 MAD), so the outliers being looked for do not inflate the scale that finds them).
  Blur is compared in log space (sharpness spans decades).
- `embedding_outliers`: the mean cosine distance to the k nearest neighbours in an embedding; `outlier_flags` flags
  robust z > 3.5 (Iglewicz and Hoaglin's cut-off).
- `class_balance`: counts per class and split, the imbalance ratio, and the 'balanced' class weights
  n / (K n_c) (sklearn's `compute_class_weight('balanced')`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.audit.duplicates import image_batches
from cnnkit.data.images import rgb_to_grey
from cnnkit.data.sources import ImageSource
from cnnkit.errors import CnnkitError

__all__ = ["WORK_SIZE", "class_balance", "embedding_outliers", "image_stats", "outlier_flags", "quality_issues",
           "robust_z", "stats_of_images"]

WORK_SIZE = 128  # sharpness and colour are measured on the image resized to WORK_SIZE x WORK_SIZE
GREY_TOLERANCE = 10  # of 255: channel spread (99th percentile) at or under which an RGB image is grey
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
STAT_NAMES = ("blur", "brightness", "contrast", "width", "height", "aspect", "grayscale")


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD); zeros where the spread is nil (falls back to the mean absolute deviation)."""
    x = np.asarray(values, dtype=np.float64)
    median = np.median(x)
    scale = 1.4826 * np.median(np.abs(x - median))
    if scale <= 0:
        scale = 1.2533 * np.mean(np.abs(x - median))  # MAD is 0 when over half the values are equal
    return (x - median) / scale if scale > 0 else np.zeros_like(x)


def stats_of_images(imgs: torch.Tensor) -> dict[str, np.ndarray]:
    """(n, 3, H, W) uint8 images of one size → the per-image stats of `image_stats` (n,) each."""
    n, _, h, w = imgs.shape
    small = F.interpolate(imgs.float(), size=(WORK_SIZE, WORK_SIZE), mode="bilinear", antialias=True,
                          align_corners=False).clamp(0, 255)  # (n, 3, S, S)
    grey = rgb_to_grey(small.round().to(torch.uint8)).float()  # (n, 1, S, S)
    lap = F.conv2d(grey, LAPLACIAN)  # (n, 1, S-2, S-2)
    spread = (small.amax(1) - small.amin(1)).flatten(1)  # (n, S*S)
    return {
        "blur": (lap.flatten(1).var(1) / (grey.flatten(1).var(1) + 1.0)).numpy(),
        "brightness": (grey.flatten(1).mean(1) / 255).numpy(),
        "contrast": (grey.flatten(1).std(1) / 255).numpy(),
        "width": np.full(n, w, dtype=np.int64), "height": np.full(n, h, dtype=np.int64),
        "aspect": np.full(n, max(w, h) / max(min(w, h), 1)),
        "grayscale": (torch.quantile(spread, 0.99, dim=1) <= GREY_TOLERANCE).numpy(),
    }


def image_stats(source: ImageSource, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-image stats of items `indices` (default: all): {name: (n,) array} for the names in STAT_NAMES."""
    indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for positions, imgs in image_batches(source, indices, channels=3):
        same = len({tuple(i.shape) for i in imgs}) == 1
        parts = [stats_of_images(torch.stack(imgs))] if same else [stats_of_images(i[None]) for i in imgs]
        for name in STAT_NAMES:
            values = np.concatenate([p[name] for p in parts])
            if name not in out:
                out[name] = np.zeros(len(indices), dtype=values.dtype)
            out[name][positions] = values
    return out


def _issue(index: int, issue: str, value: float, score: float) -> dict:
    return {"index": int(index), "issue": issue, "value": float(value), "score": round(float(score), 3)}


def quality_issues(stats: dict[str, np.ndarray], blur_z: float = 3.5, blur_ratio: float = 0.25,
                   blur_floor: float = 0.01,
                   dark: float = 0.1, bright: float = 0.9, min_side: int = 32, tiny_ratio: float = 0.25,
                   max_aspect: float = 3.0, colour_share: float = 0.8) -> list[dict]:
    """Issues [{"index", "issue", "value", "score"}] from `image_stats`, worst first within each issue:

    - blurry: log sharpness more than `blur_z` robust z below the set's and under `blur_ratio` x its median (a set
      of near-identical pictures has a tiny MAD: the ratio keeps small differences from counting; score: -z), or
      sharpness under `blur_floor` (no detail at all; score: floor / value);
    - dark / bright: brightness under `dark` or over `bright` (score: how far past, in units of the limit's margin);
    - tiny: the short side under `min_side` px or under `tiny_ratio` x the set's median (score: limit / side);
    - extreme_aspect: long side / short side over `max_aspect` (score: aspect / max_aspect);
    - grayscale: a grey image where at least `colour_share` of the set is colour (score: the colour share).
    The relative rules need 8 images or more (a median of fewer says little).
    """
    n = len(stats["blur"])
    issues = []
    log_blur = np.log10(np.asarray(stats["blur"], dtype=np.float64) + 1e-3)
    z = robust_z(log_blur) if n >= 8 else np.zeros(n)
    median_blur = float(np.median(stats["blur"])) if n else 0.0
    for i in range(n):
        if stats["blur"][i] < blur_floor:
            issues.append(_issue(i, "blurry", stats["blur"][i], blur_floor / max(stats["blur"][i], 1e-3)))
        elif z[i] < -blur_z and stats["blur"][i] < blur_ratio * median_blur:
            issues.append(_issue(i, "blurry", stats["blur"][i], -z[i]))
    issues += _exposure_issues(np.asarray(stats["brightness"]), dark, bright)
    issues += _shape_issues(stats, n, min_side, tiny_ratio, max_aspect)
    grey = np.asarray(stats["grayscale"], dtype=bool)
    share = 1 - grey.mean() if n else 0.0
    if share >= colour_share:
        issues += [_issue(i, "grayscale", 1.0, share) for i in np.flatnonzero(grey)]
    return sorted(issues, key=lambda d: (d["issue"], -d["score"], d["index"]))


def _exposure_issues(brightness: np.ndarray, dark: float, bright: float) -> list[dict]:
    out = [_issue(i, "dark", brightness[i], (dark - brightness[i]) / dark) for i in np.flatnonzero(brightness < dark)]
    return out + [_issue(i, "bright", brightness[i], (brightness[i] - bright) / (1 - bright))
                  for i in np.flatnonzero(brightness > bright)]


def _shape_issues(stats: dict[str, np.ndarray], n: int, min_side: int, tiny_ratio: float,
                  max_aspect: float) -> list[dict]:
    side = np.minimum(stats["width"], stats["height"]).astype(np.float64)
    limit = max(min_side, tiny_ratio * float(np.median(side))) if n >= 8 else float(min_side)
    out = [_issue(i, "tiny", side[i], limit / max(side[i], 1.0)) for i in np.flatnonzero(side < limit)]
    aspect = np.asarray(stats["aspect"], dtype=np.float64)
    return out + [_issue(i, "extreme_aspect", aspect[i], aspect[i] / max_aspect)
                  for i in np.flatnonzero(aspect > max_aspect)]


def embedding_outliers(embeddings: np.ndarray, k: int = 10) -> np.ndarray:
    """(N, D) features → (N,) mean cosine distance to each item's k nearest other items (higher: more alone)."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise CnnkitError(f"embedding_outliers needs (N, D) embeddings with N >= 2, got shape {x.shape}")
    k = min(k, len(x) - 1)
    distances, _ = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x).kneighbors(x)  # (N, k+1)
    return distances[:, 1:].mean(1)  # column 0 is the item itself (or an exact copy: distance 0 as well)


def outlier_flags(scores: np.ndarray, threshold: float = 3.5) -> np.ndarray:
    """(N,) bool: robust z of the scores above `threshold`."""
    return robust_z(scores) > threshold


def class_balance(labels: np.ndarray, classes: list[str], splits: list[str] | None = None) -> dict:
    """{"classes", "counts": {split: [n per class]} ("all" included), "imbalance_ratio": largest / smallest class
    (inf when a class is empty), "split_ratios": {split: ratio}, "weights": n / (K n_c) per class over the train
    split where there is one, else all items (None for a class with no item), "weights_from": the split used}."""
    labels = np.asarray(labels, dtype=np.int64)
    names = np.asarray(["all"] * len(labels) if splits is None else list(splits), dtype=object)
    counts = {"all": np.bincount(labels, minlength=len(classes))}
    for split in sorted(set(names) - {"all"}):
        counts[split] = np.bincount(labels[names == split], minlength=len(classes))

    def ratio(c: np.ndarray) -> float:
        return float(c.max() / c.min()) if c.min() > 0 else float("inf")

    basis = "train" if "train" in counts else "all"
    c = counts[basis]
    weights = [float(c.sum() / (np.count_nonzero(c) * nc)) if nc else None for nc in c]
    return {"classes": list(classes), "counts": {k: v.tolist() for k, v in counts.items()},
            "imbalance_ratio": ratio(counts["all"]), "split_ratios": {k: ratio(v) for k, v in counts.items()},
            "weights": weights, "weights_from": basis}
