"""Label masks as class indices: palette.yaml, colour masks mapped through a palette (vectorised, with a
tolerance for JPEG-damaged colours), index masks checked against the classes, and PASCAL VOC's colour map.

    palette = read_palette(Path("data/palette.yaml"))       # classes, colours, ignore_index, ignore_colour
    # a palette.yaml holding only `ignore_index: N` gives classes None: found by scanning the (index) masks
    decode = MaskDecoder(palette.classes, 255, ColourMap(palette.colours, palette.classes, 255))
    mask = decode(Path("data/masks/0001.png"))              # int64 (H, W): 0..C-1 or 255
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.config import load_yaml
from cnnkit.errors import CnnkitError, brief

IGNORE_INDEX = 255
COLOUR_TOLERANCE = 30  # max |channel difference| for a colour-mask pixel to snap to the nearest palette colour
COLOUR_MODES = ("RGB", "RGBA")


def voc_colormap(n: int) -> list[tuple[int, int, int]]:
    """PASCAL VOC's colour map (bits of the class index spread over R, G, B): distinct overlay colours."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


# -- palette.yaml --------------------------------------------------------------------------------------------
@dataclass
class Palette:
    classes: list[str] | None  # None: only ignore_index given; the classes come from the index masks' values
    colours: list[tuple[int, int, int]] | None  # None: index masks only
    ignore_index: int = IGNORE_INDEX
    ignore_colour: tuple[int, int, int] | None = None


def _colour(value, file: Path, what: str) -> tuple[int, int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        raise CnnkitError(f"{file}: {what} is {brief(value)}; write a colour as [r, g, b] with integers 0..255")
    return tuple(int(v) for v in value)


def read_palette(file: Path) -> Palette:
    """palette.yaml → Palette; any mistake is a one-line CnnkitError naming the file."""
    data = load_yaml(file, hint="; expected 'classes: [{name: ..., color: [r, g, b]}]'")
    if isinstance(data, dict) and "classes" not in data and "ignore_index" in data \
            and not {"ignore_color", "ignore_colour"} & set(data):
        # index masks whose void value is not 255 (CamVid's 11): classes class_0.. found by scanning the masks
        _check_keys(data, file)
        ignore = data["ignore_index"]
        if not isinstance(ignore, int) or isinstance(ignore, bool) or ignore < 1:
            raise CnnkitError(f"{file}: ignore_index {brief(ignore)} must be a positive integer above every class "
                              "value of the masks, e.g. 255")
        return Palette(None, None, ignore, None)
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or not classes:
        raise CnnkitError(f"{file}: needs a non-empty 'classes' list of {{name: ..., color: [r, g, b]}} (or, "
                          "for index masks, only 'ignore_index: N' to name the classes class_0.. by value)")
    names, colours = [], []
    for n, c in enumerate(classes):
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, dict) or not isinstance(c.get("name"), (str, int)):
            raise CnnkitError(f"{file}: classes[{n}] is {brief(c)}; write {{name: ..., color: [r, g, b]}}")
        names.append(str(c["name"]))
        colour = c.get("color", c.get("colour"))
        colours.append(None if colour is None else _colour(colour, file, f"the colour of class {c['name']!r}"))
    if len(set(names)) != len(names):
        raise CnnkitError(f"{file}: class names repeat ({brief(names)}); give each class one entry")
    if any(c is None for c in colours) and any(c is not None for c in colours):
        raise CnnkitError(f"{file}: give every class a color, or none (index masks)")
    given = [c for c in colours if c is not None]
    if len(set(given)) != len(given):
        raise CnnkitError(f"{file}: two classes share a colour; give each class its own colour")
    ignore = data.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or ignore < len(names):
        raise CnnkitError(f"{file}: ignore_index {brief(ignore)} must be an integer >= the number of classes "
                          f"({len(names)}), e.g. 255")
    raw_ignore = data.get("ignore_color", data.get("ignore_colour"))
    ignore_colour = None if raw_ignore is None else _colour(raw_ignore, file, "ignore_color")
    _check_keys(data, file)
    return Palette(names, colours if given else None, ignore, ignore_colour)


def _check_keys(data: dict, file: Path) -> None:
    unknown = set(data) - {"classes", "ignore_index", "ignore_color", "ignore_colour"}
    if unknown:
        keys = ", ".join(sorted(map(brief, unknown)))
        raise CnnkitError(f"{file}: unknown key(s) [{keys}]; palette.yaml holds classes, ignore_index, ignore_color")


# -- decoding masks ------------------------------------------------------------------------------------------
def open_mask(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except Exception as err:  # noqa: BLE001  (PIL raises many types for broken files)
        raise CnnkitError(f"{path}: cannot read the mask ({(str(err).splitlines() or [type(err).__name__])[0]})") \
            from None


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) → int32 (...) keys r << 16 | g << 8 | b."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


class ColourMap:
    """Colour → class index, vectorised: pack RGB into one int32 key, look it up in a 2**24-entry table (sorted
    keys + searchsorted beyond 254 colours), and snap the few non-exact colours to the nearest palette colour
    within COLOUR_TOLERANCE (largest channel difference); farther ones are an error naming colour and file."""

    def __init__(self, colours: list[tuple[int, int, int]], classes: list[str], ignore_index: int,
                 ignore_colour: tuple[int, int, int] | None = None, tolerance: int = COLOUR_TOLERANCE):
        entries = list(zip(colours, range(len(colours))))
        if ignore_colour is not None:
            entries.append((ignore_colour, ignore_index))
        self.names = list(classes) + (["ignore_color"] if ignore_colour is not None else [])
        keys = np.array([pack_rgb(np.array(c, dtype=np.uint8)) for c, _ in entries], dtype=np.int32)
        order = np.argsort(keys)
        self.keys, self.values = keys[order], np.array([v for _, v in entries], dtype=np.int64)[order]
        self.rgb = np.array([c for c, _ in entries], dtype=np.int32)[order]  # (K, 3)
        self.names = [self.names[j] for j in order]
        self.tolerance = tolerance
        self.lut = None
        if len(self.keys) < 255:
            self.lut = np.full(1 << 24, 255, dtype=np.uint8)
            self.lut[self.keys] = np.arange(len(self.keys), dtype=np.uint8)

    def __call__(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        key = pack_rgb(rgb[..., :3]).ravel()  # (H*W,) int32
        if self.lut is not None:  # 2**24-entry table: colour → entry (255 = none), ~5 ms for 960×720
            entry = np.take(self.lut, key)
            inexact = entry == 255
            out = np.take(self.values, np.minimum(entry, len(self.values) - 1))
        else:
            pos = np.searchsorted(self.keys, key).clip(0, len(self.keys) - 1)
            out = self.values[pos]
            inexact = self.keys[pos] != key
        if inexact.any():
            odd, inverse = np.unique(key[inexact], return_inverse=True)
            odd_rgb = np.stack([(odd >> 16) & 255, (odd >> 8) & 255, odd & 255], axis=1)  # (U, 3)
            dist = np.abs(odd_rgb[:, None, :] - self.rgb[None, :, :]).max(axis=2)  # (U, K)
            nearest, best = dist.argmin(axis=1), dist.min(axis=1)
            if (best > self.tolerance).any():
                j = int(np.argmax(best))
                count = int(((inverse == j)).sum())
                near = int(nearest[j])
                raise CnnkitError(
                    f"{path}: colour {unpack_rgb(int(odd[j]))} ({count} pixels) is not in the palette (nearest: "
                    f"{self.names[near]} {tuple(self.rgb[near].tolist())}, off by {int(best[j])} > "
                    f"{self.tolerance}); add it to palette.yaml's classes or set ignore_color")
            out[inexact] = self.values[nearest][inverse]
        return out.reshape(rgb.shape[:2])


class MaskDecoder:
    """Reads one mask file as int64 (H, W) class indices, for index or colour masks."""

    def __init__(self, classes: list[str], ignore_index: int, colour_map: ColourMap | None = None,
                 binary255: bool = False, instances: bool = False):
        self.num_classes, self.ignore_index = len(classes), ignore_index
        self.colour_map, self.binary255, self.instances = colour_map, binary255, instances

    def __call__(self, path: Path) -> np.ndarray:
        with open_mask(path) as im:
            mode = im.mode
            if self.colour_map is not None:
                if mode not in COLOUR_MODES:
                    im = im.convert("RGB")
                return self.colour_map(np.asarray(im), path)
            a = np.asarray(im)
        if a.ndim == 3:  # an RGB file in a folder of index masks: fine when grey (R = G = B)
            if not ((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()):
                raise CnnkitError(f"{path}: a colour mask ({mode}) among index masks; save it as an index PNG "
                                  "(mode L or P) or give every class a color in palette.yaml")
            a = a[..., 0]
        a = a.astype(np.int64)
        if self.instances:
            return (a > 0).astype(np.int64)
        if self.binary255:
            return np.where(a == 255, 1, a)
        bad = (a >= self.num_classes) & (a != self.ignore_index)
        if bad.any():
            value = int(a[bad].max())
            raise CnnkitError(f"{path}: mask value {value} is not a class (0..{self.num_classes - 1}) nor "
                              f"ignore_index {self.ignore_index}; list the classes in palette.yaml")
        return a
