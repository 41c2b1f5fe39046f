"""Region proposals by selective search (Uijlings et al. 2013), and the on-disk cache that the R-CNN line
(rcnn, spp_net, fast_rcnn) keeps its proposals and frozen features in.

    boxes = selective_search(image)                 # (P, 4) xyxy pixels, ranked, about 2000 at 384 px ("fast")
    cache = RegionCache("features")                 # $CNNKIT_CACHE/regions/features/<key>.pt
    feats = cache.get_or_make(key, lambda: compute())

Selective search is OpenCV's (opencv-contrib-python-headless, `ximgproc.segmentation`): the reference C++ of
the paper's hierarchical grouping over Felzenszwalb's segmentation, about 1 s per 384-px image in its "fast"
mode on one core. A Python version on scikit-image's segmentation would be ten times slower for no difference
a user sees, so cnnkit does not write its own.

The cache key of an image is a hash of its pixels (as the network sees them, rounded to 8 bits) and of
everything that shapes the value (method, backbone, weights, size): a changed image, backbone or setting
misses and recomputes; nothing ever serves a stale entry. Writes are atomic (a temporary file renamed), so
two processes or a killed run leave either the whole entry or none.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.errors import CnnkitError

__all__ = ["MODES", "RegionCache", "autocast_of", "image_key", "module_key", "selective_search"]

MODES = ("fast", "quality", "single")  # OpenCV's strategies: 'single' is one colour space, one k


def _opencv() -> Any:
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is None or not hasattr(cv2, "ximgproc"):
        raise CnnkitError("selective search (rcnn, spp_net, fast_rcnn) needs OpenCV's contrib modules: "
                          "pip install 'cnnkit[proposals]' (opencv-contrib-python-headless)")
    return cv2


def selective_search(image: torch.Tensor, *, mode: str = "fast", top: int = 2000, min_side: int = 8
                     ) -> torch.Tensor:
    """(P ≤ top, 4) float32 xyxy proposals of one image (3, H, W) (uint8, or float in [0, 1]), boxes with a side
    under `min_side` pixels and exact repeats dropped. OpenCV ranks the regions pseudo-randomly (the paper's
    rank: hierarchy level × a random number) and its order changes from call to call, though the set does not;
    cnnkit orders the set by a fixed shuffle, so that a `top` below the count keeps the same boxes each time."""
    if mode not in MODES:
        raise CnnkitError(f"unknown selective search mode {mode!r}; choose one of {', '.join(MODES)}")
    cv2 = _opencv()
    cv2.setNumThreads(1)  # one image per call; the loader's processes give the parallelism
    pixels = image if image.dtype == torch.uint8 else image.float().mul(255).round().clamp(0, 255).byte()
    bgr = pixels.flip(0).permute(1, 2, 0).contiguous().cpu().numpy()  # (H, W, 3) BGR, as OpenCV wants
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    {"fast": search.switchToSelectiveSearchFast, "quality": search.switchToSelectiveSearchQuality,
     "single": search.switchToSingleStrategy}[mode]()
    rects = torch.as_tensor(search.process(), dtype=torch.float32).reshape(-1, 4)  # (P, 4) x, y, w, h
    keep = (rects[:, 2] >= min_side) & (rects[:, 3] >= min_side)
    boxes = torch.cat([rects[keep, :2], rects[keep, :2] + rects[keep, 2:]], 1)  # (P', 4) xyxy
    unique = np.unique(boxes.numpy(), axis=0)  # sorted, repeats dropped
    order = np.random.default_rng(0).permutation(len(unique))  # a fixed shuffle: the same `top` every time
    return torch.as_tensor(unique[order][:top])


def image_key(image: torch.Tensor, *parts: object) -> str:
    """A hex key of an image's pixels (3, H, W), rounded to 8 bits as stored, and of `parts` (settings)."""
    pixels = image if image.dtype == torch.uint8 else image.detach().float().mul(255).round().clamp(0, 255).byte()
    digest = hashlib.sha256(pixels.contiguous().cpu().numpy().tobytes())
    digest.update(repr((tuple(pixels.shape), *parts)).encode())
    return digest.hexdigest()[:40]


def module_key(module: torch.nn.Module) -> str:
    """A hex key of a module's parameters and buffers (names, shapes and values): features cached under it
    belong to exactly these weights, however they were loaded (load_state_dict bumps the tensors' versions)."""
    tensors = [*module.parameters(), *module.buffers()]
    if any(t.is_inference() for t in tensors):  # made under inference_mode: no version counters to watch
        return _hash_module(module)
    versions = tuple(t._version for t in tensors)
    known = module.__dict__.get("_region_key")  # (versions, key): hashed again only after a change
    if known is None or known[0] != versions:
        module.__dict__["_region_key"] = known = (versions, _hash_module(module))
    return known[1]


def _hash_module(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:40]


def autocast_of(x: torch.Tensor) -> str | None:
    """The autocast dtype in force on x's device ("torch.bfloat16"), or None: part of a cached feature's key."""
    kind = x.device.type
    return str(torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind) else None


class RegionCache:
    """Tensors on disk, one file per key, under $CNNKIT_CACHE/regions/<kind>/ (see cnnkit.data.cache). Counts
    its hits and misses; `root` overrides the folder."""

    def __init__(self, kind: str, root: str | Path | None = None):
        from cnnkit.data.cache import cache_folder

        self.folder = Path(root) if root is not None else cache_folder() / "regions" / kind
        self.hits = self.misses = 0

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.pt"

    def get_or_make(self, key: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        path = self.path(key)
        if path.is_file():
            try:
                value = torch.load(path, map_location="cpu", weights_only=True)
                self.hits += 1
                return value
            except Exception:  # noqa: BLE001 - a damaged entry is recomputed and replaced
                path.unlink(missing_ok=True)
        self.misses += 1
        value = make()
        self._put(path, value.detach().cpu())
        return value

    def _put(self, path: Path, value: torch.Tensor) -> None:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".entry.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                torch.save(value, f)
            os.replace(tmp, path)
        except OSError as err:  # a full or read-only disk costs speed, not the run
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            warnings.warn(f"region cache: cannot write {path} ({err.strerror or err}); computing without it",
                          stacklevel=3)
