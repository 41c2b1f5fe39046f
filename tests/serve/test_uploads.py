"""One upload checked before the model sees it: formats served, declared types, the pixel limit read from the
header (a PNG bomb refused at once, without decoding), and a full decode (corrupt, truncated, empty)."""
from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from cnnkit.serve.limits import FORMATS, Limits
from cnnkit.serve.uploads import RequestError, check_image, check_type

LIMITS = Limits()


@pytest.mark.parametrize(("name", "declared", "suffix"), [
    ("rgb.png", "image/png", ".png"), ("grey.png", None, ".png"), ("photo.jpg", "image/jpeg", ".jpg"),
    ("bitmap.bmp", "image/bmp", ".bmp"), ("web.webp", "image/webp", ".webp"), ("anim.gif", "image/gif", ".gif"),
    ("photo.jpg", "application/octet-stream", ".jpg"),  # the bytes decide when the type says nothing
    ("rgb.png", "image/jpeg", ".png"),  # a wrong image type: the format read from the bytes wins
])
def test_a_good_image_gets_the_suffix_of_its_format(images: dict[str, Path], name: str, declared: str | None,
                                                     suffix: str) -> None:
    assert check_image(name, images[name].read_bytes(), declared, LIMITS) == suffix
    assert suffix in FORMATS.values()


def _refused(name: str, data: bytes, declared: str | None, limits: Limits = LIMITS) -> RequestError:
    with pytest.raises(RequestError) as caught:
        check_image(name, data, declared, limits)
    assert name in caught.value.detail, caught.value.detail  # the reason names the image
    return caught.value


@pytest.mark.parametrize("declared", ["text/plain", "application/pdf", "video/mp4", "image/svg+xml"])
def test_a_declared_type_that_is_not_an_image_served_is_415(images: dict[str, Path], declared: str) -> None:
    error = _refused("rgb.png", images["rgb.png"].read_bytes(), declared)
    assert error.status == 415 and declared in error.detail
    assert check_type("x", "image/PNG; q=1") is False and check_type("x", None) is True


def test_bytes_that_are_no_image(tmp_path: Path) -> None:
    assert _refused("notes.txt", b"hello, world\n" * 10, None).status == 415  # untyped: not an image
    error = _refused("fake.jpg", b"\xff\xd8\xff\xe0 not really a jpeg" * 4, "image/jpeg")  # typed: corrupt
    assert error.status == 422 and "cannot be read" in error.detail
    assert _refused("empty.png", b"", "image/png").status == 422


def test_a_format_not_served_is_415(tmp_path: Path, images: dict[str, Path]) -> None:
    from PIL import Image

    Image.open(images["rgb.png"]).save(tmp_path / "x.ico")
    error = _refused("x.ico", (tmp_path / "x.ico").read_bytes(), None)
    assert error.status == 415 and "ICO" in error.detail


def test_a_truncated_or_corrupt_png_is_422_naming_it(truncated_png: Path, images: dict[str, Path]) -> None:
    error = _refused("cut.png", truncated_png.read_bytes(), "image/png")
    assert error.status == 422 and "cannot be decoded" in error.detail and "truncated" in error.detail
    data = bytearray(images["rgb.png"].read_bytes())
    data[60:70] = b"\x00" * 10  # inside IDAT: its checksum no longer matches
    assert _refused("flipped.png", bytes(data), "image/png").status == 422


def test_a_png_bomb_is_413_at_once_without_decoding(png_bomb: Path) -> None:
    data = png_bomb.read_bytes()
    assert len(data) < 200_000  # a few KB on the wire ...
    peak, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    error = _refused("bomb.png", data, "image/png")
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100_000  # KB: ... and never 400 MB in memory
    assert error.status == 413 and "400000000 pixels" in error.detail and "the limit is 40 Mpx" in error.detail


def test_an_image_over_the_limit_but_under_pils_guard_is_413_with_its_size(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("1", (9000, 5000)).save(tmp_path / "wide.png")  # 45 Mpx: over 40, under PIL's 89 Mpx warning
    error = _refused("wide.png", (tmp_path / "wide.png").read_bytes(), "image/png")
    assert error.status == 413 and "9000×5000 = 45 Mpx, over the limit of 40 Mpx" in error.detail


def test_the_pixel_limit_is_the_one_given(images: dict[str, Path]) -> None:
    small = Limits(max_image_pixels=40 * 56 - 1)
    assert _refused("rgb.png", images["rgb.png"].read_bytes(), None, small).status == 413
    assert check_image("rgb.png", images["rgb.png"].read_bytes(), None, Limits(max_image_pixels=40 * 56)) == ".png"


@pytest.mark.parametrize(("kind", "reason"), [("short", "PNG data ends early: 15050 of 30100 bytes"),
                                              ("bad-crc", "chunk 'IDAT' at byte 33 has a bad CRC")])
def test_a_png_that_pil_alone_would_accept_is_422(kind: str, reason: str) -> None:
    """PIL fills a PNG whose data end early with black rows and never checks IDAT CRCs; the upload check does
    (cnnkit.data.png), as read_image does for the stored file."""
    from tests.conftest import broken_png

    error = _refused(f"{kind}.png", broken_png(kind), "image/png")
    assert error.status == 422 and reason in error.detail and "cannot be decoded" in error.detail
