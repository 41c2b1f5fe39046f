"""`synthetic-shapes`: a seeded generator of circles, squares and triangles with exact boxes and masks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle")
CLASS_COLOURS = np.array([[1.0, 0.3, 0.3], [0.3, 1.0, 0.3], [0.3, 0.5, 1.0]])  # colour='class'


@dataclass
class ShapesConfig:
    """Everything the user controls; the same config and seed give the same images, bit for bit."""

    n: int = 600  # number of images (one shape each, classes balanced)
    size: int = 32  # image side in pixels
    min_scale: float = 0.3  # shape side (or diameter) as a fraction of the image side
    max_scale: float = 0.7
    colour: str = "random"  # 'random' (any hue), 'white', or 'class' (one fixed colour per class)
    background: str = "dark"  # 'dark', 'random' (uniform random grey) or 'noise' (pixel noise)
    noise: float = 0.05  # std of Gaussian pixel noise, in [0, 1] units
    count: int = 1  # up to this many shapes per image (1..count, kinds drawn at random; needs target=labels)
    target: str = "auto"  # class (one shape) | labels (multilabel: kinds present) | geometry (x, y, size) | auto
    seed: int = 0

    @property
    def kind(self) -> str:
        return self.target if self.target != "auto" else ("class" if self.count == 1 else "labels")

    def validate(self) -> None:
        if self.n < len(SHAPES) or self.size < 8:
            raise ValueError(f"need n >= 3 and size >= 8, got n={self.n}, size={self.size}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError("need 0 < min_scale <= max_scale <= 1")
        if self.colour not in ("random", "white", "class") or self.background not in ("dark", "random", "noise"):
            raise ValueError("colour is random|white|class; background is dark|random|noise")
        if self.target not in ("auto", "class", "labels", "geometry") or self.count < 1:
            raise ValueError("target is class|labels|geometry and count >= 1")
        if self.count > 1 and self.kind != "labels":
            raise ValueError(f"count={self.count} puts several shapes in an image: use target=labels")


def _shape_mask(kind: str, cx: float, cy: float, side: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of one shape centred at (cx, cy) with the given side or diameter."""
    r = side / 2
    if kind == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if kind == "square":
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    # upright isosceles triangle: apex at top centre, base at the bottom
    top, bottom = cy - r, cy + r
    t = (yy - top) / max(side, 1e-6)  # 0 at apex → 1 at base
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= t * r)


def _canvas(cfg: ShapesConfig, rng: np.random.Generator) -> np.ndarray:
    s = cfg.size
    if cfg.background == "noise":
        return rng.uniform(0, 0.5, size=(3, s, s))
    level = rng.uniform(0, 0.4) if cfg.background == "random" else 0.1
    return np.full((3, s, s), level)


def _colour(cfg: ShapesConfig, rng: np.random.Generator, label: int) -> np.ndarray:
    return {"random": lambda: rng.uniform(0.5, 1.0, size=3), "white": lambda: np.ones(3),
            "class": lambda: CLASS_COLOURS[label]}[cfg.colour]()


def make_multi_shapes(cfg: ShapesConfig, masks: bool = False) -> tuple:
    """Images with 1..count shapes each, placed without overlap where 50 tries allow: images (N, 3, S, S) uint8,
    multi-hot kinds present (N, 3) float32, and per image its boxes (m, 4) x1, y1, x2, y2 and kinds (m,).
    With `masks`, a fifth element: per image its instance-id map (S, S) uint8 (shape k of the image is id k + 1,
    0 the background); the images are the same either way."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    s = cfg.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    images = np.empty((cfg.n, 3, s, s), dtype=np.uint8)
    present = np.zeros((cfg.n, len(SHAPES)), dtype=np.float32)
    boxes, kinds, id_maps = [], [], []
    for i in range(cfg.n):
        canvas, taken = _canvas(cfg, rng), np.zeros((s, s), dtype=bool)
        ids = np.zeros((s, s), dtype=np.uint8)
        image_boxes, image_kinds = [], []
        for _ in range(int(rng.integers(1, cfg.count + 1))):
            label = int(rng.integers(len(SHAPES)))
            for _try in range(50):
                side = rng.uniform(cfg.min_scale, cfg.max_scale) * s
                cx, cy = rng.uniform(side / 2, s - side / 2, size=2)
                mask = _shape_mask(SHAPES[label], cx, cy, side, yy, xx)
                if not (mask & taken).any():
                    break
            else:
                continue  # no free room for this shape
            taken |= mask
            ids[mask] = len(image_boxes) + 1
            canvas[:, mask] = _colour(cfg, rng, label)[:, None]
            ys, xs = np.nonzero(mask)
            image_boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            image_kinds.append(label)
            present[i, label] = 1.0
        canvas += rng.normal(0, cfg.noise, size=canvas.shape)
        images[i] = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
        boxes.append(np.asarray(image_boxes, dtype=np.float32).reshape(-1, 4))
        kinds.append(np.asarray(image_kinds, dtype=np.int64))
        id_maps.append(ids)
    return (images, present, boxes, kinds, id_maps) if masks else (images, present, boxes, kinds)


def make_shapes(cfg: ShapesConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, 3, S, S) uint8, labels (N,), boxes (N, 4) as x1, y1, x2, y2 in pixels, masks (N, S, S) bool."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    s = cfg.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5  # pixel centres
    labels = np.arange(cfg.n) % len(SHAPES)
    rng.shuffle(labels)
    images = np.empty((cfg.n, 3, s, s), dtype=np.uint8)
    boxes = np.empty((cfg.n, 4), dtype=np.float32)
    masks = np.empty((cfg.n, s, s), dtype=bool)
    for i, label in enumerate(labels):
        side = rng.uniform(cfg.min_scale, cfg.max_scale) * s
        cx, cy = rng.uniform(side / 2, s - side / 2, size=2)
        mask = _shape_mask(SHAPES[label], cx, cy, side, yy, xx)
        canvas = _canvas(cfg, rng)
        colour = {"random": rng.uniform(0.5, 1.0, size=3), "white": np.ones(3), "class": CLASS_COLOURS[label]}
        canvas[:, mask] = colour[cfg.colour][:, None]
        canvas += rng.normal(0, cfg.noise, size=canvas.shape)
        images[i] = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        masks[i] = mask
    return images, labels, boxes, masks
