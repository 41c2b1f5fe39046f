"""read_image and check_image on every image mode, against PIL; broken and oversized files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit.data.images as images_module
from cnnkit.data.images import BadImage, check_image, is_image_file, read_image, rgb_to_grey


def pil_reference(path: Path, channels: int) -> np.ndarray:
    """What PIL gives for the file, as (C, H, W) uint8."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def smooth_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth colour image: JPEG round trips stay close, so decoders can be compared pixel for pixel."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], -1).astype(np.uint8)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def files(tmp_path, rng) -> dict[str, Path]:
    """One file per PIL mode (all 8-bit unless said), noisy so that any conversion difference shows."""
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out = {}

    def save(name: str, im: Image.Image, **options) -> None:
        out[name] = tmp_path / name
        im.save(out[name], **options)

    save("grey.png", Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8), "L"))
    save("rgb.png", Image.fromarray(rgb, "RGB"))
    save("rgba.png", Image.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8), "RGBA"))
    save("la.png", Image.fromarray(rng.integers(0, 256, (20, 24, 2), dtype=np.uint8), "LA"))
    save("palette.png", Image.fromarray(rgb).quantize(16))
    save("palette_transparent.png", Image.fromarray(rgb).quantize(8), transparency=0)
    save("palette.gif", Image.fromarray(rgb).quantize(32))
    save("rgb.bmp", Image.fromarray(rgb))
    save("rgb.tif", Image.fromarray(rgb))
    save("grey.pgm", Image.fromarray(rgb[..., 0], "L"))
    save("smooth.jpg", Image.fromarray(smooth_rgb()), quality=92)
    save("grey.jpg", Image.fromarray(smooth_rgb()[..., 1], "L"), quality=92)
    save("cmyk.jpg", Image.fromarray(smooth_rgb()).convert("CMYK"), quality=92)
    return out


LOSSLESS = ["grey.png", "rgb.png", "rgba.png", "la.png", "palette.png", "palette_transparent.png", "palette.gif",
            "rgb.bmp", "rgb.tif", "grey.pgm"]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_files_match_pil_exactly(files, name, channels):
    img = read_image(files[name], channels)
    assert img.dtype == torch.uint8
    assert tuple(img.shape) == (channels, 20, 24)
    np.testing.assert_array_equal(img.numpy(), pil_reference(files[name], channels))


def test_modes_are_what_the_test_claims(files):
    modes = {name: Image.open(path).mode for name, path in files.items()}
    assert modes["grey.png"] == "L" and modes["rgba.png"] == "RGBA" and modes["la.png"] == "LA"
    assert modes["palette.png"] == modes["palette_transparent.png"] == modes["palette.gif"] == "P"
    assert modes["cmyk.jpg"] == "CMYK" and modes["grey.jpg"] == "L" and modes["smooth.jpg"] == "RGB"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["smooth.jpg", "grey.jpg", "cmyk.jpg"])
def test_jpeg_matches_pil_within_decoder_tolerance(files, name, channels):
    img = read_image(files[name], channels)
    assert tuple(img.shape) == (channels, 48, 64)
    diff = np.abs(img.numpy().astype(int) - pil_reference(files[name], channels))
    assert diff.max() <= 2, f"max difference {diff.max()} from PIL's decoder"


def test_grey_is_pil_luma_of_rgb(files):
    """1-channel reading of a colour PNG is PIL's L = (19595 R + 38470 G + 7471 B + 32768) >> 16 (ITU-R 601-2)."""
    rgb = np.asarray(Image.open(files["rgb.png"])).astype(np.int64)
    luma = (rgb @ np.array([19595, 38470, 7471]) + 32768) >> 16
    np.testing.assert_array_equal(read_image(files["rgb.png"], 1)[0].numpy(), luma)
    # 3-channel reading of a grey file repeats the grey level
    grey = np.asarray(Image.open(files["grey.png"]))
    np.testing.assert_array_equal(read_image(files["grey.png"], 3).numpy(), np.stack([grey] * 3))


def test_rgb_to_grey_equals_pil_on_every_level(rng):
    rgb = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    rgb[0, :256] = np.arange(256)[:, None]  # every grey level maps to itself
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    got = rgb_to_grey(torch.from_numpy(rgb).permute(2, 0, 1))
    assert tuple(got.shape) == (1, 300, 300)
    np.testing.assert_array_equal(got[0].numpy(), expected)
    batch = rgb_to_grey(torch.from_numpy(np.stack([rgb, rgb[::-1]])).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(batch[1, 0].numpy(), expected[::-1])


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path, rng):
    a = rng.integers(0, 65536, (10, 12)).astype(np.uint16)
    a[0, :3] = 0, 65535, 257 * 100
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    expected = np.floor(a.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png", 1)[0].numpy(), expected)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png", 3).numpy(), np.stack([expected] * 3))
    assert read_image(tmp_path / "deep.png", 1)[0, 0, :3].tolist() == [0, 255, 100]


def test_dark_sixteen_bit_png_stays_dark(tmp_path, rng):
    """A 16-bit image whose values happen to stay under 256 is still on the 0..65535 scale."""
    a = rng.integers(0, 256, (10, 12)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "dark.png")
    expected = np.floor(a.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)  # 0 or 1
    np.testing.assert_array_equal(read_image(tmp_path / "dark.png", 1)[0].numpy(), expected)


def test_is_image_file():
    assert is_image_file(Path("a/B.JPG")) and is_image_file(Path("x.png")) and is_image_file(Path("y.tiff"))
    assert not is_image_file(Path("labels.csv")) and not is_image_file(Path("notes.txt"))


# ---------------------------------------------------------------- broken files

def broken_files(tmp_path: Path, rng) -> dict[str, Path]:
    Image.fromarray(smooth_rgb()).save(tmp_path / "good.jpg", quality=92)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "good.png")
    jpeg, png = (tmp_path / "good.jpg").read_bytes(), (tmp_path / "good.png").read_bytes()
    out = {
        "empty.png": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "random.jpg": rng.integers(0, 256, 400, dtype=np.uint8).tobytes(),
        "random.png": rng.integers(0, 256, 400, dtype=np.uint8).tobytes(),
        "text.bmp": b"this is not a bitmap",
    }
    for name, data in out.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in out}


@pytest.mark.parametrize("channels", [1, 3])
def test_broken_files_raise_bad_image(tmp_path, rng, channels):
    for name, path in broken_files(tmp_path, rng).items():
        with pytest.raises(BadImage) as err:
            read_image(path, channels)
        reason = str(err.value)
        assert reason and "\n" not in reason, name
        assert check_image(path), f"check_image passed the broken file {name}"
        if name == "empty.png":
            assert reason == check_image(path) == "empty file"
    assert check_image(tmp_path / "good.jpg") is None and check_image(tmp_path / "good.png") is None


def test_missing_file(tmp_path):
    with pytest.raises(BadImage, match="cannot read"):
        read_image(tmp_path / "absent.png")
    assert check_image(tmp_path / "absent.png")


@pytest.mark.parametrize("name", ["big.png", "big.jpg", "big.bmp"])
def test_images_over_max_pixels_are_refused(tmp_path, monkeypatch, rng, name):
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / name)
    Image.fromarray(rng.integers(0, 256, (40, 25, 3), dtype=np.uint8)).save(tmp_path / ("half" + name[3:]))
    monkeypatch.setattr(images_module, "MAX_PIXELS", 40 * 25)
    with pytest.raises(BadImage, match=r"too large \(50×40 pixels\)"):
        read_image(tmp_path / name)
    assert check_image(tmp_path / name) == "too large (50×40 pixels)"
    assert read_image(tmp_path / ("half" + name[3:])).shape == (3, 40, 25)  # exactly at the limit: fine
    assert check_image(tmp_path / ("half" + name[3:])) is None
