"""Exact pixel hashes: equal for the same pixels in another lossless file, different for one changed pixel."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnkit.data.fingerprint import pixel_hash, pixel_hashes
from cnnkit.data.sources import from_arrays, from_folder


def test_same_pixels_in_png_and_bmp_hash_equal_and_one_pixel_changes_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    Image.fromarray(pixels).save(tmp_path / "a" / "one.png")
    Image.fromarray(pixels).save(tmp_path / "b" / "two.bmp")
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    Image.fromarray(changed).save(tmp_path / "b" / "three.png")
    source = from_folder(tmp_path)
    hashes = dict(zip([Path(p).name for p in source.paths], pixel_hashes(source)))
    assert hashes["one.png"] == hashes["two.bmp"]
    assert hashes["three.png"] != hashes["one.png"]


def test_the_shape_is_part_of_the_hash() -> None:
    flat = torch.zeros(1, 4, 6, dtype=torch.uint8)
    assert pixel_hash(flat) != pixel_hash(flat.reshape(1, 6, 4))
    source = from_arrays(np.zeros((3, 4, 4), np.uint8), np.array([0, 1, 0]), ["x", "y"])
    assert len(set(pixel_hashes(source, np.array([0, 2])))) == 1


def test_image_view_reads_detection_images_in_either_channel_count() -> None:
    from cnnkit.data.detection.source import synthetic_detection
    from cnnkit.data.fingerprint import image_view

    source = synthetic_detection("n=3,size=24")
    view = image_view(source)
    rgb, grey = view.load(1, 3), view.load(1, 1)
    assert len(view) == 3 and rgb.shape == (3, 24, 24) and grey.shape == (1, 24, 24)
    assert torch.equal(rgb, source.image(1))
    assert pixel_hashes(source, np.array([1])) == [pixel_hash(source.image(1))]
