"""read_image and check_image on hostile and unusual files: PNGs that crash libpng, files whose suffix lies, EXIF
orientation, CMYK, 16-bit, animated, WebP, empty files and decompression bombs; and, in real `python -m cnnkit`
processes, `predict` and `train` on PNGs whose data end early (exit 1 or 2 and one `error:` line, never a crash)."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from tests.conftest import (
    BROKEN_PNGS,
    REPO_ROOT,
    broken_png,
    png_chunk,
    png_file,
    png_rows,
    write_image,
    write_short_png,
)

import cnnkit.data.images as images_module
from cnnkit.data.images import BadImage, check_image, oriented_size, read_image


def pil_rgb(path: Path) -> np.ndarray:
    """PIL's first frame as RGB, (3, H, W)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(h + w - 2, 1)],
                    -1).astype(np.uint8)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- PNGs that crash libpng

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", BROKEN_PNGS)
def test_broken_pngs_are_bad_images_with_one_line_reasons(tmp_path, kind, channels):
    path = tmp_path / f"{kind}.png"
    path.write_bytes(broken_png(kind))
    with pytest.raises(BadImage) as err:
        read_image(path, channels)
    reason = str(err.value)
    assert reason and "\n" not in reason
    assert check_image(path) == reason
    expected = {"short": "PNG data ends early: 15050 of 30100 bytes", "bad-crc": "has a bad CRC",
                "bad-filter": "unrecognized data stream", "bad-zlib": "incorrect data check",
                "long": "PNG data is too long", "truncated": "PNG file is truncated"}[kind]
    assert expected in reason


def test_png_bytes_never_reach_torchvision(tmp_path, rng, monkeypatch):
    """Every PNG is decoded by PIL (after png_problem): libpng inside torchvision crashes on broken ones."""
    a = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    write_image(tmp_path / "good.png", a)
    seen = []
    monkeypatch.setattr(images_module, "decode_image", lambda data, **kw: seen.append(bytes(data[:8])))
    np.testing.assert_array_equal(read_image(tmp_path / "good.png").numpy(), a.transpose(2, 0, 1))
    assert seen == []


def test_a_short_png_written_by_the_shared_helper(tmp_path):
    path = write_short_png(tmp_path / "short.png", 20, 10)
    assert check_image(path) == "PNG data ends early: 305 of 610 bytes"
    with Image.open(path) as im:  # PIL alone would have filled the missing rows with zeros
        im.load()
        assert np.asarray(im)[-1].max() == 0


# ---------------------------------------------------------------- the bytes decide the format

def test_the_format_comes_from_the_bytes_not_the_suffix(tmp_path, rng):
    Image.fromarray(smooth(24, 32)).save(tmp_path / "photo.jpg", quality=90)
    a = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "real.png")
    Image.fromarray(a).quantize(8).save(tmp_path / "real.gif")
    (tmp_path / "jpeg.png").write_bytes((tmp_path / "photo.jpg").read_bytes())
    (tmp_path / "png.jpg").write_bytes((tmp_path / "real.png").read_bytes())
    (tmp_path / "gif.png").write_bytes((tmp_path / "real.gif").read_bytes())
    (tmp_path / "short.jpg").write_bytes(broken_png("short"))
    assert torch.equal(read_image(tmp_path / "jpeg.png"), read_image(tmp_path / "photo.jpg"))
    np.testing.assert_array_equal(read_image(tmp_path / "png.jpg").numpy(), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(read_image(tmp_path / "gif.png").numpy(), pil_rgb(tmp_path / "real.gif"))
    with pytest.raises(BadImage, match="PNG data ends early"):
        read_image(tmp_path / "short.jpg")
    assert check_image(tmp_path / "short.jpg").startswith("PNG data ends early")
    assert check_image(tmp_path / "jpeg.png") is None and check_image(tmp_path / "png.jpg") is None


# ---------------------------------------------------------------- EXIF orientation

def with_orientation(path: Path, array: np.ndarray, value: int, **options) -> Path:
    exif = Image.Exif()
    exif[0x0112] = value
    Image.fromarray(array).save(path, exif=exif.tobytes(), **options)
    return path


def test_exif_rotated_png_and_jpeg_read_upright(tmp_path):
    """20 wide × 10 high, Orientation 6 (turn 90° clockwise to view): read as 10 wide × 20 high, the stored
    top-left corner at the top right."""
    stored = smooth(10, 20)
    stored[:3, :3] = (255, 0, 0)  # a red corner to find
    png = read_image(with_orientation(tmp_path / "turned.png", stored, 6), 3).numpy()
    assert png.shape == (3, 20, 10)
    np.testing.assert_array_equal(png, np.rot90(stored, -1).transpose(2, 0, 1))
    assert png[:, 0, -1].tolist() == [255, 0, 0]
    jpeg_path = with_orientation(tmp_path / "turned.jpg", stored, 6, quality=95)
    jpeg = read_image(jpeg_path, 3).numpy()
    assert jpeg.shape == (3, 20, 10)
    assert np.abs(jpeg.astype(int) - np.rot90(pil_rgb(jpeg_path), -1, axes=(1, 2))).max() <= 1
    assert jpeg[0, 0, -1] > 200 and jpeg[1, 0, -1] < 60  # red at the top right
    with Image.open(jpeg_path) as im:
        assert oriented_size(im) == (10, 20) and im.size == (20, 10)


def test_detection_and_segmentation_sizes_follow_the_orientation(tmp_path):
    """YOLO scales its normalised boxes by image_size, and segmentation pairs masks by size: both must see the
    image as read_image returns it, turned."""
    from cnnkit.data.detection.annotations.source import image_size
    from cnnkit.data.segmentation.source import _size

    path = with_orientation(tmp_path / "turned.jpg", smooth(10, 20), 6, quality=90)
    assert image_size(path, "test") == (10, 20) == _size(path, oriented=True)
    assert tuple(read_image(path).shape[1:]) == (20, 10)
    assert _size(path) == (20, 10)  # a mask's size is its stored one


@pytest.mark.parametrize("value", range(1, 9))
def test_every_exif_orientation_matches_pil_exif_transpose(tmp_path, rng, value):
    for name, options in (("o.png", {}), ("o.jpg", {"quality": 95}), ("o.webp", {"lossless": True})):
        path = with_orientation(tmp_path / name, smooth(6, 10), value, **options)
        with Image.open(path) as im:
            expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB")).transpose(2, 0, 1)
        got = read_image(path, 3).numpy()
        assert got.shape == expected.shape, (name, value)
        assert np.abs(got.astype(int) - expected).max() <= 1, (name, value)


def test_a_broken_exif_block_does_not_refuse_the_pixels(tmp_path, rng):
    a = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\xff garbage")
    np.testing.assert_array_equal(read_image(tmp_path / "x.png").numpy(), a.transpose(2, 0, 1))


# ---------------------------------------------------------------- unusual modes and formats

def test_cmyk_jpeg_is_pil_rgb(tmp_path):
    Image.fromarray(smooth(30, 40)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=92)
    got = read_image(tmp_path / "cmyk.jpg", 3).numpy().astype(int)
    assert np.abs(got - pil_rgb(tmp_path / "cmyk.jpg")).max() <= 1


def test_sixteen_bit_rgb_png_and_grey_tiff(tmp_path, rng):
    rgb16 = rng.integers(0, 65536, (5, 9, 3)).astype(">u2")
    (tmp_path / "rgb16.png").write_bytes(png_file(9, 5, png_rows(rgb16.view(np.uint8).reshape(5, 9, 6)), depth=16))
    got = read_image(tmp_path / "rgb16.png", 3).numpy()
    np.testing.assert_array_equal(got, pil_rgb(tmp_path / "rgb16.png"))
    np.testing.assert_array_equal(got, (rgb16 >> 8).astype(np.uint8).transpose(2, 0, 1))  # PIL keeps the high byte
    grey16 = rng.integers(0, 65536, (7, 6)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.tif")
    assert Image.open(tmp_path / "grey16.tif").mode == "I;16"
    expected = np.floor(grey16.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "grey16.tif", 1)[0].numpy(), expected)


def test_animated_gif_and_png_give_their_first_frame(tmp_path):
    red, blue = Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))
    red.save(tmp_path / "anim.gif", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    red.save(tmp_path / "anim.png", save_all=True, append_images=[blue], duration=100, loop=0)  # APNG
    assert Image.open(tmp_path / "anim.png").n_frames == 2
    for name in ("anim.gif", "anim.png"):
        got = read_image(tmp_path / name, 3)
        assert got.shape == (3, 6, 8) and got[:, 0, 0].tolist() == [255, 0, 0], name
        assert check_image(tmp_path / name) is None


def test_webp_lossless_and_lossy_match_pil(tmp_path, rng):
    a = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "lossless.webp", lossless=True)
    Image.fromarray(smooth(12, 16)).save(tmp_path / "lossy.webp", quality=80)
    np.testing.assert_array_equal(read_image(tmp_path / "lossless.webp").numpy(), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(read_image(tmp_path / "lossy.webp").numpy(), pil_rgb(tmp_path / "lossy.webp"))


# ---------------------------------------------------------------- empty, truncated, not files, bombs

@pytest.mark.parametrize("name", ["empty.jpg", "empty.png", "empty.gif", "empty.webp"])
def test_zero_byte_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(BadImage, match="^empty file$"):
        read_image(tmp_path / name)
    assert check_image(tmp_path / name) == "empty file"


def test_a_folder_named_like_an_image(tmp_path):
    (tmp_path / "cat.jpg").mkdir()
    with pytest.raises(BadImage, match="cannot read: Is a directory"):
        read_image(tmp_path / "cat.jpg")
    assert check_image(tmp_path / "cat.jpg") == "cannot read: Is a directory"


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_jpegs(tmp_path, fraction):
    Image.fromarray(smooth(64, 80)).save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(BadImage) as err:
        read_image(tmp_path / "cut.jpg")
    assert "\n" not in str(err.value)
    assert check_image(tmp_path / "cut.jpg")


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 of 3 components, SOS and EOI: a JPEG's header with no pixels."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3))
    sos = bytes([3]) + b"".join(bytes([c, 0]) for c in (1, 2, 3)) + bytes([0, 63, 0])
    return (b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof
            + b"\xff\xda" + struct.pack(">H", len(sos) + 2) + sos + b"\xff\xd9")


def test_decompression_bomb_headers_are_refused_quickly(tmp_path, monkeypatch):
    """50000×50000 (7.5 GB of RGB): refused from the header, before any decoder allocates the pixels."""
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"x\x9c\x03\x00") + \
        png_chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(png)
    (tmp_path / "bomb.jpg").write_bytes(jpeg_header(50000, 50000))
    monkeypatch.setattr(images_module, "decode_image", lambda *a, **k: pytest.fail("torchvision was called"))
    start = time.perf_counter()
    for name in ("bomb.png", "bomb.jpg"):
        with pytest.raises(BadImage, match="^too large") as err:
            read_image(tmp_path / name)
        assert "\n" not in str(err.value)
        assert check_image(tmp_path / name).startswith("too large")
    assert str(err.value).count("2500000000 pixels")  # PIL's guard names the count
    assert time.perf_counter() - start < 1.0
    assert check_image(tmp_path / "bomb.png") == "too large (50000×50000 pixels)"


def test_a_jpeg_over_max_pixels_never_reaches_torchvision(tmp_path, monkeypatch):
    (tmp_path / "big.jpg").write_bytes(jpeg_header(300, 200))
    monkeypatch.setattr(images_module, "MAX_PIXELS", 300 * 200 - 1)
    monkeypatch.setattr(images_module, "decode_image", lambda *a, **k: pytest.fail("torchvision was called"))
    with pytest.raises(BadImage, match=r"^too large \(300×200 pixels\)$"):
        read_image(tmp_path / "big.jpg")


# ---------------------------------------------------------------- acceptance: real processes

def cnnkit_process(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT, env=env)


def assert_clean_failure(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 1 or 2 (not a signal: a segfault is -11 here, 139 in a shell), one `error:` line, no traceback."""
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip("\n").splitlines()[-1] == errors[0], proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def image_folder(root: Path, good: int, short: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls in ("cat", "dog"):
        for i in range(good):
            write_image(root / cls / f"{i}.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
        for i in range(short):
            write_short_png(root / cls / f"short{i}.png", 12, 12)
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A LeNet-5 run folder, fitted for one epoch on 8 random 12×12 RGB images the Keras way (no report: fast)."""
    import cnnkit

    x = np.random.default_rng(0).integers(0, 256, (8, 12, 12, 3), dtype=np.uint8)
    model = cnnkit.Model("lenet5", num_classes=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, np.array([0, 1] * 4), epochs=1, batch_size=8)
    run = tmp_path_factory.mktemp("hostile") / "run"
    model.save(str(run))
    return run


def test_predict_on_a_short_png_is_a_one_line_error(tiny_run, tmp_path):
    short = write_short_png(tmp_path / "short.png")
    proc = cnnkit_process("predict", str(tiny_run), str(short))
    assert_clean_failure(proc, "no readable images")
    assert "short.png (PNG data ends early: 15050 of 30100 bytes)" in proc.stderr


def test_train_on_a_folder_of_short_pngs_is_a_one_line_error(tmp_path):
    data = image_folder(tmp_path / "data", 0, 3)
    proc = cnnkit_process("train", "--data", str(data), "--model", "lenet5", "--epochs", "1",
                          "--out", str(tmp_path / "run"))
    assert_clean_failure(proc, "6 of 6 images are unreadable", "cat/short0.png (PNG data ends early")
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.slow  # a real process; in-process: tests/data/test_sources.py
def test_train_skips_one_short_png_with_a_warning_naming_it(tmp_path):
    data = image_folder(tmp_path / "data", 6, 0)
    write_short_png(data / "cat" / "short.png", 12, 12)
    proc = cnnkit_process("train", "--data", str(data), "--model", "lenet5", "--epochs", "1",
                          "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "skipping 1 unreadable image(s): cat/short.png (PNG data ends early: 222 of 444 bytes)" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "run")
    assert "cat/short.png" not in (tmp_path / "run" / "split.json").read_text()
