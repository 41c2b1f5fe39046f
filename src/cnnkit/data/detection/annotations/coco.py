"""COCO JSON: read a ground-truth file, write one (with its images under images/), and `to_coco_dict`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cnnkit.data.detection.annotations.source import DetectionSource, export_images, image_size, make_item
from cnnkit.errors import CnnkitError


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CnnkitError(f"{path}: cannot read the COCO file ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CnnkitError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    if not isinstance(data, dict):
        raise CnnkitError(f"{path}: a COCO file is a JSON object with 'images', 'annotations' and 'categories'")
    return data


def _records(data: dict, key: str, path: Path, required: tuple[str, ...]) -> list[dict]:
    records = data.get(key)
    if not isinstance(records, list):
        raise CnnkitError(f"{path}: missing key {key!r} (a COCO file needs 'images', 'annotations' and "
                          "'categories' lists)")
    for n, record in enumerate(records):
        missing = [k for k in required if not isinstance(record, dict) or k not in record]
        if missing:
            raise CnnkitError(f"{path}: {key}[{n}] lacks {', '.join(repr(k) for k in missing)}")
    return records


def read_coco(path: str | Path, images: str | Path | None = None) -> DetectionSource:
    """A COCO ground-truth file → DetectionSource. Images are found at IMAGES/file_name, where IMAGES is
    `images` or the JSON file's folder. Categories keep their order by id and become classes 0..C-1.
    When every annotation has a "segmentation" (polygons or RLE), the items keep them: `source.masks(i)`."""
    path = Path(path)
    data = _load_json(path)
    root = Path(images) if images is not None else path.parent
    categories = sorted(_records(data, "categories", path, ("id", "name")), key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    image_records = _records(data, "images", path, ("id", "file_name"))
    annotations = _records(data, "annotations", path, ("image_id", "category_id", "bbox"))
    by_image: dict = {}
    for n, a in enumerate(annotations):
        bbox = a["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise CnnkitError(f"{path}: annotations[{n}] has bbox {bbox!r}; expected [x, y, width, height] numbers")
        by_image.setdefault(a["image_id"], []).append(a)
    known_ids = set()
    for r in image_records:
        if r["id"] in known_ids:
            raise CnnkitError(f"{path}: image id {r['id']!r} is listed twice in 'images'; give each image one id")
        known_ids.add(r["id"])
    orphans = [a["image_id"] for a in annotations if a["image_id"] not in known_ids]
    if orphans:
        raise CnnkitError(f"{path}: {len(orphans)} annotation(s) name image_id {orphans[0]!r}, which is not in "
                          "'images'; add the image or remove its annotations")
    has_masks = bool(annotations) and all(a.get("segmentation") for a in annotations)
    items = []
    for r in image_records:
        file = root / r["file_name"]
        if "width" in r and "height" in r:
            if not file.is_file():
                raise CnnkitError(f"{path}: image {file} is listed but missing on disk; fix file_name or give "
                                  "--images DIR")
            width, height = r["width"], r["height"]
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
