"""The decoded-image cache (cnnkit.data.cache): the same pixels as fitting each file, in memory or in a memmap
file that later calls reuse, parallel decoding, one-line errors for unreadable files, the worker count."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data import cache
from cnnkit.data.cache import auto_workers, cache_folder, decoded_images, fitted_arrays
from cnnkit.data.sources import from_folder
from cnnkit.data.transforms import FitSize
from cnnkit.errors import CnnkitError


@pytest.fixture
def photos(tmp_path):
    """A folder of 2 classes × 40 PNGs of different sizes."""
    rng = np.random.default_rng(0)
    for i in range(80):
        folder = tmp_path / "photos" / ("ant" if i % 2 else "bee")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(12, 40)), int(rng.integers(12, 40))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return from_folder(tmp_path / "photos")


def test_files_are_fitted_as_fitsize_does_in_memory_and_in_parallel(photos) -> None:
    indices = np.arange(len(photos))[::-1].copy()
    out = decoded_images(photos, indices, 3, 16, "crop", "bicubic", workers=0)
    fit = FitSize(16, "crop", "bicubic")
    expected = torch.stack([fit(photos.load(int(j), 3)) for j in indices])  # (n, 3, 16, 16) uint8
    assert out.dtype == torch.uint8 and torch.equal(out, expected)
    cache._DECODED.clear()  # decode again, by a worker process this time
    assert torch.equal(decoded_images(photos, indices, 3, 16, "crop", "bicubic", workers=1), expected)
    assert torch.equal(fitted_arrays(photos, indices, 3, 16, "crop", "bicubic"), expected)


def test_over_the_budget_a_memmap_file_is_written_once_and_reused(photos, tmp_path, monkeypatch) -> None:
    indices = np.arange(len(photos))
    first = decoded_images(photos, indices, 1, 16, "resize", cache_dir=tmp_path / "c", workers=0, memory_budget=0)
    files = list((tmp_path / "c").iterdir())
    assert len(files) == 1 and files[0].suffix == ".u8" and files[0].stat().st_size == len(photos) * 16 * 16
    assert torch.equal(first, fitted_arrays(photos, indices, 1, 16, "resize"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(type(photos), "load", no_decoding)
    again = decoded_images(photos, indices, 1, 16, "resize", cache_dir=tmp_path / "c", workers=0, memory_budget=0)
    assert torch.equal(again, first)
    monkeypatch.undo()
    path = photos.paths[0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a changed file: a new key
    decoded_images(photos, indices, 1, 16, "resize", cache_dir=tmp_path / "c", workers=0, memory_budget=0)
    assert len(list((tmp_path / "c").iterdir())) == 2  # no temporary file left behind


def test_a_process_decodes_the_same_files_once(photos, monkeypatch) -> None:
    indices = np.arange(0, len(photos), 2)
    first = decoded_images(photos, indices, 3, 16, "resize", workers=0)
    monkeypatch.setattr(type(photos), "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    assert decoded_images(photos, indices, 3, 16, "resize", workers=0) is first  # the same split: remembered
    with pytest.raises(AssertionError, match="decoded"):  # another size is another key
        decoded_images(photos, indices, 3, 24, "resize", workers=0)
    monkeypatch.undo()
    path = photos.paths[0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a changed file: decoded again
    assert decoded_images(photos, indices, 3, 16, "resize", workers=0) is not first


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_file_is_a_one_line_error(photos, workers: int) -> None:
    photos.paths[5].write_bytes(b"not an image")
    with pytest.raises(CnnkitError, match=rf"^cannot decode {photos.ids[5]}: [^\n]+$"):
        decoded_images(photos, np.arange(len(photos)), 3, 16, "resize", workers=workers)


def test_in_memory_sources_are_fitted_directly() -> None:
    from cnnkit.data.builtin import open_source

    digits = open_source("digits")
    out = decoded_images(digits, np.arange(10), 1, 8, "resize")
    assert torch.equal(out, digits.arrays[:10])  # already 8×8: unchanged


def test_auto_workers_leave_a_core_to_the_main_process(monkeypatch) -> None:
    for cores, workers in [(1, 0), (2, 1), (4, 3), (64, 8)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert auto_workers() == workers


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "mine"))
    assert cache_folder() == tmp_path / "mine"
    monkeypatch.delenv("CNNKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "cnnkit"
    assert cache.available_memory() > 0
