"""Stratified, seeded train/val/test splits, written to split.json with a hash of each split."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from cnnkit.data.sources import ImageSource
from cnnkit.errors import CnnkitError
from cnnkit.files import atomic_write


def _stratified(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (rest, held) with `fraction` held out, stratified by label where possible."""
    if fraction <= 0:
        return indices, indices[:0]
    from sklearn.model_selection import train_test_split  # here, not at the top: it costs a second to import

    try:
        rest, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=labels[indices])
    except ValueError:  # a class too small to stratify
        warnings.warn("some class is too small for a stratified split; splitting at random", stacklevel=3)
        rest, held = train_test_split(indices, test_size=fraction, random_state=seed)
    return np.sort(rest), np.sort(held)


def make_split(source: ImageSource, val: float = 0.15, test: float = 0.15, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices per split. Given `train/val/test` folders are kept; a missing val or test is carved from train."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise CnnkitError(f"split fractions must be in [0, 1) and sum below 1, got val={val}, test={test}")
    if test <= 0 and "test" not in source.presplit:
        raise CnnkitError("the test fraction must be above 0: cnnkit always keeps a locked test split")
    labels = source.labels
    given = source.presplit
    train = given.get("train", np.arange(len(source)))
    if "test" in given:
        test_idx = given["test"]
    else:  # carve the test share of the whole set out of train
        share = test * len(source) / max(len(train), 1)
        train, test_idx = _stratified(train, labels, min(share, 0.5), seed)
    if "val" in given:
        val_idx = given["val"]
    else:
        share = val * len(source) / max(len(train), 1) if "test" not in given else val
        train, val_idx = _stratified(train, labels, min(share, 0.5), seed + 1)
    split = {"train": train, "val": val_idx, "test": test_idx}
    for name, idx in split.items():
        if len(idx) == 0 and name != "val":
            raise CnnkitError(f"the {name} split is empty ({len(source)} images in all); add images")
    return split


def split_hash(ids: list[str], labels: list[int] | list[str]) -> str:
    """sha256 of the split's sorted 'id<TAB>label' lines (label: class index, or targets as text, see
    ImageSource.label_text): equal hashes mean the same images and labels."""
    lines = sorted(f"{i}\t{y}" for i, y in zip(ids, labels))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def split_record(source: ImageSource, split: dict[str, np.ndarray], seed: int, fractions: dict) -> dict:
    """What split.json holds: per split the ids, labels and their hash."""
    record = {"source": source.name, "seed": seed, "fractions": fractions, "classes": source.classes, "splits": {}}
    for name, idx in split.items():
        ids = [source.ids[i] for i in idx]
        labels = [int(source.labels[i]) if source.targets is None else source.label_text(i) for i in idx]
        record["splits"][name] = {"count": len(ids), "sha256": split_hash(ids, labels), "ids": ids, "labels": labels}
    return record


def write_split(path: Path, record: dict) -> None:
    atomic_write(path, json.dumps(record, indent=1))


def indices_from_record(source: ImageSource, record: dict, name: str) -> np.ndarray:
    """Indices into `source` of the split `name` recorded in split.json; fails if the data changed."""
    where = {item_id: i for i, item_id in enumerate(source.ids)}
    entry = record["splits"][name]
    missing = [i for i in entry["ids"] if i not in where]
    if missing:
        raise CnnkitError(
            f"the {name} split lists {len(missing)} item(s) no longer in the data, e.g. {missing[0]!r}; "
            "the data changed since training"
        )
    idx = np.asarray([where[i] for i in entry["ids"]], dtype=np.int64)
    if split_hash(entry["ids"], [source.label_text(i) for i in idx]) != entry["sha256"]:
        raise CnnkitError(f"the {name} split's labels changed since training (hash mismatch)")
    return idx
