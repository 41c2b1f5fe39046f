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


# ---------------------------------------------------------------- hand-made PNG files, whole or broken

import struct  # noqa: E402  (this section was appended; its imports stay with it)
import zlib  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BROKEN_PNGS = ("short", "long", "bad-crc", "bad-filter", "bad-zlib", "truncated")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC-32 of type + payload."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_file(width: int, height: int, raw: bytes, depth: int = 8, colour: int = 2, interlace: int = 0,
             idat_chunks: int = 1) -> bytes:
    """A PNG whose image data is zlib(`raw`) (the filtered rows, each led by its filter byte), as it is: nothing
    checks that `raw` fits the header, so it can be short or long. Split over `idat_chunks` IDAT chunks."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    packed = zlib.compress(raw)
    cut = [len(packed) * k // idat_chunks for k in range(idat_chunks + 1)]
    idats = b"".join(png_chunk(b"IDAT", packed[a:b]) for a, b in zip(cut, cut[1:]))
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + idats + png_chunk(b"IEND", b"")


def png_rows(array: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, C) array as PNG rows with filter type 0 (none)."""
    a = np.ascontiguousarray(array, dtype=np.uint8).reshape(len(array), -1)
    return b"".join(b"\x00" + row.tobytes() for row in a)


def broken_png(kind: str, width: int = 100, height: int = 100) -> bytes:
    """An RGB PNG (mid-grey) broken as `kind` says (one of BROKEN_PNGS); libpng, inside torchvision's decode_image,
    crashes the process (SIGSEGV) on 'short', 'bad-crc', 'bad-filter' and 'bad-zlib'.

    short: the zlib stream is complete but holds half the rows; long: one row too many; bad-crc: the IDAT chunk's
    CRC is wrong (the data are fine); bad-filter: row 37 has filter type 7; bad-zlib: the stream's Adler-32 is
    wrong (CRC recomputed); truncated: the file ends inside the IDAT chunk.
    """
    grey = np.full((height, width, 3), 0x80, dtype=np.uint8)
    rows, stride = png_rows(grey), 1 + width * 3
    if kind == "short":
        return png_file(width, height, rows[:stride * (height // 2)])
    if kind == "long":
        return png_file(width, height, rows + rows[:stride])
    if kind == "bad-filter":
        return png_file(width, height, rows[:37 * stride] + b"\x07" + rows[37 * stride + 1:])
    whole = png_file(width, height, rows)
    idat_end = len(whole) - 12  # IEND is the last 12 bytes
    if kind == "bad-crc":
        return whole[:idat_end - 4] + bytes(b ^ 0xFF for b in whole[idat_end - 4:idat_end]) + whole[idat_end:]
    if kind == "bad-zlib":
        packed = zlib.compress(rows)
        packed = packed[:-4] + bytes(b ^ 0xFF for b in packed[-4:])
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", packed) + png_chunk(b"IEND", b"")
    if kind == "truncated":
        return whole[:idat_end - 10]
    raise ValueError(f"unknown broken PNG kind {kind!r}; one of {BROKEN_PNGS}")


def write_broken_png(path: Path, kind: str, width: int = 100, height: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(broken_png(kind, width, height))
    return path


def write_short_png(path: Path, width: int = 100, height: int = 100) -> Path:
    """A PNG whose complete zlib stream holds half its rows: 'Not enough image data', which crashes libpng."""
    return write_broken_png(path, "short", width, height)
