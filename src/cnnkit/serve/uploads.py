"""One uploaded image checked before the model sees it: its declared type, its format, its pixels (from the
header, before decoding), a PNG's integrity (cnnkit.data.png) and a full decode by PIL.

    suffix = check_image("cat.png", data, "image/png", limits)   # '.png', or RequestError(4xx, "image 'cat.png' ...")

Only bytes that PIL decoded completely are handed on, so that a bad upload is refused with its status code before
the model is involved. The stored file is then read as a file on disk is (cnnkit.data.images.read_image), which
never hands a broken file to a decoder that could crash: a PNG is decoded by PIL once cnnkit.data.png found it whole
(libpng, inside torchvision, crashes the process on a PNG whose data end early), a JPEG by torchvision once its
header's size is checked. The status codes: 413 too large, 415 not an image type served, 422 an image that is
empty, corrupt or truncated.
"""
from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from cnnkit.data.png import png_problem
from cnnkit.serve.limits import CONTENT_TYPES, FORMATS, GENERIC_TYPES, Limits, content_type_of, megapixels


class RequestError(Exception):
    """A request the server refuses: an HTTP status (4xx, or 503 when busy) and a one-line reason, sent as
    {"detail": reason}."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def check_type(name: str, declared: str | None) -> bool:
    """Refuse (415) a declared content type that is not an image type served; True when the type says nothing
    (absent or application/octet-stream), so that the bytes decide."""
    media = content_type_of(declared)
    if media in GENERIC_TYPES:
        return True
    if media not in CONTENT_TYPES:
        served = ", ".join(sorted(t for t in CONTENT_TYPES if "/x-" not in t))
        raise RequestError(415, f"image {name!r} has content type {media!r}; send one of {served}")
    return False


def _open(name: str, data: bytes, generic: bool, limits: Limits) -> Image.Image:
    """PIL's lazy image (the header read, nothing decoded), or a RequestError."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:  # PIL's own guard, at twice Image.MAX_IMAGE_PIXELS
        raise RequestError(413, f"image {name!r} is too large ({_reason(err)}); the limit is "
                                f"{megapixels(limits.max_image_pixels)}") from None
    except UnidentifiedImageError:
        if generic:
            raise RequestError(415, f"{name!r} is not an image of a type served ({', '.join(FORMATS)})") from None
        raise RequestError(422, f"image {name!r} cannot be read: not a JPEG, PNG, BMP, WebP, GIF, TIFF or PPM "
                                "file, or its header is corrupt") from None
    except Exception as err:  # noqa: BLE001  (PIL's plugins raise many types on a broken header)
        raise RequestError(422, f"image {name!r} cannot be read: {_reason(err)}") from None


def check_image(name: str, data: bytes, declared: str | None, limits: Limits) -> str:
    """The suffix to store the image under (its format's, see limits.FORMATS) once it passed every check; a
    RequestError naming the image otherwise. Decoding happens only below the pixel limit."""
    generic = check_type(name, declared)
    if not data:
        raise RequestError(422, f"image {name!r} is empty")
    with _open(name, data, generic, limits) as im:
        if im.format not in FORMATS:
            raise RequestError(415, f"image {name!r} is {im.format or 'of an unknown format'}; send one of "
                                    f"{', '.join(FORMATS)}")
        width, height = im.size
        if width * height > limits.max_image_pixels:
            raise RequestError(413, f"image {name!r} is {width}×{height} = {megapixels(width * height)}, over the "
                                    f"limit of {megapixels(limits.max_image_pixels)}")
        if width < 1 or height < 1:
            raise RequestError(422, f"image {name!r} has no pixels ({width}×{height})")
        problem = png_problem(data, limits.max_image_pixels) if im.format == "PNG" else None
        if problem:  # PIL alone would fill a PNG whose data end early with black rows
            raise RequestError(422, f"image {name!r} cannot be decoded: {problem}")
        try:
            im.load()
        except Exception as err:  # noqa: BLE001  (PIL's decoders raise OSError, SyntaxError, ValueError, ...)
            raise RequestError(422, f"image {name!r} cannot be decoded: {_reason(err)}") from None
        return FORMATS[im.format]
