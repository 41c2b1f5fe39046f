"""Batched augmentation: a whole uint8 batch (N, C, S, S), on whatever device it is, to the normalised float
model input, with random parameters drawn per sample from torch's global RNG (the Trainer seeds it per epoch).

torchvision's v2 transforms draw one set of parameters per call: a batch passed through them gets one crop, one
flip and one angle for all its images. Per-sample parameters therefore need this module. Each knob of
`transforms.Augment` draws from the distribution of the v2 transform that `transforms.augment_ops` uses:
RandomCrop(padding, padding_mode='reflect'), RandomResizedCrop(scale=(crop_scale, 1), ratio=(3/4, 4/3)),
RandomHorizontalFlip / RandomVerticalFlip, RandomAffine (resampled bilinearly here, where v2 uses nearest),
ColorJitter (the three adjustments in a random order per sample) and RandomErasing(value=0, after normalising).

The geometry of a sample (crop, flips, rotation, scale, translation) is one 3×3 matrix from output pixels to
input pixels, in continuous coordinates (the image spans [0, S], pixel i's centre is at i + 0.5). Images are
resampled once with affine_grid + grid_sample (bilinear, zeros outside; the 'pad' crop first reflect-pads the
batch as v2 does); masks go the same way with nearest and an ignore index outside, boxes through their
corners. When a batch's geometry is whole-pixel shifts and flips only (the 'pad' crop, flips), it takes an
exact path instead: two gathers of the uint8 pixels.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnkit.data.transforms import Augment, Whiten
from cnnkit.errors import CnnkitError

CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect ratios
ERASE_SCALE, ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)  # RandomErasing's defaults
TRIES = 10  # attempts at a crop or an erased rectangle that fits, as torchvision makes


@dataclass
class Params:
    """One batch's random draws, a row per sample. Tests build them by hand to fix every knob."""

    box: torch.Tensor  # (N, 4) float64 crop window x0, y0, w, h in input pixels (the 'pad' crop may leave the image)
    hflip: torch.Tensor  # (N,) bool
    vflip: torch.Tensor  # (N,) bool
    angle: torch.Tensor  # (N,) float64 degrees, as v2.functional.affine's `angle`
    scale: torch.Tensor  # (N,) float64 zoom
    shift: torch.Tensor  # (N, 2) float64 tx, ty in pixels (whole pixels, as RandomAffine rounds them)
    jitter: torch.Tensor  # (N, 3) float32 brightness, contrast, saturation factors (1: unchanged)
    order: torch.Tensor  # (N, 3) int64 the order of the three adjustments (a permutation of 0, 1, 2)
    erase: torch.Tensor  # (N, 4) int64 top, left, h, w of the erased rectangle (h = 0: nothing erased)

    @staticmethod
    def identity(n: int, size: int) -> Params:
        """No change at all: the seam's starting point."""
        box = torch.tensor([0.0, 0.0, size, size], dtype=torch.float64).repeat(n, 1)
        return Params(box, torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool),
                      torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64),
                      torch.zeros(n, 2, dtype=torch.float64), torch.ones(n, 3), torch.arange(3).repeat(n, 1),
                      torch.zeros(n, 4, dtype=torch.int64))


def _fitting_rects(n: int, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                   strict: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sides of the first of TRIES random rectangles (area fraction in `scale`, log-uniform aspect
    ratio) that fits a size × size image, as torchvision's get_params draw them; `ok` (N,) False when none did.
    Returns round(√(area·r)), round(√(area/r)), ok; `strict`: sides must be < size (RandomErasing), else ≤."""
    area = size * size * torch.empty(n, TRIES, dtype=torch.float64).uniform_(*scale)
    log_r = torch.empty(n, TRIES, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    a = torch.round(torch.sqrt(area * torch.exp(log_r)))  # (N, TRIES)
    b = torch.round(torch.sqrt(area / torch.exp(log_r)))
    fits = (a < size) & (b < size) if strict else (a > 0) & (b > 0) & (a <= size) & (b <= size)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # (N, 1) index of the first fit (0 when none)
    return a.gather(1, first)[:, 0], b.gather(1, first)[:, 0], fits.any(dim=1)


def _positions(n: int, room: torch.Tensor) -> torch.Tensor:
    """Uniform whole offsets in [0, room], per sample: (N,) float64."""
    return torch.floor(torch.rand(n, dtype=torch.float64) * (room + 1)).clamp_max(room)


def _matrix(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, e: torch.Tensor,
            f: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) float64 rows [a b c; d e f; 0 0 1]."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], dim=1).view(-1, 3, 3)


def geometry(p: Params, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward, inverse): (N, 3, 3) float64 maps from input to output pixels and back, composed of the crop,
    the flips and the affine (about the image centre) in v2's order: crop → hflip → vflip → affine."""
    s = float(size)
    x0, y0, w, h = p.box.unbind(1)
    zero, one = torch.zeros_like(x0), torch.ones_like(x0)
    crop = _matrix(s / w, zero, -x0 * s / w, zero, s / h, -y0 * s / h)
    crop_inv = _matrix(w / s, zero, x0, zero, h / s, y0)
    fx, fy = torch.where(p.hflip, -one, one), torch.where(p.vflip, -one, one)
    flip = _matrix(fx, zero, torch.where(p.hflip, s * one, zero), zero, fy, torch.where(p.vflip, s * one, zero))
    rot = torch.deg2rad(p.angle)
    cos, sin, k, c = torch.cos(rot), torch.sin(rot), p.scale, s / 2
    tx, ty = p.shift.unbind(1)
    affine = _matrix(k * cos, -k * sin, c + tx - k * (cos - sin) * c, k * sin, k * cos, c + ty - k * (sin + cos) * c)
    ix, iy = c + tx, c + ty  # inverse: p = C + R^T (q - C - T) / k
    affine_inv = _matrix(cos / k, sin / k, c - (cos * ix + sin * iy) / k,
                         -sin / k, cos / k, c - (-sin * ix + cos * iy) / k)
    return affine @ flip @ crop, crop_inv @ flip @ affine_inv


class BatchAugment:
    """`BatchAugment(augment, size, channels, mean, std)(images)`: (N, C, S, S) uint8 → (N, C, S, S) float, on the
    images' device. `sample(n)` draws a batch's Params; `apply`, `masks` and `boxes` use the same Params, so a
    segmentation or detection batch moves together. `augment` None: only the conversion and normalisation."""

    def __init__(self, augment: Augment | None, size: int, channels: int, mean: Sequence[float],
                 std: Sequence[float], whiten: bool = False):
        self.aug = augment or Augment()
        if self.aug.crop not in ("none", "pad", "resize"):
            raise CnnkitError(f"crop must be none, pad or resize, got {self.aug.crop!r}")
        self.size, self.channels, self.whiten = size, channels, whiten
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.pad = max(1, round(self.aug.crop_padding * size)) if self.aug.crop == "pad" else 0
        a = self.aug
        self.moves = a.crop != "none" or a.hflip > 0 or a.vflip > 0 or a.rotation > 0 or a.scale > 0 or a.translate > 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply(images, self.sample(len(images)))

    # -- drawing ----------------------------------------------------------------------------------
    def sample(self, n: int) -> Params:
        """Per-sample parameters from torch's global (CPU) generator, whatever the device."""
        a, s, p = self.aug, self.size, Params.identity(n, self.size)
        if a.crop == "pad":
            p.box[:, :2] = torch.randint(0, 2 * self.pad + 1, (n, 2), dtype=torch.float64) - self.pad
        elif a.crop == "resize":
            w, h, ok = _fitting_rects(n, s, (a.crop_scale, 1.0), CROP_RATIO, strict=False)
            w, h = torch.where(ok, w, float(s)), torch.where(ok, h, float(s))  # else the whole (square) image
            p.box = torch.stack([_positions(n, s - w), _positions(n, s - h), w, h], dim=1)
        p.hflip = torch.rand(n) < a.hflip if a.hflip > 0 else p.hflip
        p.vflip = torch.rand(n) < a.vflip if a.vflip > 0 else p.vflip
        if a.rotation > 0:
            p.angle = torch.empty(n, dtype=torch.float64).uniform_(-a.rotation, a.rotation)
        if a.translate > 0:
            p.shift = torch.round(torch.empty(n, 2, dtype=torch.float64).uniform_(-a.translate * s, a.translate * s))
        if a.scale > 0:
            p.scale = torch.empty(n, dtype=torch.float64).uniform_(1 - a.scale, 1 + a.scale)
        if a.jitter > 0:
            p.jitter = torch.empty(n, 3).uniform_(max(0.0, 1 - a.jitter), 1 + a.jitter)
            if self.channels != 3:
                p.jitter[:, 2] = 1.0  # no saturation for grey images
            p.order = torch.rand(n, 3).argsort(dim=1)
        if a.erasing > 0:
            p.erase = self._sample_erase(n)
        return p

    def _sample_erase(self, n: int) -> torch.Tensor:
        s = self.size
        h, w, ok = _fitting_rects(n, s, ERASE_SCALE, ERASE_RATIO, strict=True)
        ok &= torch.rand(n) < self.aug.erasing
        top, left = _positions(n, s - h), _positions(n, s - w)
        return torch.stack([top, left, h * ok, w * ok], dim=1).to(torch.int64)

    # -- applying ---------------------------------------------------------------------------------
    def apply(self, images: torch.Tensor, p: Params) -> torch.Tensor:
        """(N, C, S, S) uint8 → the model's (N, C, S, S) float32 input, with the draws `p`."""
        n, c, h, w = images.shape
        if (h, w) != (self.size, self.size) or c != self.channels:
            raise CnnkitError(f"batch augmentation expects (N, {self.channels}, {self.size}, {self.size}) images, "
                              f"got {tuple(images.shape)}")
        x = self._geometry(images, p) if self.moves else images.float().div_(255.0)  # (N, C, S, S) in [0, 1]
        if self.aug.jitter > 0:
            x = jitter(x, p.jitter.to(x.device), p.order.to(x.device))
        x = Whiten()(x) if self.whiten else (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.aug.erasing > 0:
            x = erase(x, p.erase.to(x.device))
        return x

    def _geometry(self, images: torch.Tensor, p: Params) -> torch.Tensor:
        if _whole_pixels(p, self.size):
            return self._gather(images, p).float().div_(255.0)
        return self._resample(images.float().div_(255.0), p, "bilinear")

    def _gather(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        """Exact whole-pixel crops and flips of (N, C, S, S), any dtype: output pixel i ← input pixel x0 + i, or
        x0 + S − 1 − i when flipped, reflected at the borders as the 'pad' crop's reflect padding does."""
        n, c, s = x.shape[0], x.shape[1], self.size
        i = torch.arange(s, dtype=torch.int64)
        ix = _reflect(p.box[:, :1].long() + torch.where(p.hflip[:, None], s - 1 - i, i), s).to(x.device)  # (N, S)
        iy = _reflect(p.box[:, 1:2].long() + torch.where(p.vflip[:, None], s - 1 - i, i), s).to(x.device)
        flat = (iy[:, :, None] * s + ix[:, None, :]).view(n, 1, s * s)  # (N, 1, S·S) input pixel of each output
        return x.reshape(n, c, s * s).gather(2, flat.expand(n, c, s * s)).view(n, c, s, s)

    def _resample(self, x: torch.Tensor, p: Params, mode: str) -> torch.Tensor:
        """One grid_sample of float (N, C, S, S) through each sample's output → input matrix."""
        s, pad = self.size, self.pad
        padded = F.pad(x, [pad] * 4, mode="reflect") if pad else x  # (N, C, S + 2p, S + 2p)
        size_in = s + 2 * pad
        to_in = torch.tensor([[2 / size_in, 0, 2 * pad / size_in - 1], [0, 2 / size_in, 2 * pad / size_in - 1],
                              [0, 0, 1]], dtype=torch.float64)  # input pixels → grid_sample's [-1, 1]
        from_out = torch.tensor([[s / 2, 0, s / 2], [0, s / 2, s / 2], [0, 0, 1]], dtype=torch.float64)
        theta = (to_in @ geometry(p, s)[1] @ from_out)[:, :2].to(x.device, torch.float32)  # (N, 2, 3)
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1], s, s], align_corners=False)
        return F.grid_sample(padded, grid, mode=mode, padding_mode="zeros", align_corners=False)

    # -- masks and boxes --------------------------------------------------------------------------
    def masks(self, masks: torch.Tensor, p: Params, ignore_index: int = 255) -> torch.Tensor:
        """(N, S, S) int64 class masks moved like the images (nearest); pixels from outside become ignore_index."""
        if not self.moves:
            return masks
        if _whole_pixels(p, self.size):
            return self._gather(masks[:, None], p)[:, 0]
        inside = torch.ones_like(masks, dtype=torch.float32)
        out = self._resample(torch.stack([masks.float(), inside], dim=1), p, "nearest")  # (N, 2, S, S)
        return torch.where(out[:, 1] > 0.5, out[:, 0].round().to(masks.dtype), ignore_index)

    def boxes(self, boxes: Sequence[torch.Tensor], p: Params) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-sample (k, 4) xyxy pixel boxes moved like the images: the bounding box of the moved corners,
        clipped to the image; boxes left empty are dropped. Returns the boxes and each sample's (k,) kept mask."""
        forward = geometry(p, self.size)[0]  # (N, 3, 3)
        out, kept = [], []
        for m, b in zip(forward, boxes):
            b64 = b.detach().to("cpu", torch.float64)  # (k, 4)
            corners = b64[:, [0, 1, 2, 1, 0, 3, 2, 3]].view(-1, 4, 2)  # (k, 4 corners, xy)
            moved = corners @ m[:2, :2].T + m[:2, 2]  # (k, 4, 2)
            xy0, xy1 = moved.amin(dim=1).clamp(0, self.size), moved.amax(dim=1).clamp(0, self.size)
            keep = ((xy1 - xy0) > 1e-6).all(dim=1)  # (k,)
            out.append(torch.cat([xy0, xy1], dim=1)[keep].to(b.device, b.dtype))
            kept.append(keep.to(b.device))
        return out, kept


def _whole_pixels(p: Params, size: int) -> bool:
    """True when the geometry is whole-pixel shifts and flips: no resampling needed."""
    box = p.box
    return bool((box[:, 2:] == size).all() and (box[:, :2] == box[:, :2].round()).all() and (p.angle == 0).all()
                and (p.scale == 1).all() and (p.shift == 0).all())


def _reflect(j: torch.Tensor, size: int) -> torch.Tensor:
    """Indices in [-size + 1, 2 size − 2] mirrored into [0, size) without repeating the edge (torch's 'reflect')."""
    j = j.abs()
    return torch.where(j >= size, 2 * (size - 1) - j, j)


def grey(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float → (N, 1, H, W) luma as v2's rgb_to_grayscale (0.2989 R + 0.587 G + 0.114 B); grey stays."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation of float (N, C, H, W) in [0, 1], each a blend clamped to [0, 1] as
    v2's adjust_* do, applied per sample with its (3,) factors in its own order (N, 3)."""
    n = len(x)
    for step in range(3):
        op = order[:, step]  # (N,) 0 brightness, 1 contrast, 2 saturation
        f = factors.gather(1, op[:, None]).view(n, 1, 1, 1)
        g = grey(x)  # (N, 1, H, W)
        target = torch.where((op == 2).view(n, 1, 1, 1), g, g.mean(dim=(1, 2, 3), keepdim=True))
        target = torch.where((op == 0).view(n, 1, 1, 1), torch.zeros_like(target), target)
        x = (f * x + (1 - f) * target).clamp_(0.0, 1.0)
    return x


def erase(x: torch.Tensor, rects: torch.Tensor) -> torch.Tensor:
    """Zero each sample's rectangle (N, 4: top, left, h, w) of (N, C, H, W)."""
    h, w = x.shape[-2:]
    top, left, rh, rw = (v.view(-1, 1, 1) for v in rects.unbind(1))
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= top) & (rows < top + rh) & (cols >= left) & (cols < left + rw)  # (N, H, W)
    return x.masked_fill(hole[:, None], 0.0)
