"""Fuzzing the PNG check (cnnkit.data.png) and the decode behind it: mutations of valid PNGs of several kinds (cut,
bytes flipped, spans deleted, repeated or inserted), half of them with every chunk's CRC recomputed so that the
damage reaches the compressed data. read_image returns pixels or raises a one-line BadImage, never anything else
and never a crash, and check_image agrees with it exactly (tests/fuzzing.py)."""
from __future__ import annotations

import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image
from tests.conftest import png_file, png_rows
from tests.fuzzing import SIZES, fuzz

from cnnkit.data.images import BadImage, check_image, read_image
from cnnkit.data.png import png_problem


def _pil(im: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _valid() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    return [
        _pil(Image.fromarray(rgb)),
        _pil(Image.fromarray(rgb).quantize(4), bits=2),
        _pil(Image.fromarray(rng.integers(0, 65536, (9, 13)).astype(np.uint16))),
        png_file(13, 9, png_rows(rgb), idat_chunks=3),
        png_file(3, 2, b"".join(png_rows(rgb[y0:2:dy, x0:3:dx]) for x0, y0, dx, dy in
                                ((0, 0, 8, 8), (2, 0, 4, 4), (1, 0, 2, 2), (0, 1, 1, 2))), interlace=1),
    ]


VALID = _valid()


def with_crcs_fixed(data: bytes) -> bytes:
    """Every whole chunk's CRC recomputed (a cut-off tail kept as it is)."""
    out, pos = bytearray(data[:8]), 8
    while pos + 12 <= len(data):
        length = struct.unpack_from(">I", data, pos)[0]
        end = pos + 12 + length
        if end > len(data):
            break
        out += data[pos:end - 4] + struct.pack(">I", zlib.crc32(data[pos + 4:end - 4]))
        pos = end
    return bytes(out + data[pos:])


@st.composite
def mutated_png(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(8, len(data)))
        j = draw(st.integers(i, min(len(data), i + 30)))
        edit = draw(st.sampled_from(["cut", "flip", "delete", "repeat", "insert"]))
        if edit == "cut":
            data = data[:i]
        elif edit == "flip" and i < len(data):
            data[i] ^= draw(st.integers(1, 255))
        elif edit == "delete":
            data = data[:i] + data[j:]
        elif edit == "repeat":
            data = data[:j] + data[i:j] * draw(st.integers(1, 3)) + data[j:]
        else:
            data = data[:i] + draw(st.binary(min_size=1, max_size=12)) + data[i:]
    return with_crcs_fixed(bytes(data)) if draw(st.booleans()) else bytes(data)


def check(data: bytes, folder: Path) -> None:
    problem = png_problem(data, 16384 * 16384)
    assert problem is None or (problem and "\n" not in problem)
    path = folder / "x.png"
    path.write_bytes(data)
    try:
        img = read_image(path, 3)
    except BadImage as err:
        reason = str(err)
        assert reason and "\n" not in reason and len(reason) < 500, reason
        assert check_image(path) == reason
        return
    assert problem is None and check_image(path) is None
    assert img.dtype.is_floating_point is False and img.shape[0] == 3


@SIZES
def test_png_fuzz(examples):
    with tempfile.TemporaryDirectory() as folder:
        fuzz(examples, mutated_png(), lambda data: check(data, Path(folder)))
