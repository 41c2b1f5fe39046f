"""Shared fixtures: tiny image folders written with PIL, and the real data beside the project (or skip)."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
# `--precision auto` means fp32 in the suite (and in the CLI processes it starts): tests compare exact numbers.
# The precision tests set it themselves (tests/engine/test_precision.py).
os.environ["CNNKIT_PRECISION"] = "fp32"


def write_image(path: Path, array: np.ndarray, **save_options) -> Path:
    """Save a uint8 (H, W) or (H, W, C) array as a real image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, **save_options)
    return path


def random_image(rng: np.random.Generator, size: int = 12, channels: int = 3) -> np.ndarray:
    shape = (size, size) if channels == 1 else (size, size, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_image_folder({'cat': 6, 'dog': 6}, name='pets', ext='.png', size=12) → root folder.

    Each class gets that many distinct random RGB images named 0.png, 1.png, ... in root/<class>/.
    """
    counter = iter(range(1_000_000))

    def make(counts: dict[str, int], name: str | None = None, ext: str = ".png", size: int = 12,
             seed: int = 0) -> Path:
        root = tmp_path / (name or f"folder{next(counter)}")
        rng = np.random.default_rng(seed)
        for cls, n in counts.items():
            (root / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                write_image(root / cls / f"{i}{ext}", random_image(rng, size))
        return root

    return make


@pytest.fixture
def tiny_folder(make_image_folder) -> Path:
    """2 classes × 6 small PNGs: enough to train LeNet-5 for one epoch in well under a second."""
    return make_image_folder({"cat": 6, "dog": 6}, name="tiny")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data sets: $CNNKIT_DATA, else ../shared/data beside the repository; skips where absent."""
    root = Path(os.environ.get("CNNKIT_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set CNNKIT_DATA to the folder holding mnist/, hymenoptera/, ...)")
    return root


# ---------------------------------------------------------------- the command line, in-process

def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """main(args) → (exit status, stdout, stderr); argparse's SystemExit counts as the exit status.

    Warnings are filtered as in a plain `cnnkit` process, where Python hides DeprecationWarnings raised inside
    libraries (pytest shows them all, and main() prints every warning it is shown as `warning: ...`).
    """
    from cnnkit.cli.app import main

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0, "a bad input must give a non-zero exit status"
    assert "Traceback" not in err
    assert err.startswith("error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def randomise_batch_norms(model) -> None:
    """Give every BatchNorm2d of `model` non-trivial statistics and affine parameters (a fresh one is the
    identity in eval mode), so that a wrongly sliced channel changes the output."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
