"""A PNG's integrity, checked before any decoder sees its bytes: the chunks' framing and CRCs, the header, and the
exact length of the inflated image data.

    problem = png_problem(data, max_pixels)   # None, or one line: 'PNG data ends early: 5050 of 30100 bytes'

Why: libpng (inside torchvision's decode_image) crashes the whole process on a stream that ends early, a bad IDAT
CRC or corrupt compressed data, and Pillow fills missing rows with zeros and never checks IDAT CRCs. The check
costs one inflate of the data, in steps of at most 1 MiB, so that a decompression bomb never sits in memory.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type → samples per pixel
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # colour type → bit depths
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
STEP = 1 << 20  # inflate at most this many bytes at a time
MAX_CHUNK = 2**31 - 1  # the PNG spec's limit on a chunk's length


class PngProblem(Exception):
    """A PNG's bytes are broken; the message is the one-line reason."""


@dataclass(frozen=True)
class PngHeader:
    """The IHDR chunk's fields that fix the image data's size."""

    width: int
    height: int
    depth: int
    colour: int
    interlace: int

    def data_length(self) -> int:
        """Bytes of the inflated image data: per row a filter byte and the packed samples, per Adam7 pass when
        interlaced (a pass with no pixels has no rows)."""
        bits = self.depth * SAMPLES[self.colour]
        passes = ADAM7 if self.interlace else ((0, 0, 1, 1),)
        total = 0
        for x0, y0, dx, dy in passes:
            w = max(0, -(-(self.width - x0) // dx))
            h = max(0, -(-(self.height - y0) // dy))
            if w and h:
                total += h * (1 + (w * bits + 7) // 8)
        return total


def is_png(data: bytes) -> bool:
    return data[:8] == SIGNATURE


def read_header(data: bytes) -> PngHeader:
    """The IHDR chunk (the first), checked; PngProblem when absent, cut short or invalid."""
    if len(data) < 33:
        raise PngProblem(f"PNG file is truncated: {len(data)} bytes, not even a whole header")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise PngProblem("PNG file is corrupt: its first chunk is not a 13-byte IHDR header")
    if zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]:
        raise PngProblem("PNG file is corrupt: chunk 'IHDR' has a bad CRC")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if not (0 < width <= MAX_CHUNK and 0 < height <= MAX_CHUNK):
        raise PngProblem(f"PNG header is invalid: {width}×{height} pixels")
    if depth not in DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise PngProblem(f"PNG header is invalid: bit depth {depth}, colour type {colour}, compression "
                         f"{compression}, filter {filtering}, interlace {interlace}")
    return PngHeader(width, height, depth, colour, interlace)


def image_chunks(data: bytes) -> list[memoryview]:
    """The IDAT chunks' payloads, in order, every chunk's framing and CRC checked up to IEND (bytes after IEND
    are ignored; a file that ends at a chunk boundary without IEND is judged by its image data)."""
    view, pos, found = memoryview(data), 8, []
    while pos < len(data):
        if pos + 8 > len(data):
            raise PngProblem(f"PNG file is truncated: it ends inside a chunk header at byte {pos}")
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        end = pos + 12 + length
        if length > MAX_CHUNK:
            raise PngProblem(f"PNG file is corrupt: chunk {name!r} at byte {pos} claims {length} bytes")
        if end > len(data):
            raise PngProblem(f"PNG file is truncated: chunk {name!r} at byte {pos} needs {end} bytes, "
                             f"the file has {len(data)}")
        if zlib.crc32(view[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            raise PngProblem(f"PNG file is corrupt: chunk {name!r} at byte {pos} has a bad CRC")
        if kind == b"IDAT":
            found.append(view[pos + 8:end - 4])
        elif kind == b"IEND":
            break
        pos = end
    if not found:
        raise PngProblem("PNG file has no image data (no IDAT chunk)")
    return found


def inflated_length(chunks: list[memoryview], limit: int) -> int:
    """Bytes that the zlib stream split over `chunks` inflates to, counting stops past `limit`; PngProblem when
    the compressed data is corrupt."""
    z, total = zlib.decompressobj(), 0
    try:
        for chunk in chunks:
            total += len(z.decompress(chunk, STEP))
            while z.unconsumed_tail and total <= limit:
                total += len(z.decompress(z.unconsumed_tail, STEP))
            if total > limit or z.eof:
                return total
        return total + len(z.flush())
    except zlib.error as err:
        raise PngProblem(f"PNG data is corrupt ({err})") from None


def png_problem(data: bytes, max_pixels: int) -> str | None:
    """Why the PNG `data` is unusable, or None: a header over `max_pixels` pixels ('too large (W×H pixels)', before
    anything is inflated), a truncated file, a bad CRC, corrupt compressed data, or image data that is shorter or
    longer than the header's size needs."""
    try:
        header = read_header(data)
        if header.width * header.height > max_pixels:
            return f"too large ({header.width}×{header.height} pixels)"
        expected = header.data_length()
        got = inflated_length(image_chunks(data), expected)
    except PngProblem as err:
        return str(err)
    if got < expected:
        return f"PNG data ends early: {got} of {expected} bytes"
    if got > expected:
        return f"PNG data is too long: over {expected} bytes for a {header.width}×{header.height} image"
    return None
