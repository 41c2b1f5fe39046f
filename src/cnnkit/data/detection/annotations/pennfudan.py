"""Penn-Fudan pedestrians: Annotation/*.txt in the PASCAL v1.00 text format, PNGImages/, PedMasks/.

The text's corners are 1-based and inclusive ("Top left pixel co-ordinates : (1, 1)"), so (Xmin, Ymin) -
(Xmax, Ymax) becomes (Xmin - 1, Ymin - 1, Xmax, Ymax). Every object is one class, "person". With
boxes="masks" the boxes come from the instance masks instead (object k ↔ the k-th id of its mask).
Each object's instance mask is its id in PedMasks (object k ↔ id k, as the files number them): `source.masks(i)`.
"""
from __future__ import annotations

import re
from pathlib import Path

from cnnkit.data.detection.annotations.source import (
    DetectionSource,
    checked_size,
    is_file,
    make_item,
    masks_to_boxes,
    read_mask,
)
from cnnkit.errors import CnnkitError, shown

# numbers of at most 9 digits: a longer one is no pixel coordinate (and int() refuses 4300 digits)
FILENAME = re.compile(r'^Image filename\s*:\s*"([^"]+)"', re.M)
SIZE = re.compile(r"^Image size \(X x Y x C\)\s*:\s*([0-9]{1,9})\s*x\s*([0-9]{1,9})\b", re.M)
BOX = re.compile(r'^Bounding box for object ([0-9]+) "([^"]*)".*?:\s*\((-?[0-9]{1,9}),\s*(-?[0-9]{1,9})\)\s*-\s*'
                 r"\((-?[0-9]{1,9}),\s*(-?[0-9]{1,9})\)", re.M)
MASK = re.compile(r'^Pixel mask for object \d+ "[^"]*"\s*:\s*"([^"]+)"', re.M)


def is_pennfudan(folder: Path) -> bool:
    return (folder / "Annotation").is_dir() and (folder / "PNGImages").is_dir()


def _parse(file: Path, folder: Path) -> tuple[Path, int, int, list[list[float]], Path | None]:
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise CnnkitError(f"{file}: cannot read ({err.strerror})") from None
    name, size = FILENAME.search(text), SIZE.search(text)
    if name is None or size is None:
        raise CnnkitError(f"{file}: not a PASCAL v1.00 annotation (no 'Image filename' or 'Image size' line)")
    boxes = [[int(x1) - 1, int(y1) - 1, int(x2), int(y2)] for _, _, x1, y1, x2, y2 in BOX.findall(text)]
    declared = re.search(r"^Objects with ground truth\s*:\s*([0-9]{1,9})\b", text, re.M)
    if declared and int(declared.group(1)) != len(boxes):
        raise CnnkitError(f"{file}: declares {declared.group(1)} objects but has {len(boxes)} bounding box lines")
    image = folder / "PNGImages" / Path(name.group(1)).name
    if not is_file(image):
        raise CnnkitError(f"{file}: image {shown(image)} is listed but missing on disk")
    mask = MASK.search(text)
    mask_path = folder / "PedMasks" / Path(mask.group(1)).name if mask else None
    if mask_path is not None and not is_file(mask_path):
        mask_path = None
    width, height = checked_size(int(size.group(1)), int(size.group(2)), str(file))
    return image, width, height, boxes, mask_path


def read_pennfudan(folder: str | Path, boxes: str = "text") -> DetectionSource:
    """The Penn-Fudan folder → DetectionSource of one class, "person", with each item's mask_path."""
    folder = Path(folder)
    files = sorted((folder / "Annotation").glob("*.txt"))
    if not files:
        raise CnnkitError(f"{folder}/Annotation holds no .txt files")
    items = []
    for n, file in enumerate(files):
        image, width, height, text_boxes, mask_path = _parse(file, folder)
        segments = list(range(1, len(text_boxes) + 1)) if mask_path is not None else None  # object k ↔ id k + 1
        if boxes == "masks":
            if mask_path is None:
                raise CnnkitError(f"{file}: no instance mask on disk, so no boxes from masks")
            text_boxes, ids = masks_to_boxes(read_mask(mask_path))
            segments = [int(i) for i in ids]
        items.append(make_item(n + 1, image, width, height, text_boxes, [0] * len(text_boxes), mask_path=mask_path,
                               segments=segments))
    return DetectionSource("pennfudan", ["person"], items)
