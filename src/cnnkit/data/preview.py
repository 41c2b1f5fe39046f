"""`cnnkit augment-preview` for image classification data: each row one training image, then augmented copies of
it, so one sees what an augmentation preset does before training with it (segmentation data:
cnnkit.data.segmentation.preview, which moves each mask with its image)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

COPIES = 7  # augmented copies beside each image: rows of 8 pictures


def augment_preview(source: str, out: str | Path, preset: str = "standard", n: int = 16, size: int | None = None,
                    seed: int = 0, **options) -> Path:
    """A grid PNG at `out`: `n` images of classification data `source` (a SOURCE string, as `--data`), chosen
    with `seed`, each fitted to `size` (default 96) and followed by COPIES augmented copies (`preset` with
    the knob overrides `options`, as make_augment takes them)."""
    from torchvision.transforms import v2
    from torchvision.utils import save_image

    from cnnkit.data.builtin import open_source
    from cnnkit.data.transforms import FitSize, augment_ops, make_augment

    src = open_source(source)
    aug = make_augment(preset, **options)
    size = size or 96
    channels = 3 if src.arrays is None or src.arrays.shape[1] == 3 else 1
    ops = augment_ops(aug, size, channels)
    pipeline = v2.Compose(ops) if ops else v2.Identity()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    rows = []
    for j in rng.choice(len(src), size=min(n, len(src)), replace=False):
        base = FitSize(size)(src.load(int(j), channels))
        rows += [base] + [pipeline(base) for _ in range(COPIES)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.stack(rows).float() / 255.0, out, nrow=COPIES + 1, padding=2)
    return out
