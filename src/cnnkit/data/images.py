"""Reading one image file of any mode (grey, RGB, RGBA, palette, 16-bit) as a uint8 (C, H, W) tensor, and
checking one without converting it. Broken, truncated or oversized files raise BadImage with a one-line reason;
none of them reaches a decoder that could crash the process (see cnnkit.data.png).

    img = read_image("photo.jpg", 3)   # EXIF orientation applied; the format is told by the bytes, not the suffix
    reason = check_image(path)         # None, or why the file is unusable (what read_image would raise)
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image

from cnnkit.data.png import is_png, png_problem

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Larger images are refused from their header, before decoding: a decompression bomb would exhaust memory.
# (PIL's own guard, at 2 × Image.MAX_IMAGE_PIXELS ≈ 179 million pixels, refuses smaller ones first.)
MAX_PIXELS = 16384 * 16384
JPEG_MAGIC = b"\xff\xd8\xff"
ORIENTATION = 0x0112  # the EXIF tag; values 2..8 flip and/or rotate, undone by these (as PIL's exif_transpose)
TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
         5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_90}


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
    target = "L" if channels == 1 else "RGB"
    a = np.asarray(im if im.mode == target else im.convert(target), dtype=np.uint8)  # read-only: copied below
    return torch.from_numpy(a[None].copy() if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1)))


def _file_bytes(path: Path) -> bytes:
    """The whole file; BadImage when it cannot be read or is empty."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BadImage(f"cannot read: {err.strerror or type(err).__name__}") from None
    if not data:
        raise BadImage("empty file")
    return data


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def _opened(data: bytes) -> Iterator[Image.Image]:
    """PIL's lazy image of `data` (the header read, nothing decoded), its size checked against MAX_PIXELS; any
    error inside the block becomes BadImage with a one-line reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is checked here
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise BadImage(f"too large ({im.width}×{im.height} pixels)")
                yield im
    except BadImage:
        raise
    except Image.DecompressionBombError as err:
        raise BadImage(f"too large ({_reason(err)})") from None
    except UnidentifiedImageError:
        raise BadImage("cannot identify image file: not an image format PIL reads, or a corrupt header") from None
    except Exception as err:  # noqa: BLE001  (PIL raises many types for broken files)
        raise BadImage(_reason(err)) from None


def orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 when absent or unreadable: a broken EXIF block never refuses the pixels)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")  # 'Corrupt EXIF data'
            value = im.getexif().get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001  (PIL's EXIF parser raises many types on a broken block)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as read_image returns the image: swapped when the EXIF orientation turns it."""
    return (im.height, im.width) if orientation(im) >= 5 else (im.width, im.height)


def read_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Decode `path` to a (channels, H, W) uint8 tensor, EXIF orientation applied; raises BadImage with the reason.

    The format is told by the bytes. JPEG goes through torchvision's decoder (libjpeg-turbo: faster than PIL) once
    PIL read its size from the header; everything else through PIL, a PNG only after png_problem found it whole
    (libpng in torchvision crashes the process on a short or corrupt PNG). Grey is always PIL's luma of the RGB
    image (libjpeg's own grey conversion differs from it), whichever decoder ran.
    """
    data = _file_bytes(Path(path))
    if data.startswith(JPEG_MAGIC):
        img = _read_jpeg(data)
        if img is not None:
            return img if channels == 3 else rgb_to_grey(img)
    elif is_png(data):
        problem = png_problem(data, MAX_PIXELS)
        if problem:
            raise BadImage(problem)
    return _read_with_pil(data, channels)


def _read_jpeg(data: bytes) -> torch.Tensor | None:
    """(3, H, W) uint8 by torchvision, or None for PIL to decode (or to give the precise reason)."""
    with _opened(data):
        pass  # the size, from the header: a bomb is refused before torchvision allocates it
    try:
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                           apply_exif_orientation=True)
    except RuntimeError:
        return None
    return img if img.dtype == torch.uint8 and img.shape[0] == 3 else None


def _read_with_pil(data: bytes, channels: int) -> torch.Tensor:
    """PIL's decode of the first frame (animated GIF, PNG, WebP, multi-page TIFF), EXIF orientation applied."""
    with _opened(data) as im:
        im.load()
        turn = TURNS.get(orientation(im))
        return _pil_to_uint8(im if turn is None else im.transpose(turn), channels)


def check_image(path: Path) -> str | None:
    """Why `path` is unusable, or None: the same checks as read_image, the PNG one included; decodes JPEGs at 1/8
    scale, so a scan stays fast."""
    try:
        data = _file_bytes(Path(path))
        problem = png_problem(data, MAX_PIXELS) if is_png(data) else None
        if problem:
            return problem
        with _opened(data) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except BadImage as err:
        return str(err)
    return None
