"""`synthetic-shapes`: a seeded generator of circles, squares and triangles with exact boxes and masks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle")


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
    seed: int = 0

    def validate(self) -> None:
        if self.n < len(SHAPES) or self.size < 8:
            raise ValueError(f"need n >= 3 and size >= 8, got n={self.n}, size={self.size}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError("need 0 < min_scale <= max_scale <= 1")
        if self.colour not in ("random", "white", "class") or self.background not in ("dark", "random", "noise"):
            raise ValueError("colour is random|white|class; background is dark|random|noise")


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


def make_shapes(cfg: ShapesConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, 3, S, S) uint8, labels (N,), boxes (N, 4) as x1, y1, x2, y2 in pixels, masks (N, S, S) bool."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    s = cfg.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5  # pixel centres
    class_colours = np.array([[1.0, 0.3, 0.3], [0.3, 1.0, 0.3], [0.3, 0.5, 1.0]])
    labels = np.arange(cfg.n) % len(SHAPES)
    rng.shuffle(labels)
    images = np.empty((cfg.n, 3, s, s), dtype=np.uint8)
    boxes = np.empty((cfg.n, 4), dtype=np.float32)
    masks = np.empty((cfg.n, s, s), dtype=bool)
    for i, label in enumerate(labels):
        side = rng.uniform(cfg.min_scale, cfg.max_scale) * s
        cx, cy = rng.uniform(side / 2, s - side / 2, size=2)
        mask = _shape_mask(SHAPES[label], cx, cy, side, yy, xx)
        if cfg.background == "noise":
            canvas = rng.uniform(0, 0.5, size=(3, s, s))
        else:
            level = rng.uniform(0, 0.4) if cfg.background == "random" else 0.1
            canvas = np.full((3, s, s), level)
        colour = {"random": rng.uniform(0.5, 1.0, size=3), "white": np.ones(3), "class": class_colours[label]}
        canvas[:, mask] = colour[cfg.colour][:, None]
        canvas += rng.normal(0, cfg.noise, size=canvas.shape)
        images[i] = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        masks[i] = mask
    return images, labels, boxes, masks
