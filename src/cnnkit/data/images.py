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


def rgb_to_grey(img: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 RGB → (..., 1, H, W) grey, bit for bit as PIL's convert('L'): ITU-R 601-2 luma
    in PIL's fixed point, L = (19595 R + 38470 G + 7471 B + 2**15) >> 16."""
    w = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(3, 1, 1)
    luma = (img[..., :3, :, :].to(torch.int32) * w).sum(dim=-3, keepdim=True) + 32768
    return luma.bitwise_right_shift(16).to(torch.uint8)


def _pil_to_uint8(im: Image.Image, channels: int) -> torch.Tensor:
    """PIL image of any mode → (channels, H, W) uint8; 16-bit is scaled down, alpha is dropped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        # 16-bit modes always span 0..65535 (a dark 16-bit image must stay dark); mode I (32-bit) gives no depth
        peak = 65535.0 if im.mode != "I" or a.max() > 255 else 255.0
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
    everything else (palette GIF, 16-bit, TIFF, BMP, ...) goes through PIL. Grey is always PIL's luma of the
    RGB image (libpng's and libjpeg's own grey conversions differ from it), whichever decoder ran.
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
            img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            if img.dtype == torch.uint8 and img.shape[0] == 3 and img.numel() <= MAX_PIXELS * 3:
                return img if channels == 3 else rgb_to_grey(img)
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
