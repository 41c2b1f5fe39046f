"""`cnnkit augment-preview --task segment` (cnnkit.data.segmentation.preview): rows of image / mask-overlay pairs,
each augmented copy beside its own moved mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.segmentation.draw import overlay
from cnnkit.data.segmentation.loader import fit_image
from cnnkit.data.segmentation.preview import augment_preview
from cnnkit.data.segmentation.synthetic_plants import PALETTE, synthetic_plants
from cnnkit.errors import CnnkitError

SIZE, PAD = 32, 2
SPEC = "synthetic-plants:size=32,count=5,seed=2"


def tiles(path) -> np.ndarray:
    grid = np.asarray(Image.open(path).convert("RGB"))
    rows = (grid.shape[0] - PAD) // (SIZE + PAD)
    return np.stack([np.stack([grid[PAD + r * (SIZE + PAD): PAD + r * (SIZE + PAD) + SIZE,
                                    PAD + c * (SIZE + PAD): PAD + c * (SIZE + PAD) + SIZE] for c in range(8)])
                     for r in range(rows)])


def test_each_picture_is_followed_by_its_mask_overlay(tmp_path) -> None:
    out = augment_preview(SPEC, tmp_path / "grid.png", preset="none", n=2, size=SIZE, seed=3)
    with Image.open(out) as im:
        assert im.size == (8 * (SIZE + PAD) + PAD, 2 * (SIZE + PAD) + PAD)  # (image, overlay) × 4 per row
    source = synthetic_plants(SPEC.split(":", 1)[1])
    chosen = np.random.default_rng(3).choice(len(source), size=2, replace=False)
    for row, i in zip(tiles(out), chosen):
        image, mask = source.read(int(i))
        image, mask = fit_image(image, SIZE), fit_image(mask[None].to(torch.uint8), SIZE, nearest=True)[0]
        np.testing.assert_array_equal(row[0], image.permute(1, 2, 0).numpy())
        expected = overlay(image, mask, np.asarray(PALETTE, dtype=np.uint8))
        np.testing.assert_array_equal(row[1], expected.permute(1, 2, 0).numpy())
        for k in (2, 4, 6):  # preset "none": each copy and its overlay are the originals
            np.testing.assert_array_equal(row[k], row[0])
            np.testing.assert_array_equal(row[k + 1], row[1])


def test_flipped_copies_carry_their_flipped_mask(tmp_path) -> None:
    torch.manual_seed(0)
    out = augment_preview(SPEC, tmp_path / "light.png", preset="light", n=5, size=SIZE, seed=0)
    flipped = 0
    for row in tiles(out):
        for k in (2, 4, 6):
            if np.array_equal(row[k], row[0][:, ::-1]) and not np.array_equal(row[0], row[0][:, ::-1]):
                np.testing.assert_array_equal(row[k + 1], row[1][:, ::-1])  # the mask moved with the image
                flipped += 1
            else:
                np.testing.assert_array_equal(row[k + 1], row[1])
    assert 0 < flipped < 15  # hflip p = 0.5 over 15 copies


def test_unknown_preset_is_refused(tmp_path) -> None:
    with pytest.raises(CnnkitError, match="did you mean 'light'"):
        augment_preview(SPEC, tmp_path / "x.png", preset="lihgt")
