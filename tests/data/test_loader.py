"""fitted_arrays: the report's and the diagnoses' image batches, from files of any sizes."""
from __future__ import annotations

import numpy as np
from PIL import Image

from cnnkit.data.builtin import open_source
from cnnkit.data.loader import fitted_arrays


def test_files_of_different_sizes_are_fitted_one_by_one(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(20, 30), (40, 25), (16, 16), (33, 50)]):
        folder = tmp_path / ("ant" if i % 2 else "bee")
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    source = open_source(str(tmp_path))
    out = fitted_arrays(source, np.arange(len(source)), 3, 16, "crop", "bicubic")
    assert out.shape == (4, 3, 16, 16) and out.dtype.is_floating_point is False
