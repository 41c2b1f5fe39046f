"""The audit's sections: exact groups, whether perceptual hashes can be trusted on a set, and how detection and
segmentation sources are read (pixels, names, the effort's item count)."""
from __future__ import annotations

import numpy as np

from cnnkit.audit.duplicates import phash_source
from cnnkit.audit.sections import _name, effort_items, exact_groups, hashes_discriminate, pixels_of
from cnnkit.data.builtin import open_source
from cnnkit.data.detection.source import synthetic_detection
from cnnkit.data.sources import from_arrays


def test_exact_groups_put_leaks_first() -> None:
    hashes = ["a", "b", "a", "c", "b", "b"]
    names = ["train", "train", "test", "val", "train", "train"]
    groups = exact_groups(hashes, names)
    assert [g["items"] for g in groups] == [[0, 2], [1, 4, 5]]
    assert groups[0]["crosses_splits"] and groups[0]["splits"] == ["test", "train"]
    assert not groups[1]["crosses_splits"]


def test_hashes_are_trusted_on_textures_not_on_small_digits() -> None:
    rng = np.random.default_rng(0)
    textures = from_arrays(rng.integers(0, 256, (300, 3, 48, 48), dtype=np.uint8), np.arange(300) % 2)
    assert hashes_discriminate(phash_source(textures))
    assert not hashes_discriminate(phash_source(open_source("digits")))  # 1.9% of random pairs within 16 bits


class _Target:
    def __init__(self, source):
        self.source = source


class _Found:
    def __init__(self, source):
        self.target = _Target(source)


def test_a_detection_source_is_read_through_its_images_and_counts_boxes() -> None:
    source = synthetic_detection("n=6,size=32")
    view = pixels_of(source)
    assert len(view) == 6 and tuple(view.load(2, 3).shape[:1]) == (3,)
    assert view.load(2, 1).shape[0] == 1
    assert effort_items(_Found(source)) == sum(len(item.boxes) for item in source.items)
    assert _name(source, 1).endswith("/1")
    digits = open_source("digits")
    assert pixels_of(digits) is digits and effort_items(_Found(digits)) == 1797


def test_box_issues_read_as_instructions_in_relabel_csv() -> None:
    from cnnkit.audit.sections import box_labels

    box = [10.2, 20.0, 50.0, 90.6]
    assert box_labels({"kind": "missing", "label": "person", "box": box}) == {
        "given_label": "(no box)", "suggested_label": "add person [10, 20, 50, 91]"}
    moved = box_labels({"kind": "contradicted", "label": "person", "box": box, "suggested": [30, 20, 70, 91]})
    assert moved == {"given_label": "person [10, 20, 50, 91]", "suggested_label": "move to [30, 20, 70, 91]"}
    assert box_labels({"kind": "wrong_class", "label": "person", "box": box, "suggested": "dog"})[
        "suggested_label"] == "dog [10, 20, 50, 91]"
    assert "remove" in box_labels({"kind": "contradicted", "label": "person", "box": box, "suggested": None})[
        "suggested_label"]
    assert box_labels({"kind": "size", "label": "person", "box": box})["suggested_label"] == "check its size"
