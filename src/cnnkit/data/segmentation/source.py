"""Semantic segmentation data: a `SegmentationSource` of (image, class-index mask) pairs from any layout.

    >>> source = open_segmentation_source("../shared/data/peanut")   # images/*.jpg + labels/*.png (colour)
    >>> source.classes
    ['soil', 'crop', 'weed']
    >>> image, mask = source.read(0)   # uint8 (3, 720, 960), int64 (720, 960) with values 0..2

What `open_segmentation_source(spec)` understands:

- a folder with ``images/`` and ``masks/`` (or ``labels/``); images and masks pair by file stem
  (``0001.jpg`` ↔ ``0001.png``, or ``0001_mask.png``). An optional ``palette.yaml`` names the classes::

      classes:
        - {name: soil, color: [0, 0, 0]}
        - {name: crop, color: [0, 255, 0]}
      ignore_index: 255          # optional (default 255): the "don't care" value of the targets
      ignore_color: [255, 255, 255]   # optional: colour masks' "don't care" colour

  Masks of PIL mode P, L, I, 1 are *index* masks (pixel value = class index; ignore_index = don't care;
  any other value above C - 1 is an error). RGB(A) masks are *colour* masks, mapped through the palette: each
  pixel takes the nearest palette colour when its largest channel difference is at most COLOUR_TOLERANCE
  (JPEG-damaged labels), else the file is refused, naming the colour. Without palette.yaml: index masks give
  classes class_0..class_K (K the largest value other than 255 seen in a sample of up to 256 masks; masks
  holding only 0 and 255 are read as binary background/foreground); colour masks holding only black, green
  and red get DEFAULT_PALETTE (soil, crop, weed: the Peanut data set's colour map), other colours need a
  palette.yaml. A palette.yaml holding only ``ignore_index: N`` (index masks whose void value is not 255, e.g.
  CamVid's 11) gives class_0..class_K the same way, K the largest value other than N; pixels equal to N count
  nowhere (without palette.yaml, N would be class_N).
- a folder with ``train/``, ``val/`` (or ``valid/``), ``test/`` sub-folders, each laid out as above:
  ``presplit`` keeps their indices; ``palette.yaml`` sits in the top folder (or in train/).
- a COCO JSON file: polygons and RLE through pycocotools.mask; class 0 is 'background', then the
  categories in order of id; where annotations overlap the later one wins. Images at the JSON's folder /
  file_name (or its images/ sub-folder).
- a Penn-Fudan folder (PNGImages/ + PedMasks/): classes background, person (instance ids > 0 → 1).
- ``synthetic-plants[:size=128,count=200,...]`` (cnnkit.data.segmentation.synthetic_plants).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.data.images import BadImage, is_image_file, oriented_size, read_image
from cnnkit.data.segmentation.base import ImageMask, SegmentationSource
from cnnkit.data.segmentation.masks import (
    COLOUR_MODES,
    COLOUR_TOLERANCE,
    IGNORE_INDEX,
    ColourMap,
    MaskDecoder,
    open_mask,
    pack_rgb,
    read_palette,
    unpack_rgb,
    voc_colormap,
)
from cnnkit.errors import CnnkitError

log = logging.getLogger("cnnkit")

DEFAULT_PALETTE = {"soil": (0, 0, 0), "crop": (0, 255, 0), "weed": (255, 0, 0)}  # Peanut's black/green/red
MASK_FOLDERS = ("masks", "labels")
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
INDEX_MODES = ("P", "L", "I", "I;16", "I;16B", "I;16L", "1")


def _size(path: Path, oriented: bool = False) -> tuple[int, int] | None:
    """(width, height) from the header (`oriented`: turned by the EXIF orientation, as read_image turns an image),
    or None when PIL cannot open the file."""
    try:
        with Image.open(path) as im:
            return oriented_size(im) if oriented else im.size
    except Exception:  # noqa: BLE001
        return None


def _pairs(images_dir: Path, masks_dir: Path,
           mask_suffixes: tuple[str, ...] = ("", "_mask")) -> list[tuple[Path, Path]]:
    """(image, mask) pairs by file stem; a missing mask, a size mismatch → CnnkitError; unreadable images are
    skipped with a warning."""
    images = sorted(p for p in images_dir.iterdir() if p.is_file() and is_image_file(p))
    if not images:
        raise CnnkitError(f"{images_dir} holds no image files")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.is_file() and is_image_file(p)}
    pairs, bad = [], []
    for image in images:
        mask = next((masks[image.stem + s] for s in mask_suffixes if image.stem + s in masks), None)
        if mask is None:
            raise CnnkitError(f"no mask for image {image.name} in {masks_dir} (masks pair with images by file "
                              f"stem, e.g. {image.stem}.png); add it or remove the image")
        size = _size(image, oriented=True)
        if size is None:
            bad.append(image.name)
            continue
        mask_size = _size(mask)
        if mask_size is None:
            raise CnnkitError(f"{mask}: cannot read the mask; fix or remove it and its image {image.name}")
        if mask_size != size:
            raise CnnkitError(f"{mask}: mask is {mask_size[0]}×{mask_size[1]} but its image {image.name} is "
                              f"{size[0]}×{size[1]} (width×height); they must match")
        pairs.append((image, mask))
    if bad:
        if len(bad) > 0.1 * len(images):
            raise CnnkitError(f"{len(bad)} of {len(images)} images in {images_dir} are unreadable: "
                              f"{', '.join(bad[:5])}")
        log.warning("skipping %d unreadable image(s) in %s: %s", len(bad), images_dir, ", ".join(bad[:5]))
    if not pairs:
        raise CnnkitError(f"{images_dir}: no readable images")
    return pairs


def _mask_dir(folder: Path) -> Path:
    for name in MASK_FOLDERS:
        if (folder / name).is_dir():
            return folder / name
    raise CnnkitError(f"{folder} has images/ but no masks/ or labels/ folder; put one mask per image there, "
                      "named by the image's stem")


def _sample(paths: list[Path], n: int = 256) -> list[Path]:
    if len(paths) <= n:
        return paths
    return [paths[int(j)] for j in np.linspace(0, len(paths) - 1, n)]


def _colours_in(path: Path) -> np.ndarray:
    with open_mask(path) as im:
        return np.unique(pack_rgb(np.asarray(im.convert("RGB"))))


def _values_in(path: Path) -> np.ndarray:
    with open_mask(path) as im:
        a = np.asarray(im)
    return np.unique(a[..., 0] if a.ndim == 3 else a)


def _decoder_for(folder: Path, masks: list[Path]) -> tuple[list[str], list[tuple[int, int, int]], int, MaskDecoder]:
    """Classes, overlay palette, ignore_index and the mask decoder for a folder's masks."""
    palette_file = next((f for f in (folder / "palette.yaml", folder / "train" / "palette.yaml") if f.is_file()),
                        None)
    palette = read_palette(palette_file) if palette_file else None
    with open_mask(masks[0]) as im:
        colour = im.mode in COLOUR_MODES
    if colour and palette is not None and palette.colours is None:
        raise CnnkitError(f"{palette_file}: the masks are colour images ({masks[0].name}); "
                          + ("give every class a color: [r, g, b]" if palette.classes else
                             "list the classes: [{name: ..., color: [r, g, b]}]"))
    if palette is not None and palette.classes is None:  # only ignore_index: classes class_0.. by mask value
        return _index_classes(masks, palette.ignore_index, palette_file)
    if palette is not None:
        ignore = palette.ignore_index
        colour_map = ColourMap(palette.colours, palette.classes, ignore, palette.ignore_colour) if colour else None
        colours = palette.colours or voc_colormap(len(palette.classes))
        return palette.classes, colours, ignore, MaskDecoder(palette.classes, ignore, colour_map)
    if colour:
        found = np.unique(np.concatenate([_colours_in(p) for p in _sample(masks, 8)]))
        default = ColourMap(list(DEFAULT_PALETTE.values()), list(DEFAULT_PALETTE), IGNORE_INDEX)
        rgb = np.stack([(found >> 16) & 255, (found >> 8) & 255, found & 255], axis=1)
        if (np.abs(rgb[:, None, :] - default.rgb[None]).max(axis=2).min(axis=1) <= COLOUR_TOLERANCE).all():
            return list(DEFAULT_PALETTE), list(DEFAULT_PALETTE.values()), IGNORE_INDEX, \
                MaskDecoder(list(DEFAULT_PALETTE), IGNORE_INDEX, default)
        if (rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all():
            colour = False  # grey RGB files: index masks saved as RGB
        else:
            shown = ", ".join(str(unpack_rgb(int(k))) for k in found[:6]) + (" ..." if len(found) > 6 else "")
            raise CnnkitError(f"{folder}: colour masks with colours {shown} but no palette.yaml; add palette.yaml "
                              "with classes: [{name: ..., color: [r, g, b]}]")
    values = np.unique(np.concatenate([_values_in(p) for p in _sample(masks)]))
    if set(values.tolist()) == {0, 255}:  # binary masks saved as 0 / 255: foreground, not "don't care"
        classes = ["background", "foreground"]
        return classes, voc_colormap(2), IGNORE_INDEX, MaskDecoder(classes, IGNORE_INDEX, binary255=True)
    return _index_classes(masks, IGNORE_INDEX, values=values)


def _index_classes(masks: list[Path], ignore: int, palette_file: Path | None = None, values: np.ndarray | None = None
                   ) -> tuple[list[str], list[tuple[int, int, int]], int, MaskDecoder]:
    """Index masks without class names: class_0..class_K, K the largest value other than `ignore` in a sample of
    the masks (values found later above K are refused by the decoder, naming the file)."""
    if values is None:
        values = np.unique(np.concatenate([_values_in(p) for p in _sample(masks)]))
    if palette_file is not None and (values > ignore).any():
        raise CnnkitError(f"{palette_file}: ignore_index {ignore} is below mask value {int(values.max())}; "
                          "ignore_index must be above every class value (or list the classes in palette.yaml)")
    top = int(values[values != ignore].max()) if (values != ignore).any() else 0
    classes = [f"class_{k}" for k in range(max(top + 1, 2))]
    return classes, voc_colormap(len(classes)), ignore, MaskDecoder(classes, ignore)


class FolderReader:
    """Item i of (image, mask) file pairs (a class, not a closure, so that DataLoader workers can pickle it)."""

    def __init__(self, pairs: list[tuple[Path, Path]], decode: MaskDecoder):
        self.pairs, self.decode = pairs, decode

    def __call__(self, i: int) -> ImageMask:
        image_path, mask_path = self.pairs[i]
        try:
            image = read_image(image_path, 3)  # uint8 (3, H, W)
        except BadImage as err:
            raise CnnkitError(f"{image_path}: cannot read the image ({err})") from None
        mask = self.decode(mask_path)  # int64 (H, W)
        if tuple(image.shape[1:]) != mask.shape:
            raise CnnkitError(f"{mask_path}: mask is {mask.shape[1]}×{mask.shape[0]} but its image is "
                              f"{image.shape[2]}×{image.shape[1]} (width×height); they must match")
        return image, mask


def from_folder(folder: Path) -> SegmentationSource:
    """images/ + masks/ (or labels/), or train/ val/ test/ sub-folders each so laid out."""
    splits = {SPLIT_FOLDERS[name]: folder / name for name in SPLIT_FOLDERS  # train, val, test in that order
              if (folder / name / "images").is_dir()}
    groups = list(splits.items()) if splits and not (folder / "images").is_dir() else [("", folder)]
    pairs, presplit = [], {}
    for split, sub in groups:
        if not (sub / "images").is_dir():
            raise CnnkitError(f"{sub}: expected an images/ folder with masks/ (or labels/) beside it")
        found = _pairs(sub / "images", _mask_dir(sub))
        if split:
            presplit[split] = np.arange(len(pairs), len(pairs) + len(found))
        pairs += found
    classes, colours, ignore, decode = _decoder_for(folder, [m for _, m in pairs])
    return SegmentationSource(folder.name, classes, list(colours), FolderReader(pairs, decode), len(pairs),
                              ignore, presplit, [p for p, _ in pairs])


def from_pennfudan(folder: Path) -> SegmentationSource:
    """Penn-Fudan: PNGImages/X.png ↔ PedMasks/X_mask.png (instance ids) → background / person."""
    pairs = _pairs(folder / "PNGImages", folder / "PedMasks")
    classes = ["background", "person"]
    decode = MaskDecoder(classes, IGNORE_INDEX, instances=True)
    return SegmentationSource("pennfudan", classes, [(0, 0, 0), (192, 128, 128)], FolderReader(pairs, decode),
                              len(pairs), IGNORE_INDEX, {}, [p for p, _ in pairs])


# -- COCO ----------------------------------------------------------------------------------------------------
def _coco_mask(segmentation, h: int, w: int, where: str) -> np.ndarray:
    """One annotation's segmentation (polygons, RLE or uncompressed RLE) → bool (H, W)."""
    from pycocotools import mask as mask_utils

    try:
        if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
            polygons = [p for p in segmentation if len(p) >= 6]
            if not polygons:
                return np.zeros((h, w), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, h, w)  # uncompressed RLE
        elif isinstance(segmentation, dict):
            counts = segmentation["counts"]
            rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
        else:
            raise TypeError(f"segmentation is a {type(segmentation).__name__}")
        mask = mask_utils.decode(rle)
    except (TypeError, ValueError, KeyError, IndexError) as err:
        raise CnnkitError(f"{where}: bad segmentation ({err}); write polygons [[x, y, ...]] or RLE "
                          "{size: [h, w], counts: ...}") from None
    if mask.shape[:2] != (h, w):
        raise CnnkitError(f"{where}: RLE size {list(mask.shape[:2])} differs from the image's [{h}, {w}]")
    return mask.astype(bool)


class CocoReader:
    """Item i of a COCO file: the image and its annotations painted in order (later ones win)."""

    def __init__(self, path: Path, files: list[Path], records: list[dict], by_image: dict, index: dict):
        self.path, self.files, self.records, self.by_image, self.index = path, files, records, by_image, index

    def __call__(self, i: int) -> ImageMask:
        path, index = self.path, self.index
        try:
            image = read_image(self.files[i], 3)
        except BadImage as err:
            raise CnnkitError(f"{self.files[i]}: cannot read the image ({err})") from None
        h, w = image.shape[1:]
        r = self.records[i]
        if ("height" in r and r["height"] != h) or ("width" in r and r["width"] != w):
            raise CnnkitError(f"{path}: image {r['file_name']} is {w}×{h} but the JSON says "
                              f"{r.get('width')}×{r.get('height')}")
        mask = np.zeros((h, w), dtype=np.int64)
        for n, a in self.by_image.get(r["id"], []):  # later annotations paint over earlier ones
            if a.get("segmentation") is not None:
                mask[_coco_mask(a["segmentation"], h, w, f"{path}: annotations[{n}]")] = index[a["category_id"]]
        return image, mask


def from_coco(path: Path) -> SegmentationSource:
    from cnnkit.data.detection.annotations.coco import _load_json, _records

    data = _load_json(path)
    categories = sorted(_records(data, "categories", path, ("id", "name")), key=lambda c: c["id"])
    index = {c["id"]: k + 1 for k, c in enumerate(categories)}  # 0 is background
    records = _records(data, "images", path, ("id", "file_name"))
    annotations = _records(data, "annotations", path, ("image_id", "category_id"))
    by_image: dict = {}
    for n, a in enumerate(annotations):
        if a["category_id"] not in index:
            raise CnnkitError(f"{path}: annotations[{n}] has category_id {a['category_id']!r}, which is not in "
                              "'categories'")
        by_image.setdefault(a["image_id"], []).append((n, a))
    ids = {r["id"] for r in records}
    orphans = [a["image_id"] for a in annotations if a["image_id"] not in ids]
    if orphans:
        raise CnnkitError(f"{path}: annotations name image_id {orphans[0]!r}, which is not in 'images'")
    files = []
    for r in records:
        file = next((f for f in (path.parent / r["file_name"], path.parent / "images" / r["file_name"])
                     if f.is_file()), None)
        if file is None:
            raise CnnkitError(f"{path}: image {r['file_name']} is listed but not found in {path.parent} or "
                              f"{path.parent / 'images'}")
        files.append(file)

    classes = ["background"] + [str(c["name"]) for c in categories]
    return SegmentationSource(path.stem, classes, voc_colormap(len(classes)),
                              CocoReader(path, files, records, by_image, index), len(records), IGNORE_INDEX,
                              {}, files)


# -- any spec ------------------------------------------------------------------------------------------------
def open_segmentation_source(spec: str) -> SegmentationSource:
    """SPEC → SegmentationSource: a folder (images/ + masks/ or labels/, train/val/test, Penn-Fudan), a COCO
    .json file, or 'synthetic-plants[:k=v,...]'."""
    name, _, options = spec.partition(":")
    if name == "synthetic-plants":
        from cnnkit.data.segmentation.synthetic_plants import synthetic_plants

        return synthetic_plants(options)
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".json":
        return from_coco(path)
    if path.is_dir():
        if (path / "PNGImages").is_dir() and (path / "PedMasks").is_dir():
            return from_pennfudan(path)
        if (path / "images").is_dir() or any((path / s / "images").is_dir() for s in SPLIT_FOLDERS):
            return from_folder(path)
        raise CnnkitError(f"{path}: expected images/ + masks/ (or labels/), train/ val/ test/ sub-folders so laid "
                          "out, or a Penn-Fudan folder (PNGImages/ + PedMasks/)")
    if path.exists():
        raise CnnkitError(f"segmentation data {spec!r} is a file but not a COCO .json; give a folder or a .json")
    from cnnkit.errors import did_you_mean

    hint = did_you_mean(name, ["synthetic-plants"]) if "/" not in spec and "." not in spec else ""
    raise CnnkitError(f"segmentation data not found: {spec!r} is neither a folder, a COCO .json nor a built-in"
                      + (hint or " (built-in: synthetic-plants)"))


def source_of(cfg) -> SegmentationSource:
    """The segmentation source that a run's config names."""
    return open_segmentation_source(cfg.data.source)
