"""The detection data model shared by every format: a `DetectionSource` of `DetectionItem`s.

Boxes are always (K, 4) float64 x1, y1, x2, y2 in absolute pixels, 0-based, with x2 and y2 exclusive, so that
x2 - x1 is the width, as COCO's x + w. Labels are class indices 0..C-1 (no background class).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnkit.data.images import BadImage, oriented_size, read_image
from cnnkit.errors import CnnkitError, brief, shown


@dataclass
class DetectionItem:
    """One image and its boxes."""

    image_id: int
    path: Path | None  # None for in-memory (synthetic) images
    width: int
    height: int
    boxes: np.ndarray  # (K, 4) float64 xyxy, absolute pixels, x2/y2 exclusive
    labels: np.ndarray  # (K,) int64 in 0..C-1; -1 while a class is unknown (see `unknown`)
    mask_path: Path | None = None  # instance mask PNG (0 = background, 1..n = instance id)
    iscrowd: np.ndarray | None = None  # (K,) int64: COCO iscrowd, VOC difficult; such boxes are ignored in scoring
    unknown: dict[int, str] = field(default_factory=dict)  # box index → class name as written, for labels == -1
    # instance masks, one per box (None: the source has none): an int, the object's id in `mask_path`'s PNG;
    # or a COCO segmentation (a list of polygons, or an RLE dict with list or string counts)
    segments: list | None = None

    def where(self) -> str:
        """The file that describes this item, for messages."""
        return str(self.path) if self.path is not None else f"image {self.image_id}"


@dataclass
class DetectionSource:
    """A detection data set: class names, items, and for synthetic data the pixels themselves."""

    name: str
    classes: list[str]
    items: list[DetectionItem]
    images: list[np.ndarray] | None = None  # in-memory uint8 (H, W, C) images, for synthetic data
    report: object | None = None  # the ValidationReport of the last `validate` (annotations.validate)

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> torch.Tensor:
        """Item i's pixels as uint8 (3, H, W) RGB."""
        if self.images is not None:
            img = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
            return img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]
        try:
            return read_image(self.items[i].path, 3)
        except BadImage as err:
            raise CnnkitError(f"{self.items[i].path}: cannot read the image ({err})") from None

    def read(self, i: int, masks: bool = False) -> tuple[torch.Tensor, dict]:
        """Item i as (uint8 (3, H, W) image, {"boxes": float32 (K, 4), "labels": int64 (K,)}); with `masks`,
        also "masks": uint8 (K, H, W), 1 inside object k (see `masks`)."""
        item = self.items[i]
        target = {"boxes": torch.as_tensor(item.boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.as_tensor(item.labels, dtype=torch.int64).reshape(-1)}
        image = self.image(i)
        if masks:
            target["masks"] = self.masks(i, tuple(image.shape[-2:]))
        return image, target

    @property
    def has_masks(self) -> bool:
        """Whether every item carries instance masks (COCO segmentation, Penn-Fudan PedMasks, synthetic-shapes)."""
        return bool(self.items) and all(item.segments is not None for item in self.items)

    def require_masks(self) -> None:
        """A one-line error unless every item has instance masks."""
        if not self.has_masks:
            missing = next(item for item in self.items if item.segments is None) if self.items else None
            where = f" ({missing.where()} has none)" if missing is not None else ""
            raise CnnkitError(f"{self.name} has no instance masks; use COCO segmentation (polygons or RLE), Penn-Fudan "
                              f"or synthetic-shapes for --task instance{where}")

    def masks(self, i: int, shape: tuple[int, int] | None = None) -> torch.Tensor:
        """Item i's instance masks, uint8 (K, H, W), one per box in box order (H, W: `shape`, else the item's)."""
        item = self.items[i]
        if item.segments is None:
            self.require_masks()
        h, w = shape if shape is not None else (item.height, item.width)
        out = np.zeros((len(item.segments), h, w), dtype=np.uint8)
        ids = None
        for k, segment in enumerate(item.segments):
            if isinstance(segment, (int, np.integer)):
                if ids is None:
                    ids = _id_map(item, h, w)
                out[k] = ids == segment
            else:
                out[k] = decode_segment(segment, h, w, item.where())
        return torch.from_numpy(out)

    @property
    def num_boxes(self) -> int:
        return sum(len(item.boxes) for item in self.items)


def make_item(image_id: int, path: Path | None, width: int, height: int, boxes, labels, **extra) -> DetectionItem:
    """A DetectionItem with its arrays in the documented dtypes and shapes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if extra.get("iscrowd") is not None:
        extra["iscrowd"] = np.asarray(extra["iscrowd"], dtype=np.int64).reshape(-1)
    return DetectionItem(image_id, path, int(width), int(height), boxes, labels, **extra)


def masks_to_boxes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance mask (H, W) of ids (0 = background; ids may skip numbers) → boxes (n, 4) float64 xyxy with
    x2/y2 exclusive, and the ids (n,) int64 in increasing order. Uses torchvision.ops.masks_to_boxes."""
    from torchvision.ops import masks_to_boxes as tv_masks_to_boxes

    mask = np.asarray(mask)
    if mask.ndim == 3:  # an RGB(A) PNG of ids: the first channel holds them
        mask = mask[..., 0]
    ids = np.unique(mask)
    ids = ids[ids != 0].astype(np.int64)
    if len(ids) == 0:
        return np.zeros((0, 4), dtype=np.float64), ids
    binary = torch.from_numpy(mask[None, :, :] == ids[:, None, None])
    boxes = tv_masks_to_boxes(binary).double().numpy()  # x2, y2: the last pixel (inclusive)
    boxes[:, 2:] += 1.0
    return boxes, ids


def _id_map(item: DetectionItem, h: int, w: int) -> np.ndarray:
    """The (H, W) instance ids of item's mask PNG (an RGB(A) PNG of ids: its first channel)."""
    if item.mask_path is None:
        raise CnnkitError(f"{item.where()}: its objects name instance ids but it has no mask file")
    ids = read_mask(item.mask_path)
    ids = ids[..., 0] if ids.ndim == 3 else ids
    if ids.shape != (h, w):
        raise CnnkitError(f"{item.mask_path}: the mask is {ids.shape[1]}×{ids.shape[0]} but its image is {w}×{h}")
    return ids


def decode_segment(segment, h: int, w: int, where: str = "an annotation") -> np.ndarray:
    """A COCO segmentation (polygons [[x, y, ...], ...], or an RLE dict with list or string counts) →
    uint8 (H, W) binary mask, through pycocotools.mask, after `_checked_segment` (pycocotools checks no bounds)."""
    from pycocotools import mask as mask_utils

    checked = _checked_segment(segment, h, w, where)
    if checked is None:  # no polygon of three points
        return np.zeros((h, w), dtype=np.uint8)
    try:
        if isinstance(checked, dict):
            rle = mask_utils.frPyObjects(checked, h, w) if isinstance(checked["counts"], list) else checked
        else:
            rle = mask_utils.merge(mask_utils.frPyObjects(checked, h, w))
        mask = mask_utils.decode(rle)
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        raise CnnkitError(f"{where}: cannot decode a segmentation ({err}); give polygons or RLE") from None
    if mask.shape != (h, w):
        raise CnnkitError(f"{where}: a segmentation is {mask.shape[1]}×{mask.shape[0]} but the image is {w}×{h}")
    return mask.astype(np.uint8)


def _is_whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _checked_segment(segment, h: int, w: int, where: str) -> dict | list | None:
    """The segmentation in the form pycocotools reads, once nothing in it can make pycocotools' C code write past
    its buffer (RLE counts that do not add up to H·W, a cut-short string), allocate gigabytes (a polygon point
    1e9 pixels away) or read garbage (nan); a one-line CnnkitError otherwise. None: no polygon of three points."""
    if isinstance(segment, dict):
        size, counts = segment.get("size"), segment.get("counts")
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(map(_is_whole, size))):
            raise CnnkitError(f"{where}: an RLE segmentation has size {brief(size)}; expected [height, width]")
        if list(size) != [h, w]:
            raise CnnkitError(f"{where}: a segmentation is {size[1]}×{size[0]} but the image is {w}×{h}")
        if isinstance(counts, (str, bytes)):  # compressed: a string in JSON, bytes from pycocotools' encode
            values = _compressed_counts(counts.encode("utf-8") if isinstance(counts, str) else counts)
        else:
            values = counts if isinstance(counts, list) and all(_is_whole(c) and 0 <= c < 2**32 for c in counts) \
                else None
        if values is None or sum(values) != h * w:
            raise CnnkitError(f"{where}: an RLE segmentation's counts {brief(counts)} are not run lengths that add "
                              f"up to its {w}×{h} pixels; give polygons or RLE")
        return {"size": [h, w], "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}
    if not (isinstance(segment, list) and segment):
        raise CnnkitError(f"{where}: cannot decode a segmentation (not polygons or RLE: {brief(segment)}); give "
                          "polygons [[x1, y1, x2, y2, ...], ...] or RLE {size, counts}")
    for polygon in segment:
        if not (isinstance(polygon, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and -limit <= v <= 2 * limit
                for v, limit in zip(polygon, [w, h] * len(polygon)))):
            raise CnnkitError(f"{where}: a polygon is {brief(polygon)}; write [x1, y1, x2, y2, ...], numbers within "
                              "the image (or near it)")
    return [p for p in segment if len(p) >= 6] or None  # a polygon needs three points


def _compressed_counts(text: bytes) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string, read as pycocotools' rleFrString reads them; None when
    the string is not one that its encoder writes (characters '0'..'o', at most 7 a number, no cut-short end)."""
    counts: list[int] = []
    x = k = 0
    for code in text:
        c = code - 48
        if not 0 <= c < 64:
            return None
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            if k >= 7:
                return None
            continue
        if c & 0x10:
            x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if not 0 <= x < 2**32:
            return None
        counts.append(x)
        x = k = 0
    return counts if k == 0 else None


def read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as err:  # noqa: BLE001  (PIL raises many types for broken files)
        raise CnnkitError(f"{shown(path)}: cannot read the instance mask ({first_line(err)})") from None


MAX_SIDE = 1 << 16  # pixels: a width or height an annotation file may give (larger is a typo or a hostile file)


def is_file(path: Path) -> bool:
    """Path.is_file that is False, not an OSError, for a name too long for the file system (a written file name)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def checked_size(width: object, height: object, where: str) -> tuple[int, int]:
    """An annotation's (width, height) as ints: whole numbers (500.0 allowed) in 1..MAX_SIDE; else a one-line
    CnnkitError naming `where`."""
    sides = []
    for value in (width, height):
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole or not 1 <= value <= MAX_SIDE:
            raise CnnkitError(f"{where}: image size {brief(width)}×{brief(height)}; width and height are whole "
                              f"numbers of pixels, 1 to {MAX_SIDE}")
        sides.append(int(value))
    return sides[0], sides[1]


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (PIL's span several), or its type when it has none."""
    return (str(err).splitlines() or [type(err).__name__])[0]


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    if not is_file(path):
        raise CnnkitError(f"{where}: image {shown(path)} is listed but missing on disk; fix the path or give --images "
                          "DIR")
    try:
        with Image.open(path) as im:
            return oriented_size(im)  # turned as read_image turns the pixels (YOLO's boxes are scaled by it)
    except Exception as err:  # noqa: BLE001
        raise CnnkitError(f"{where}: cannot read image {shown(path)} ({first_line(err)})") from None


def export_images(source: DetectionSource, folder: Path) -> list[str]:
    """Put every image of `source` into `folder` (hard link, else copy; in-memory images saved as PNG) and
    return the file names, one per item, unique within the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    names, taken = [], set()
    for i, item in enumerate(source.items):
        name = item.path.name if item.path is not None else f"{item.image_id:06d}.png"
        if name in taken:  # the same file name from two sub-folders
            name = f"{item.image_id}_{name}"
        taken.add(name)
        names.append(name)
        dst = folder / name
        if item.path is None:
            Image.fromarray(np.ascontiguousarray(source.images[i])).save(dst)
            continue
        if dst.exists() and dst.resolve() == item.path.resolve():
            continue
        dst.unlink(missing_ok=True)
        try:
            os.link(item.path, dst)
        except OSError:
            shutil.copy2(item.path, dst)
    return names
