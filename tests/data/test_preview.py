"""`cnnkit augment-preview` for classification data (cnnkit.data.preview): a PNG grid of rows of 8 pictures,
each image followed by its augmented copies."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.builtin import open_source
from cnnkit.data.preview import COPIES, augment_preview
from cnnkit.data.transforms import FitSize
from cnnkit.errors import CnnkitError

SIZE, PAD = 16, 2


def tiles(path) -> np.ndarray:
    """The grid PNG → (rows, 8, SIZE, SIZE, 3), torchvision's make_grid layout (PAD pixels around each)."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    rows = (grid.shape[0] - PAD) // (SIZE + PAD)
    return np.stack([np.stack([grid[PAD + r * (SIZE + PAD): PAD + r * (SIZE + PAD) + SIZE,
                                    PAD + c * (SIZE + PAD): PAD + c * (SIZE + PAD) + SIZE] for c in range(COPIES + 1)])
                     for r in range(rows)])


def test_grid_has_a_row_per_image_and_the_images_themselves(tiny_folder, tmp_path) -> None:
    out = augment_preview(str(tiny_folder), tmp_path / "sub" / "grid.png", preset="none", n=3, size=SIZE, seed=1)
    assert out == tmp_path / "sub" / "grid.png"
    with Image.open(out) as im:
        assert im.size == ((COPIES + 1) * (SIZE + PAD) + PAD, 3 * (SIZE + PAD) + PAD)  # 8 columns, 3 rows
    got = tiles(out)
    source = open_source(str(tiny_folder))
    chosen = np.random.default_rng(1).choice(len(source), size=3, replace=False)  # the preview's choice
    for row, j in zip(got, chosen):
        base = FitSize(SIZE)(source.load(int(j), 3)).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(row[0], base)
        assert all(np.array_equal(copy, base) for copy in row[1:])  # preset "none": copies are the image


def test_the_copies_are_augmented(tiny_folder, tmp_path) -> None:
    out = augment_preview(str(tiny_folder), tmp_path / "flip.png", preset="none", n=2, size=SIZE, hflip=1.0)
    for row in tiles(out):
        assert all(np.array_equal(copy, row[0][:, ::-1]) for copy in row[1:])  # every copy mirrored


def test_n_is_capped_by_the_data_and_bad_presets_are_refused(tiny_folder, tmp_path) -> None:
    out = augment_preview(str(tiny_folder), tmp_path / "all.png", preset="none", n=50, size=SIZE)
    assert tiles(out).shape[0] == 12  # the folder has 12 images
    with pytest.raises(CnnkitError, match="did you mean 'standard'"):
        augment_preview(str(tiny_folder), tmp_path / "x.png", preset="standart")
