"""`cnnkit evaluate RUN --data OTHER`: a saved run measured on a labelled set collected apart from its own data
(the ImageNetV2 question: does the model generalise to a freshly collected test set, or only to its own?).

    result = measure_other(recipe, "runs/digits", "mnist:new_digits")
    # {"data", "count", loss, accuracy ..., "shift": {"metric", "reference", "reference_value", "value", "delta"}}

OTHER is opened by the run's recipe as training would open it (every item, its presplit parts together); its
classes are mapped onto the run's by name (another order, or a subset), and one the run does not know is a one-line
error. Any image of OTHER whose decoded pixels are in the run's training split (sha256, data.fingerprint) refuses
the whole set. The shift is measured against the run's last `cnnkit test` (test_log.jsonl), else against its val
split; the locked test split is never read here.
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.config import Config, config_from_dict
from cnnkit.data.detection.annotations.source import DetectionSource
from cnnkit.data.fingerprint import pixel_hashes
from cnnkit.data.segmentation.base import SegmentationSource
from cnnkit.data.sources import ImageSource
from cnnkit.errors import CnnkitError
from cnnkit.recipes.base import Recipe
from cnnkit.recipes.runner import check_options, measure
from cnnkit.runs.folder import open_run

__all__ = ["SHIFT_METRIC", "last_test", "match_classes", "measure_other", "refuse_overlap", "shift_of"]

# the problem type's main metric, as the verdict reads it (cnnkit.diagnose.verdict)
SHIFT_METRIC = {"binary": "accuracy", "multiclass": "accuracy", "multilabel": "map", "regression": "r2",
                "detect": "map", "instance": "mask_map", "segment": "miou"}


def measure_other(recipe: Recipe, run: str | Path, data: str, **options: Any) -> dict:
    """{"data", "count", the recipe's metrics, "shift"} of RUN's saved model on every item of `data` (a source
    string the run's recipe opens), after its classes are mapped onto the run's and its images checked against
    the run's training split. `options` go to `recipe.metrics` (e.g. precision, attack)."""
    check_options(recipe.metrics, options, recipe)
    model, card, cfg, record = open_run(run)
    cfg = config_from_dict(cfg)
    other_cfg = _config_for(cfg, data, recipe.eval_batch_size)
    other = match_classes(recipe.open_source(other_cfg), card.classes, data)
    refuse_overlap(recipe, cfg, record, other, card.input_size[0], run, data)
    loader = recipe.loader(other_cfg, other, np.arange(len(other)), card, train=False)
    metrics = recipe.metrics(model, card, other_cfg, loader, **options)
    shift = shift_of(recipe, run, recipe.verdict_problem(card), metrics, options.get("precision", "auto"))
    return {"data": data, "count": len(other), **metrics, "shift": shift}


def _config_for(cfg: Config, data: str, batch_size: int | None) -> Config:
    """A copy of the run's config that names `data` (its own images folder, if any, is the run's, not OTHER's)."""
    other = copy.deepcopy(cfg)
    other.data.source, other.data.images = data, None
    if batch_size is not None:
        other.train.batch_size = batch_size
    return other


# -- classes ------------------------------------------------------------------------------------------------------

def match_classes(source: Any, classes: list[str], data: str) -> Any:
    """`source` with its labels as indices into the run's `classes`, matched by name; a class of OTHER that the run
    does not know is a one-line error naming it."""
    theirs = list(source.classes)
    if theirs == list(classes):
        return source
    unknown = [c for c in theirs if c not in classes]
    if unknown:
        raise CnnkitError(f"class {unknown[0]!r} of {data} is not a class of the run (its classes: "
                          f"{', '.join(classes)}); evaluate on images of the run's classes only")
    lookup = np.asarray([list(classes).index(c) for c in theirs], dtype=np.int64)
    if isinstance(source, ImageSource):
        return _remap_images(source, lookup, classes, data)
    if isinstance(source, DetectionSource):
        items = [replace(it, labels=np.where(it.labels >= 0, lookup[np.clip(it.labels, 0, None)], it.labels))
                 for it in source.items]
        return replace(source, classes=list(classes), items=items)
    if isinstance(source, SegmentationSource):
        return _remap_masks(source, lookup, classes)
    raise CnnkitError(f"the classes of {data} ({', '.join(theirs)}) differ from the run's ({', '.join(classes)})")


def _remap_images(source: ImageSource, lookup: np.ndarray, classes: list[str], data: str) -> ImageSource:
    """Labels (or multilabel / regression columns) of an ImageSource put in the run's class order."""
    if source.targets is None:
        return replace(source, labels=lookup[source.labels], classes=list(classes))
    if source.problem == "regression" and len(lookup) != len(classes):
        missing = [c for c in classes if c not in source.classes]
        raise CnnkitError(f"{data} has no target {missing[0]!r}; a regression run is evaluated on all its targets "
                          f"({', '.join(classes)})")
    targets = np.zeros((len(source), len(classes)), dtype=np.float32)
    targets[:, lookup] = source.targets
    return replace(source, targets=targets, classes=list(classes))


def _remap_masks(source: SegmentationSource, lookup: np.ndarray, classes: list[str]) -> SegmentationSource:
    """A segmentation source whose mask values are the run's class indices (ignore_index kept)."""
    read, theirs = source.reader, list(source.classes)

    def reader(i: int) -> tuple[Any, np.ndarray]:
        image, mask = read(i)
        mask = np.asarray(mask, dtype=np.int64)
        known = (mask >= 0) & (mask < len(lookup))
        out = mask.copy()
        out[known] = lookup[mask[known]]
        return image, out

    palette = [source.palette[theirs.index(c)] if c in theirs else (0, 0, 0) for c in classes]
    return replace(source, classes=list(classes), palette=palette, reader=reader)


# -- overlap with the training split ----------------------------------------------------------------------------

def _where(source: Any, i: int, data: str) -> str:
    """Item i of a source, for a message: its file, or the data and the item's id."""
    if isinstance(source, DetectionSource):
        return source.items[i].where()
    paths = getattr(source, "paths", None)
    if paths is not None:
        return str(paths[i])
    return f"{data} {source.ids[i] if isinstance(source, ImageSource) else f'item {i}'}"


def refuse_overlap(recipe: Recipe, cfg: Config, record: dict, other: Any, channels: int, run: str | Path,
                   data: str) -> None:
    """A one-line error when any image of `other` has the pixels of an image of the run's training split."""
    try:
        source = recipe.open_source(copy.deepcopy(cfg))
        train = recipe.read_split(source, record, "train")
    except CnnkitError as err:
        raise CnnkitError(f"cannot check {data} against the training split of {run}: {err}") from None
    seen = set(pixel_hashes(source, train, channels))
    inside = [i for i, h in enumerate(pixel_hashes(other, None, channels)) if h in seen]
    if inside:
        raise CnnkitError(f"{len(inside)} of {len(other)} images of {data} are in {run}'s training split (e.g. "
                          f"{_where(other, inside[0], data)}); remove them from {data}: a model is only measured on "
                          "images it never trained on")


# -- the shift ----------------------------------------------------------------------------------------------------

def last_test(run: str | Path, key: str) -> float | None:
    """`key` of the run's last `cnnkit test` (RUN/test_log.jsonl), or None when it was never tested."""
    log = Path(run) / "test_log.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    value = json.loads(lines[-1]).get(key) if lines and lines[-1].strip() else None
    return float(value) if isinstance(value, (int, float)) else None


def shift_of(recipe: Recipe, run: str | Path, problem: str, metrics: dict, precision: str = "auto") -> dict | None:
    """{"metric", "reference" ('test' or 'val'), "reference_value", "value", "delta"}: the main metric on OTHER
    against the run's last test result, else (never tested: the test split stays locked) its val split."""
    key = SHIFT_METRIC.get(problem, "loss")
    reference, where = last_test(run, key), "test"
    if reference is None:
        where = "val"
        try:
            reference = measure(recipe, run, "val", precision=precision).get(key)
        except CnnkitError as err:  # e.g. a run trained without a val split
            warnings.warn(f"no shift: {err}", stacklevel=2)
            return None
    value = metrics.get(key)
    if reference is None or value is None:
        return None
    return {"metric": key, "reference": where, "reference_value": float(reference), "value": float(value),
            "delta": float(value) - float(reference)}
