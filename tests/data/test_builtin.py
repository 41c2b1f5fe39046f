"""Built-in datasets and `open_source` (cnnkit.data.builtin): scikit-learn's digits as they are, MNIST from IDX
files written here (plain or gzipped), synthetic-shapes' three target kinds, folders, CSVs, and the errors."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from cnnkit.data.builtin import MNIST_FILES, digits, mnist, open_source, synthetic_shapes
from cnnkit.errors import CnnkitError


def test_digits_are_scikit_learns_scaled_to_bytes() -> None:
    from sklearn.datasets import load_digits

    d, source = load_digits(), digits()
    assert len(source) == 1797 and source.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(source.labels, d.target)
    pixels = source.arrays[:, 0].numpy().astype(np.float64)  # (N, 8, 8) uint8
    np.testing.assert_array_equal(pixels, np.round(d.images * 255 / 16))
    assert open_source("digits").ids == source.ids


def _idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """An IDX file (LeCun's MNIST format): magic 0x0000 08 <ndim>, big-endian int32 dims, then the bytes."""
    data = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files_with_the_test_split(tmp_path, monkeypatch, gz: bool) -> None:
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), rng.integers(0, 256, (3, 28, 28), np.uint8)
    y_train, y_test = np.arange(10, dtype=np.uint8)[::-1].copy(), np.array([4, 8, 7], np.uint8)  # every class
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for name, array in zip(MNIST_FILES, (x_train, y_train, x_test, y_test)):
        _idx(folder / name, array, gz)
    source = mnist(tmp_path)  # found under MNIST/raw as torchvision lays it out
    assert len(source) == 13 and source.name == "mnist"
    np.testing.assert_array_equal(source.arrays[:, 0].numpy(), np.concatenate([x_train, x_test]))
    assert source.labels.tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 4, 8, 7]
    assert source.presplit["train"].tolist() == list(range(10)) and source.presplit["test"].tolist() == [10, 11, 12]
    assert any((tmp_path / "cache").rglob(MNIST_FILES[0])) == gz  # .gz files are unpacked into the cache


def test_mnist_errors(tmp_path) -> None:
    with pytest.raises(CnnkitError, match="MNIST folder not found"):
        mnist(tmp_path / "nowhere")
    with pytest.raises(CnnkitError, match="no MNIST IDX files"):
        mnist(tmp_path)


def _mnist_folder(folder: Path, n_train_labels: int = 10, test_size: int = 4, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (np.zeros((10, 4, 4), np.uint8), np.arange(n_train_labels, dtype=np.uint8) % 10,
              np.zeros((2, test_size, 4), np.uint8), np.array([1, 2], np.uint8))
    for name, array in zip(MNIST_FILES, arrays):
        _idx(folder / name, array, gz)
    return folder


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_train_labels": 9}, "train-images-idx3-ubyte holds 10 images but train-labels-idx1-ubyte 9 labels"),
    ({"test_size": 5}, "the train images are 4×4 but the test images 4×5"),
])
def test_mnist_files_that_disagree_are_one_line_errors(tmp_path, kwargs: dict, message: str) -> None:
    with pytest.raises(CnnkitError, match=message) as info:
        mnist(_mnist_folder(tmp_path / "m", **kwargs))
    assert "\n" not in str(info.value)


def test_a_damaged_gz_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    folder = _mnist_folder(tmp_path / "m", gz=True)
    gz = folder / f"{MNIST_FILES[0]}.gz"
    gz.write_bytes(gz.read_bytes()[:-6])  # cut short
    with pytest.raises(CnnkitError, match=f"{MNIST_FILES[0]}.gz: cannot unpack") as info:
        mnist(folder)
    assert "\n" not in str(info.value) and not list((tmp_path / "cache").rglob("*.tmp"))


def test_synthetic_shapes_target_kinds() -> None:
    one = synthetic_shapes("n=9,size=16")
    assert one.classes == ["circle", "square", "triangle"] and one.problem is None and len(one) == 9
    assert one.arrays.shape == (9, 3, 16, 16) and len(one.extras["boxes"]) == 9
    labels = synthetic_shapes("n=9,size=16,count=3")
    assert labels.problem == "multilabel" and labels.targets.shape == (9, 3)
    for present, kinds in zip(labels.targets, labels.extras["box_labels"]):  # multi-hot = kinds of its boxes
        assert set(np.flatnonzero(present)) == set(np.asarray(kinds).tolist())
    geometry = synthetic_shapes("n=9,size=16,target=geometry")
    assert geometry.problem == "regression" and geometry.classes == ["x", "y", "size"]
    for (x, y, size), (x1, y1, x2, y2) in zip(geometry.targets, geometry.extras["boxes"]):
        assert (x, y, size) == pytest.approx(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1))
    with pytest.raises(CnnkitError, match="unknown synthetic-shapes option 'sise'"):
        synthetic_shapes("sise=3")
    with pytest.raises(CnnkitError, match="synthetic-shapes: need n >= 3"):
        synthetic_shapes("n=1")


def test_open_source_folders_csvs_and_errors(make_image_folder, tmp_path) -> None:
    root = make_image_folder({"ant": 2, "bee": 3}, name="bugs")
    folder = open_source(str(root))
    assert folder.classes == ["ant", "bee"] and sorted(folder.labels.tolist()) == [0, 0, 1, 1, 1]
    csv = root / "list.csv"
    csv.write_text("path,label\nant/0.png,ant\nbee/1.png,bee\n")
    listed = open_source(str(csv))
    assert len(listed) == 2 and [listed.classes[k] for k in listed.labels] == ["ant", "bee"]
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(CnnkitError, match="is a file but not a .csv"):
        open_source(str(tmp_path / "x.txt"))
    with pytest.raises(CnnkitError, match="did you mean 'digits'"):
        open_source("digitz")
    with pytest.raises(CnnkitError, match="neither a folder, a CSV file nor a built-in"):
        open_source(str(tmp_path / "absent" / "folder"))
