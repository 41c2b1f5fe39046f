"""YOLO txt: images/ and labels/ (same relative paths, .txt), one `class cx cy w h` line per box, normalised
to [0, 1] by the image size; class names from data.yaml (`names`, a list or {index: name}) or classes.txt."""
from __future__ import annotations

from pathlib import Path

import yaml

from cnnkit.config import load_yaml
from cnnkit.data.detection.annotations.source import DetectionSource, export_images, image_size, make_item
from cnnkit.data.detection.annotations.voc import read_class_list
from cnnkit.data.images import is_image_file
from cnnkit.errors import CnnkitError, brief


def is_yolo(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "labels").is_dir()


def _class_names(folder: Path) -> list[str]:
    for name in ("data.yaml", "dataset.yaml"):
        file = folder / name
        if file.is_file():
            data = load_yaml(file)
            names = data.get("names") if isinstance(data, dict) else None
            if isinstance(names, dict):
                if not all(isinstance(k, int) and not isinstance(k, bool) for k in names):
                    raise CnnkitError(f"{file}: 'names' maps class indices to names ({{0: cat, 1: dog}}); its keys "
                                      f"are {brief(list(names))}")
                return [_name(names[k], file) for k in sorted(names)]
            if isinstance(names, list):
                return [_name(n, file) for n in names]
            raise CnnkitError(f"{file}: missing 'names' (the class names, a list or {{index: name}})")
    classes = read_class_list(folder)
    if classes is None:
        raise CnnkitError(f"{folder}: no data.yaml or classes.txt; a YOLO folder names its classes in one of them")
    return classes


def _name(value: object, file: Path) -> str:
    if isinstance(value, (str, int, float)):
        return str(value)
    raise CnnkitError(f"{file}: a class name is {brief(value)}; 'names' lists the class names as strings")


def _parse_labels(file: Path) -> list[tuple[int, list[float]]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CnnkitError(f"{file}: cannot read the YOLO labels ({err})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise CnnkitError(f"{file}:{n}: {len(fields)} fields; a YOLO box line is 'class cx cy w h' (5 fields)")
        try:
            cls, values = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            raise CnnkitError(f"{file}:{n}: {brief(line.strip())} is not 'class cx cy w h' (an integer and 4 "
                              "numbers)") from None
        if not all(0.0 <= v <= 1.0 for v in values):
            raise CnnkitError(f"{file}:{n}: values {brief(fields[1:])} outside [0, 1]; YOLO coordinates are normalised "
                              "by the image width and height")
        rows.append((cls, values))
    return rows


def read_yolo(folder: str | Path, images: str | Path | None = None) -> DetectionSource:
    """A YOLO folder → DetectionSource. An image without a label file is an image without boxes."""
    folder = Path(folder)
    classes = _class_names(folder)
    image_dir = Path(images) if images is not None else folder / "images"
    files = sorted(p for p in image_dir.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise CnnkitError(f"{image_dir} holds no images; a YOLO folder has images/ and labels/")
    items = []
    for n, file in enumerate(files):
        width, height = image_size(file, str(folder))
        label_file = (folder / "labels" / file.relative_to(image_dir)).with_suffix(".txt")
        rows = _parse_labels(label_file) if label_file.is_file() else []
        boxes = [[(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
                 for _, (cx, cy, w, h) in rows]
        labels = [c if 0 <= c < len(classes) else -1 for c, _ in rows]
        unknown = {k: str(c) for k, (c, _) in enumerate(rows) if not 0 <= c < len(classes)}
        items.append(make_item(n + 1, file, width, height, boxes, labels, unknown=unknown))
    return DetectionSource(folder.name, classes, items)


def write_yolo(source: DetectionSource, folder: str | Path) -> Path:
    """Write FOLDER/images/, FOLDER/labels/*.txt and FOLDER/data.yaml (+ classes.txt). Returns FOLDER."""
    folder = Path(folder)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    names = export_images(source, folder / "images")
    for item, name in zip(source.items, names):
        lines = []
        for (x1, y1, x2, y2), label in zip(item.boxes.tolist(), item.labels.tolist()):
            cx, cy = (x1 + x2) / 2 / item.width, (y1 + y2) / 2 / item.height
            w, h = (x2 - x1) / item.width, (y2 - y1) / item.height
            lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        (folder / "labels" / f"{Path(name).stem}.txt").write_text("".join(lines), encoding="utf-8")
    data = {"path": ".", "train": "images", "val": "images", "nc": len(source.classes),
            "names": list(source.classes)}
    (folder / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (folder / "classes.txt").write_text("".join(f"{c}\n" for c in source.classes), encoding="utf-8")
    return folder
