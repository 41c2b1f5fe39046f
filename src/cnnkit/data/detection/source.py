"""Detection data: open any annotation format as a `DetectionSource`, validate it, convert between formats.

    source = open_detection_source("data/instances.json")       # COCO; or a VOC / YOLO / Penn-Fudan folder
    source = open_detection_source("synthetic-shapes:count=3,n=300,size=128")
    image, target = source.read(0)     # uint8 (3, H, W); {"boxes": float32 (K, 4) xyxy, "labels": int64 (K,)}
    convert("data/instances.json", "yolo", "data/yolo")

Formats live in cnnkit.data.detection.annotations (coco, voc, yolo, pennfudan); the checks in annotations.validate.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cnnkit.config import parse_key_values
from cnnkit.data.detection.annotations.coco import read_coco, to_coco_dict, write_coco
from cnnkit.data.detection.annotations.pennfudan import is_pennfudan, read_pennfudan
from cnnkit.data.detection.annotations.source import DetectionItem, DetectionSource, make_item, masks_to_boxes
from cnnkit.data.detection.annotations.validate import ValidationPolicy, ValidationReport, parse_policy, validate
from cnnkit.data.detection.annotations.voc import is_voc, read_voc, write_voc
from cnnkit.data.detection.annotations.yolo import is_yolo, read_yolo, write_yolo
from cnnkit.data.synthetic import SHAPES, ShapesConfig, make_multi_shapes
from cnnkit.errors import CnnkitError, did_you_mean

__all__ = ["DetectionItem", "DetectionSource", "ValidationPolicy", "ValidationReport", "WRITERS", "check_annotations",
           "convert", "masks_to_boxes", "open_detection_source", "parse_policy", "read_coco", "read_pennfudan",
           "read_voc", "read_yolo", "synthetic_detection", "to_coco_dict", "validate", "write_coco", "write_voc",
           "write_yolo"]
log = logging.getLogger("cnnkit")
WRITERS = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo}
# the detection flavour's defaults: bigger images, smaller shapes, up to 3 of them per image
SYNTHETIC_DEFAULTS = {"n": 300, "size": 128, "count": 3, "min_scale": 0.15, "max_scale": 0.4}


def synthetic_detection(options: str = "") -> DetectionSource:
    """`synthetic-shapes` for detection: seeded images with 1..count circles, squares and triangles that do not
    overlap, each with its exact box (the extent of its pixels) and its exact instance mask. Options as for
    classification (n, size, count, min_scale, max_scale, colour, background, noise, seed); defaults n=300,
    size=128, count=3, min_scale=0.15, max_scale=0.4."""
    fields = [f for f in ShapesConfig.__dataclass_fields__ if f != "target"]
    opts = parse_key_values(options, example="synthetic-shapes:count=3,n=300,size=128")
    for key in opts:
        if key not in fields:
            raise CnnkitError(f"unknown synthetic-shapes option {key!r}{did_you_mean(key, fields)}")
    try:
        cfg = ShapesConfig(**{**SYNTHETIC_DEFAULTS, **opts, "target": "labels"})
        images, _, boxes, kinds, id_maps = make_multi_shapes(cfg, masks=True)
    except (TypeError, ValueError) as err:
        raise CnnkitError(f"synthetic-shapes: {err}") from None
    items = [make_item(i + 1, None, cfg.size, cfg.size, b, k, segments=_rles(ids, len(k)))
             for i, (b, k, ids) in enumerate(zip(boxes, kinds, id_maps))]
    return DetectionSource("synthetic-shapes", list(SHAPES), items, images=list(images.transpose(0, 2, 3, 1)))


def _rles(ids: np.ndarray, n: int) -> list[dict]:
    """Shapes 1..n of an instance-id map (S, S) → their masks as COCO RLEs (compact; decoded when read)."""
    from pycocotools import mask as mask_utils

    binary = np.asfortranarray((ids[None] == np.arange(1, n + 1)[:, None, None]).transpose(1, 2, 0).astype(np.uint8))
    return list(mask_utils.encode(binary)) if n else []


def read_detection(spec: str | Path, images: str | Path | None = None) -> DetectionSource:
    """SPEC → DetectionSource as written, before any check (see `open_detection_source`)."""
    name, _, arg = str(spec).partition(":")
    if name == "synthetic-shapes":
        return synthetic_detection(arg)
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".json":
        return read_coco(path, images)
    if path.is_dir():
        if is_voc(path):
            return read_voc(path, images)
        if is_yolo(path):
            return read_yolo(path, images)
        if is_pennfudan(path):
            return read_pennfudan(path)
        jsons = sorted(path.glob("*.json"))
        if len(jsons) == 1:  # a folder written by write_coco: annotations.json + images/
            return read_coco(jsons[0], images)
        raise CnnkitError(f"{path}: not a detection data set; expected a COCO .json file, a VOC folder "
                          "(Annotations/ + JPEGImages/), a YOLO folder (images/ + labels/ + data.yaml) or Penn-Fudan "
                          "(Annotation/ + PNGImages/)")
    if path.exists():
        raise CnnkitError(f"{path}: a detection data file must be COCO JSON (.json)")
    raise CnnkitError(f"detection data not found: {str(spec)!r} is neither a COCO .json file, a VOC, YOLO or "
                      "Penn-Fudan folder, nor synthetic-shapes")


def open_detection_source(spec: str | Path, images: str | Path | None = None,
                          policy: ValidationPolicy | dict | str | None = None) -> DetectionSource:
    """A COCO .json file (images beside it or under `images`), a VOC, YOLO or Penn-Fudan folder, or
    `synthetic-shapes[:k=v,...]` → a checked DetectionSource (`validate` with `policy`; report in `.report`)."""
    source, _ = validate(read_detection(spec, images), policy)
    return source


def convert(src: str | Path, to: str, out: str | Path, images: str | Path | None = None,
            policy: ValidationPolicy | dict | str | None = None) -> Path:
    """Read SRC in any format, check it, and write it as `to` (coco | voc | yolo) at OUT, images included.
    Returns the written path (the .json file for COCO, the folder otherwise)."""
    if to not in WRITERS:
        raise CnnkitError(f"unknown annotation format {to!r}{did_you_mean(to, WRITERS)}")
    source = open_detection_source(src, images, policy)
    return WRITERS[to](source, out)


def check_annotations(src: str | Path, images: str | Path | None = None,
                      policy: ValidationPolicy | dict | str | None = None) -> ValidationReport:
    """Read and check SRC without writing anything; the report (fatal problems raise CnnkitError)."""
    return open_detection_source(src, images, policy).report


def boxes_within(a: DetectionSource, b: DetectionSource) -> float:
    """The largest corner difference, in pixels, between the boxes of two sources with the same items in the same
    order (labels must agree); inf when the counts or labels differ."""
    if len(a) != len(b):
        return float("inf")
    worst = 0.0
    for x, y in zip(a.items, b.items):
        if x.boxes.shape != y.boxes.shape or not np.array_equal(x.labels, y.labels):
            return float("inf")
        if len(x.boxes):
            worst = max(worst, float(np.abs(x.boxes - y.boxes).max()))
    return worst
