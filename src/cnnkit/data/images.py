"""Reading one image file of any mode (grey, RGB, RGBA, palette, 16-bit) as a uint8 (C, H, W) tensor."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Larger images are refused rather than decoded: a decompression bomb would exhaust memory.
MAX_PIXELS = 16384 * 16384


class BadImage(Exception):
    """An image file that cannot be decoded (empty, corrupt, truncated, or too large)."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _pil_to_uint8(im: Image.Image, channels: int) -> torch.Tensor:
    """PIL image of any mode → (channels, H, W) uint8; 16-bit is scaled down, alpha is dropped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA")
    im = im.convert("L" if channels == 1 else "RGB")
    a = np.asarray(im, dtype=np.uint8)
    t = torch.from_numpy(a.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def read_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Decode `path` to a (channels, H, W) uint8 tensor; raises BadImage with the reason.

    JPEG and PNG of 8 bits go through torchvision's decoders (libjpeg-turbo, libpng: faster than PIL);
    everything else (palette GIF, 16-bit, TIFF, BMP, ...) goes through PIL.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BadImage(f"cannot read: {err.strerror}") from None
    if not data:
        raise BadImage("empty file")
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        try:
            img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                               mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB)
            if img.dtype == torch.uint8 and img.shape[0] == channels and img.numel() <= MAX_PIXELS * channels:
                return img
        except RuntimeError:
            pass  # PIL below gives the precise reason, or manages odd files (CMYK, 16-bit PNG)
    return _read_with_pil(path, channels)


def _read_with_pil(path: Path, channels: int) -> torch.Tensor:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise BadImage(f"too large ({im.width}×{im.height} pixels)")
                im.load()
                return _pil_to_uint8(im, channels)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("too large (decompression bomb guard)") from None
    except Exception as err:  # noqa: BLE001  (PIL raises many types for broken files)
        raise BadImage(str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def check_image(path: Path) -> str | None:
    """Why `path` is unusable, or None. Decodes JPEGs at 1/8 scale, so a scan stays fast."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    return f"too large ({im.width}×{im.height} pixels)"
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "too large (decompression bomb guard)"
    except Exception as err:  # noqa: BLE001
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None
