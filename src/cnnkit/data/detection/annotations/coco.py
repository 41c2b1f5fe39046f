"""COCO JSON: read a ground-truth file, write one (with its images under images/), and `to_coco_dict`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cnnkit.data.detection.annotations.source import (
    DetectionSource,
    checked_size,
    export_images,
    image_size,
    is_file,
    make_item,
)
from cnnkit.errors import CnnkitError, brief, shown

MAX_COORD = 1e9  # pixels: a bbox number beyond this is a typo or a hostile file


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CnnkitError(f"{path}: cannot read the COCO file ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CnnkitError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except ValueError as err:  # an integer of more than 4300 digits
        raise CnnkitError(f"{path}: not valid JSON: {brief(str(err))}") from None
    except RecursionError:
        raise CnnkitError(f"{path}: not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise CnnkitError(f"{path}: a COCO file is a JSON object with 'images', 'annotations' and 'categories'")
    return data


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_coordinate(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and -MAX_COORD <= v <= MAX_COORD  # nan: False


# what each field of a record must be: (key, field) → (test, what the message asks for)
FIELDS = {
    ("categories", "id"): (_is_int, "an integer"),
    ("categories", "name"): (lambda v: isinstance(v, str) or _is_int(v), "a string"),
    ("images", "id"): (_is_int, "an integer"),
    ("images", "file_name"): (lambda v: isinstance(v, str) and v != "", "a file name (a string)"),
    ("annotations", "image_id"): (lambda v: isinstance(v, str) or _is_int(v), "an image id (an integer)"),
    ("annotations", "category_id"): (lambda v: isinstance(v, str) or _is_int(v), "a category id (an integer)"),
    ("annotations", "bbox"): (lambda v: isinstance(v, list) and len(v) == 4 and all(map(_is_coordinate, v)),
                              f"[x, y, width, height]: 4 numbers within ±{MAX_COORD:g}"),
    ("annotations", "iscrowd"): (lambda v: not isinstance(v, (list, dict)) and v in (0, 1), "0 or 1"),
}


def _records(data: dict, key: str, path: Path, required: tuple[str, ...]) -> list[dict]:
    """data[key], a list of objects, each with the `required` fields, every field of FIELDS of the right type."""
    records = data.get(key)
    if not isinstance(records, list):
        raise CnnkitError(f"{path}: missing key {key!r} (a COCO file needs 'images', 'annotations' and "
                          "'categories' lists)")
    for n, record in enumerate(records):
        missing = [k for k in required if not isinstance(record, dict) or k not in record]
        if missing:
            raise CnnkitError(f"{path}: {key}[{n}] lacks {', '.join(repr(k) for k in missing)}")
        for (where, name), (test, expected) in FIELDS.items():
            if where == key and name in record and not test(record[name]):
                raise CnnkitError(f"{path}: {key}[{n}] has {name} {brief(record[name])}; expected {expected}")
    return records


def _unique_ids(records: list[dict], key: str, path: Path) -> set:
    ids = set()
    for r in records:
        if r["id"] in ids:
            what = {"images": "image", "categories": "category"}[key]
            raise CnnkitError(f"{path}: {what} id {r['id']!r} is listed twice in {key!r}; give each {what} one id")
        ids.add(r["id"])
    return ids


def read_coco(path: str | Path, images: str | Path | None = None) -> DetectionSource:
    """A COCO ground-truth file → DetectionSource. Images are found at IMAGES/file_name, where IMAGES is
    `images` or the JSON file's folder. Categories keep their order by id and become classes 0..C-1.
    When every annotation has a "segmentation" (polygons or RLE), the items keep them: `source.masks(i)`."""
    path = Path(path)
    data = _load_json(path)
    root = Path(images) if images is not None else path.parent
    categories = _records(data, "categories", path, ("id", "name"))
    _unique_ids(categories, "categories", path)
    categories.sort(key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    image_records = _records(data, "images", path, ("id", "file_name"))
    annotations = _records(data, "annotations", path, ("image_id", "category_id", "bbox"))
    by_image: dict = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    known_ids = _unique_ids(image_records, "images", path)
    orphans = [a["image_id"] for a in annotations if a["image_id"] not in known_ids]
    if orphans:
        raise CnnkitError(f"{path}: {len(orphans)} annotation(s) name image_id {brief(orphans[0])}, which is not in "
                          "'images'; add the image or remove its annotations")
    has_masks = bool(annotations) and all(a.get("segmentation") for a in annotations)
    items = []
    for n, r in enumerate(image_records):
        file = root / r["file_name"]
        if "width" in r and "height" in r:
            width, height = checked_size(r["width"], r["height"], f"{path}: images[{n}]")
            if not is_file(file):
                raise CnnkitError(f"{path}: image {shown(file)} is listed but missing on disk; fix file_name or give "
                                  "--images DIR")
        else:
            width, height = image_size(file, str(path))
        anns = by_image.get(r["id"], [])
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        labels = [index.get(a["category_id"], -1) for a in anns]
        unknown = {k: str(a["category_id"]) for k, a in enumerate(anns) if a["category_id"] not in index}
        segments = [a.get("segmentation") for a in anns]  # polygons or RLE; None when any object lacks one
        items.append(make_item(int(r["id"]), file, width, height, boxes, labels,
                               iscrowd=[int(a.get("iscrowd", 0)) for a in anns], unknown=unknown,
                               segments=segments if all(segments) and (anns or has_masks) else None))
    return DetectionSource(path.stem, [str(c["name"]) for c in categories], items)


def to_coco_dict(source: DetectionSource, file_names: list[str] | None = None) -> dict:
    """COCO ground truth: images, annotations (bbox [x, y, w, h], area, iscrowd) and categories with ids
    1..C for classes 0..C-1 (category_id = label + 1). Ready for pycocotools' COCO()."""
    images, annotations = [], []
    for i, item in enumerate(source.items):
        name = file_names[i] if file_names else (item.path.name if item.path else f"{item.image_id:06d}.png")
        images.append({"id": int(item.image_id), "file_name": name, "width": int(item.width),
                       "height": int(item.height)})
        crowd = item.iscrowd if item.iscrowd is not None else np.zeros(len(item.boxes), dtype=np.int64)
        for (x1, y1, x2, y2), label, c in zip(item.boxes.tolist(), item.labels.tolist(), crowd.tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": int(item.image_id),
                                "category_id": int(label) + 1, "bbox": [x1, y1, w, h], "area": w * h,
                                "iscrowd": int(c)})
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(source.classes)]
    return {"info": {"description": f"{source.name} (written by cnnkit)"}, "images": images,
            "annotations": annotations, "categories": categories}


def write_coco(source: DetectionSource, path: str | Path) -> Path:
    """Write PATH (a .json file; or, for a folder, PATH/annotations.json) with the images in images/ beside it,
    so that the file opens again by itself. Returns the JSON file."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        path = path / "annotations.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = export_images(source, path.parent / "images")
    data = to_coco_dict(source, [f"images/{n}" for n in names])
    path.write_text(json.dumps(data))
    return path
