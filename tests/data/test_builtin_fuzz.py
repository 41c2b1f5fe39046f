"""Fuzzing `mnist:PATH` (cnnkit.data.builtin.mnist): the four IDX files of images and labels, plain or gzipped,
with counts that agree or not, labels beyond the ten classes, any damaged IDX file (tests/data/test_idx_fuzz.py)
and damaged .gz files. Each folder is a source or a one-line error."""
from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st
from tests.data.test_idx_fuzz import idx_file
from tests.fuzzing import SIZES, clean, fuzz, mix

from cnnkit.data.builtin import MNIST_FILES, mnist


@st.composite
def images(draw: st.DrawFn, n: int) -> bytes:
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return struct.pack(">BBBBIII", 0, 0, 8, 3, n, h, w) + draw(st.binary(min_size=n * h * w, max_size=n * h * w))


@st.composite
def labels(draw: st.DrawFn, n: int) -> bytes:
    """n labels; for n >= 10 mostly every class 0..9 once, then any (MNIST's source checks that each has images)."""
    every = list(draw(st.permutations(range(10)))) if n >= 10 and draw(st.integers(0, 5)) else []
    rest = draw(st.lists(mix((8, st.integers(0, 9)), (1, st.integers(0, 255))), min_size=n - len(every),
                         max_size=n - len(every)))
    return struct.pack(">BBBBI", 0, 0, 8, 1, n) + bytes(every + rest)


@st.composite
def folder(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    """The four files (train images, train labels, test images, test labels) and whether they are gzipped."""
    n_train, n_test = draw(mix((4, st.integers(10, 12)), (1, st.integers(0, 9)))), draw(st.integers(0, 3))
    files = []
    for kind, n in zip((images, labels, images, labels), (n_train, n_train, n_test, n_test)):
        files.append(draw(mix((10, kind(n)), (1, kind(draw(st.integers(0, 6)))), (1, idx_file()))))
    gz = draw(st.booleans())
    if gz:
        files = [draw(mix((10, st.just(gzip.compress(f))), (1, st.just(gzip.compress(f)[:-5])),
                          (1, st.binary(max_size=30)))) for f in files]
    return files, gz


def read(case: tuple[list[bytes], bool], cache: Path) -> None:
    files, gz = case
    with tempfile.TemporaryDirectory() as root:
        for name, data in zip(MNIST_FILES, files):
            (Path(root) / (f"{name}.gz" if gz else name)).write_bytes(data)
        source = clean(mnist, root)
        assert source is None or len(source) == len(source.labels) and set(source.presplit) == {"train", "test"}


@SIZES
def test_mnist_folder_fuzz(examples: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    fuzz(examples, folder(), lambda case: read(case, tmp_path))
