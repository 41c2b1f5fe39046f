"""png_problem: whole PNGs of every colour type, depth and interlace pass; short, long, corrupt, truncated and
oversized ones get a precise one-line reason, quickly and without inflating a bomb."""
from __future__ import annotations

import io
import struct
import time

import numpy as np
import pytest
from PIL import Image
from tests.conftest import BROKEN_PNGS, PNG_SIGNATURE, broken_png, png_chunk, png_file, png_rows

from cnnkit.data.png import PngHeader, is_png, png_problem

LIMIT = 16384 * 16384


def pillow_png(im: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "PNG", **options)
    return buffer.getvalue()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_every_kind_of_png_pillow_writes_is_whole(rng):
    """Odd sizes, so that rows of 1, 2 and 4-bit pixels end inside a byte."""
    rgb = rng.integers(0, 256, (7, 13, 3), dtype=np.uint8)
    images = {
        "1": Image.fromarray(rgb[..., 0] > 127),
        "L": Image.fromarray(rgb[..., 0], "L"),
        "LA": Image.fromarray(rgb[..., :2], "LA"),
        "RGB": Image.fromarray(rgb, "RGB"),
        "RGBA": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
        "I;16": Image.fromarray(rng.integers(0, 65536, (7, 13)).astype(np.uint16)),
    }
    files = {mode: pillow_png(im) for mode, im in images.items()}
    for bits in (1, 2, 4, 8):
        files[f"P{bits}"] = pillow_png(Image.fromarray(rgb).quantize(2 ** bits), bits=bits)
    for name, data in files.items():
        assert is_png(data)
        assert png_problem(data, LIMIT) is None, name
        assert png_problem(data[:-20], LIMIT), name  # and cut inside the image data, it is not


def test_sixteen_bit_rgb_and_grey_alpha(rng):
    rgb16 = rng.integers(0, 65536, (5, 9, 3)).astype(">u2")
    data = png_file(9, 5, png_rows(rgb16.view(np.uint8).reshape(5, 9, 6)), depth=16, colour=2)
    assert png_problem(data, LIMIT) is None
    la16 = rng.integers(0, 65536, (5, 9, 2)).astype(">u2")
    assert png_problem(png_file(9, 5, png_rows(la16.view(np.uint8).reshape(5, 9, 4)), depth=16, colour=4),
                       LIMIT) is None


def adam7_rows(a: np.ndarray) -> bytes:
    """The interlaced image data of `a`: the seven Adam7 passes' sub-images, row by row."""
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    return b"".join(png_rows(a[y0::dy, x0::dx]) for x0, y0, dx, dy in passes if a[y0::dy, x0::dx].size)


@pytest.mark.parametrize("h, w", [(1, 1), (1, 9), (3, 2), (5, 5), (7, 13), (8, 8), (17, 9)])
def test_interlaced_pngs_count_each_adam7_pass(rng, h, w):
    """Passes with no pixels (a 1×1 image has only the first) have no rows; Pillow reads the file to the same
    pixels, so the hand-made interlacing is right."""
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    raw = adam7_rows(a)
    assert PngHeader(w, h, 8, 2, 1).data_length() == len(raw)
    data = png_file(w, h, raw, interlace=1)
    assert png_problem(data, LIMIT) is None
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), a)
    assert png_problem(png_file(w, h, raw[:-1], interlace=1), LIMIT) == \
        f"PNG data ends early: {len(raw) - 1} of {len(raw)} bytes"


def test_sub_byte_interlaced_length():
    """A 1-bit 10×3 image: passes of (width, rows) (2, 1), (1, 1), (3, 0): absent, (2, 1), (5, 1), (5, 2), (10, 1);
    each row is a filter byte and its bits rounded up to bytes: 2 + 2 + 0 + 2 + 2 + 4 + 3."""
    assert PngHeader(10, 3, 1, 0, 1).data_length() == 15
    assert PngHeader(10, 3, 1, 0, 0).data_length() == 3 * (1 + 2)


@pytest.mark.parametrize("kind, reason", [
    ("short", "PNG data ends early: 15050 of 30100 bytes"),
    ("long", "PNG data is too long: over 30100 bytes for a 100×100 image"),
    ("bad-crc", "PNG file is corrupt: chunk 'IDAT' at byte 33 has a bad CRC"),
    ("bad-zlib", "PNG data is corrupt (Error -3 while decompressing data: incorrect data check)"),
    ("truncated", "PNG file is truncated: chunk 'IDAT' at byte 33 needs"),
])
def test_broken_pngs_have_a_precise_reason(kind, reason):
    assert kind in BROKEN_PNGS
    got = png_problem(broken_png(kind), LIMIT)
    assert got is not None and got.startswith(reason), got
    assert "\n" not in got


def test_a_bad_filter_byte_is_left_to_the_decoder():
    """The length is right, so the check passes; PIL (which read_image uses for PNG) refuses the row itself."""
    data = broken_png("bad-filter")
    assert png_problem(data, LIMIT) is None
    with pytest.raises(OSError, match="unrecognized data stream"):
        Image.open(io.BytesIO(data)).load()


def test_image_data_split_over_several_idat_chunks(rng):
    a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    data = png_file(30, 20, png_rows(a), idat_chunks=5)
    assert data.count(b"IDAT") == 5
    assert png_problem(data, LIMIT) is None
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), a)


def test_bytes_after_iend_are_ignored_and_iend_is_not_required(rng):
    data = png_file(30, 20, png_rows(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)))
    assert png_problem(data + b"trailing garbage", LIMIT) is None
    assert png_problem(data[:-12], LIMIT) is None  # ends with the last IDAT: the image data are whole


def header_only(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    return PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))


def test_a_bomb_header_is_refused_before_anything_is_inflated():
    start = time.perf_counter()
    assert png_problem(header_only(50000, 50000), LIMIT) == "too large (50000×50000 pixels)"
    assert time.perf_counter() - start < 0.05


def test_a_stream_that_inflates_far_past_the_header_stops_early():
    """10 MB of zeros behind a 10×10 header: counting stops one 1 MiB step past the 310 bytes expected."""
    data = png_file(10, 10, bytes(10_000_000))
    start = time.perf_counter()
    assert png_problem(data, LIMIT) == "PNG data is too long: over 310 bytes for a 10×10 image"
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize("data, reason", [
    (PNG_SIGNATURE + b"\x00\x00", "PNG file is truncated: 10 bytes, not even a whole header"),
    (PNG_SIGNATURE + png_chunk(b"IDAT", b"x" * 13) + png_chunk(b"IHDR", b"y" * 13),
     "PNG file is corrupt: its first chunk is not a 13-byte IHDR header"),
    (header_only(0, 5), "PNG header is invalid: 0×5 pixels"),
    (header_only(4, 4, depth=16, colour=3), "PNG header is invalid: bit depth 16, colour type 3"),
    (header_only(4, 4, colour=5), "PNG header is invalid: bit depth 8, colour type 5"),
    (header_only(4, 4) + png_chunk(b"IEND", b""), "PNG file has no image data (no IDAT chunk)"),
    (header_only(4, 4) + b"\x00\x00", "PNG file is truncated: it ends inside a chunk header at byte 33"),
    (header_only(4, 4)[:-1] + b"\x00", "PNG file is corrupt: chunk 'IHDR' has a bad CRC"),
    (header_only(4, 4) + b"\xff\xff\xff\xffIDAT", "PNG file is corrupt: chunk 'IDAT' at byte 33 claims 4294967295"),
])
def test_broken_framing_and_headers(data, reason):
    got = png_problem(data, LIMIT)
    assert got is not None and got.startswith(reason), got
