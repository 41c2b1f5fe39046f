"""`cnnkit augment-preview --task detect` (cnnkit.data.detection.preview): rows of an image and augmented copies,
each with its boxes (and class names) moved with it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli.app import main
from cnnkit.data.detection.preview import COPIES, PALETTE, augment_preview, draw_picture, preview_rows
from cnnkit.data.detection.source import open_detection_source
from cnnkit.errors import CnnkitError

SIZE, PAD = 64, 2
SPEC = "synthetic-shapes:count=2,n=8,size=64"


def tiles(path) -> np.ndarray:
    """(rows, COPIES + 1, S, S, 3) the pictures of a grid PNG."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    rows = (grid.shape[0] - PAD) // (SIZE + PAD)
    step = SIZE + PAD
    return np.stack([np.stack([grid[PAD + r * step: PAD + r * step + SIZE, PAD + c * step: PAD + c * step + SIZE]
                               for c in range(COPIES + 1)]) for r in range(rows)])


def test_without_augmentation_each_row_is_the_image_and_its_boxes(tmp_path) -> None:
    source = open_detection_source(SPEC)
    rows = preview_rows(source, [3, 5], preset="none", size=SIZE)
    for i, row in zip((3, 5), rows):
        image, target = source.read(i)
        assert len(row) == COPIES + 1
        for picture in row:  # the image fits 64 × 64 as it is: the source's pixels and boxes
            assert torch.equal(picture["image"], image)
            torch.testing.assert_close(picture["boxes"], target["boxes"].float())
            assert torch.equal(picture["labels"], target["labels"])
    out = augment_preview(SPEC, tmp_path / "grid.png", preset="none", n=2, size=SIZE)
    with Image.open(out) as im:
        assert im.size == ((COPIES + 1) * (SIZE + PAD) + PAD, 2 * (SIZE + PAD) + PAD)


def test_a_flipped_copy_carries_its_flipped_boxes_and_masks() -> None:
    source = open_detection_source(SPEC)
    flipped = 0
    for row in preview_rows(source, range(8), preset="light", size=SIZE, seed=1, masks=True):
        first = row[0]
        for copy in row[1:]:
            assert torch.equal(copy["labels"], first["labels"])
            if torch.equal(copy["image"], first["image"]):
                torch.testing.assert_close(copy["boxes"], first["boxes"])
                assert torch.equal(copy["masks"], first["masks"])
                continue
            assert torch.equal(copy["image"], first["image"].flip(-1))  # light: a horizontal flip, nothing else
            x1, y1, x2, y2 = first["boxes"].unbind(1)
            torch.testing.assert_close(copy["boxes"], torch.stack([SIZE - x2, y1, SIZE - x1, y2], 1))
            assert torch.equal(copy["masks"], first["masks"].flip(-1))
            flipped += 1
    assert 0 < flipped < 8 * COPIES  # p = 0.5 over 24 copies


def test_the_grid_draws_each_box_where_the_boxes_went(tmp_path) -> None:
    out = augment_preview(SPEC, tmp_path / "light.png", preset="light", n=4, size=SIZE, seed=2)
    source = open_detection_source(SPEC)
    chosen = np.random.default_rng(2).choice(len(source), size=4, replace=False)
    own = checked = 0
    for drawn, row in zip(tiles(out), preview_rows(source, chosen, preset="light", size=SIZE, seed=2)):
        for tile, picture in zip(drawn, row):
            np.testing.assert_array_equal(tile, draw_picture(picture, source.classes).permute(1, 2, 0).numpy())
            colours = {PALETTE[c] for c in picture["labels"].tolist()}
            for box, label in zip(picture["boxes"].long().tolist(), picture["labels"].tolist()):
                x1, y1, x2, y2 = box  # the rectangle's bottom corners and edge, away from its name (top left)
                for y, x in [(y2, x2), (y2, x1), (y2, (x1 + x2) // 2)]:
                    if x < SIZE and y < SIZE:  # a box's colour there: its own, or a neighbour's name over it
                        assert tuple(tile[y, x]) in colours, (y, x)
                        own, checked = own + (tuple(tile[y, x]) == PALETTE[label]), checked + 1
    assert checked > 20 and own > 0.8 * checked


def test_the_cli_draws_detection_data_and_refuses_an_unknown_preset(tmp_path, capsys) -> None:
    out = tmp_path / "boxes.png"
    assert main(["augment-preview", SPEC, "--task", "detect", "--augment", "strong", "-n", "2",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    with Image.open(out) as im:
        assert im.size == ((COPIES + 1) * (128 + PAD) + PAD, 2 * (128 + PAD) + PAD)  # 128 px pictures by default
    with pytest.raises(CnnkitError, match="did you mean 'light'"):
        augment_preview(SPEC, tmp_path / "x.png", preset="lihgt")
