"""Masks as pictures (cnnkit.data.segmentation.draw): the overlay is (1 − α)·image + α·colour exactly, ignored
pixels keep the image, the card's palette (or a fixed default), and the written palette PNG holds the indices."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from cnnkit.data.segmentation.draw import overlay, palette_of, write_prediction

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [10, 200, 30]], dtype=np.uint8)


def test_overlay_blends_exactly_and_leaves_ignore_pixels_alone() -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    mask = torch.tensor([[0, 1, 2, 255, 1]] * 4)
    for alpha in (0.5, 0.25, 1.0):
        out = overlay(image, mask, PALETTE, alpha)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        for y in range(4):
            for x in range(5):
                c = int(mask[y, x])
                if c >= len(PALETTE):
                    expected = image[:, y, x].float()
                else:
                    expected = (1 - alpha) * image[:, y, x].float() + alpha * torch.tensor(PALETTE[c]).float()
                assert torch.equal(out[:, y, x], expected.round().to(torch.uint8)), (alpha, y, x)


def test_palette_of_uses_the_cards_colours_or_a_fixed_default() -> None:
    card = SimpleNamespace(classes=["a", "b"], palette=[(1, 2, 3), (4, 5, 6), (7, 8, 9)])
    assert palette_of(card).tolist() == [[1, 2, 3], [4, 5, 6]] and palette_of(card).dtype == np.uint8
    none = SimpleNamespace(classes=["a", "b", "c"], palette=None)
    default = palette_of(none)
    assert default.shape == (3, 3) and np.array_equal(default, palette_of(none))  # the same every call
    short = SimpleNamespace(classes=["a", "b", "c"], palette=[(1, 2, 3)])  # too few colours: the default
    assert np.array_equal(palette_of(short), default)


def test_write_prediction_writes_an_index_png_and_its_overlay(tmp_path) -> None:
    card = SimpleNamespace(classes=["bg", "red", "green"], palette=PALETTE.tolist())
    image = torch.full((3, 3, 4), 100, dtype=torch.uint8)
    mask = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0], [1, 1, 1, 1]])
    paths = write_prediction(image, mask, card, tmp_path / "out", "x", alpha=0.5)
    assert paths == {"mask": str(tmp_path / "out" / "x_mask.png"), "overlay": str(tmp_path / "out" / "x_overlay.png")}
    with Image.open(paths["mask"]) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), mask.numpy())  # pixel values are the class indices
        assert im.getpalette()[:9] == PALETTE.flatten().tolist()
    with Image.open(paths["overlay"]) as im:
        np.testing.assert_array_equal(np.asarray(im), overlay(image, mask, PALETTE).permute(1, 2, 0).numpy())
    assert not list((tmp_path / "out").glob(".*.tmp"))  # written atomically, no leftovers
