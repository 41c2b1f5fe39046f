"""What `cnnkit serve` accepts and how it batches: one frozen dataclass, its defaults and its checks.

    limits = Limits(max_request_bytes=5 * MB, max_images=4)   # the CLI flags map one to one onto these fields

A request over a limit is refused with a 4xx before the work it would cost is done: the body's size is checked
against Content-Length before any byte is read and counted while it streams, an image's pixels are read from its
header before it is decoded (a 20000×20000 PNG of one colour is a few KB compressed and 1.2 GB decoded).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from cnnkit.errors import CnnkitError

MB = 1024 * 1024

# The image formats served (PIL's names) and the file suffix each is handed to the predict code under; the decoder
# is picked by the bytes (cnnkit.data.images.read_image), so an upload is read as the same file on disk would be.
FORMATS: dict[str, str] = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp", "GIF": ".gif",
                           "TIFF": ".tif", "PPM": ".ppm"}
# The declared content types accepted for an image part; "application/octet-stream" and no type at all are
# accepted too when the bytes are one of FORMATS (what a client sends that does not know the type).
CONTENT_TYPES: frozenset[str] = frozenset({
    "image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/x-png", "image/bmp", "image/x-bmp",
    "image/x-ms-bmp", "image/webp", "image/gif", "image/tiff", "image/x-portable-anymap",
    "image/x-portable-pixmap", "image/x-portable-graymap", "image/x-portable-bitmap",
})
GENERIC_TYPES: frozenset[str] = frozenset({"", "application/octet-stream"})


@dataclass(frozen=True)
class Limits:
    """The server's limits and batching. Sizes in bytes and pixels, times in seconds."""

    max_request_bytes: int = 20 * MB  # the whole multipart body
    max_image_pixels: int = 40_000_000  # width × height of one image, read from its header before decoding
    max_images: int = 16  # images in one request
    max_batch: int = 16  # images in one model call (requests that arrive together share it)
    max_wait_s: float = 0.005  # how long the first request of a batch waits for others to join it
    max_queued: int = 256  # images waiting for the model; beyond it a request gets 503 (try again)
    timeout_s: float = 120.0  # how long a request waits for its predictions before a 503

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_image_pixels", "max_images", "max_batch", "max_queued"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise CnnkitError(f"{flag(name)} must be a positive integer, got {getattr(self, name)!r}")
        if not self.max_wait_s >= 0:
            raise CnnkitError(f"--max-wait-ms must be zero or more, got {self.max_wait_s * 1000:g}")
        if not self.timeout_s > 0:
            raise CnnkitError(f"--timeout must be positive seconds, got {self.timeout_s:g}")
        if self.max_queued < self.max_images:
            raise CnnkitError(f"--max-queued ({self.max_queued}) must hold at least one request's images "
                              f"(--max-images {self.max_images})")

    def as_dict(self) -> dict:
        return asdict(self)


def flag(field: str) -> str:
    """The CLI flag of a Limits field: max_image_pixels → --max-image-pixels."""
    return "--" + field.replace("_", "-")


def content_type_of(header: str | None) -> str:
    """The media type of a Content-Type header, lower case, without parameters ('' when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def megabytes(n: int) -> str:
    return f"{n / MB:.3g} MB"


def megapixels(n: int) -> str:
    return f"{n / 1e6:.3g} Mpx"
