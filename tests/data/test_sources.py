"""Image sources: folders, CSV files, arrays and the built-ins, checked against the files and arrays they come from."""
from __future__ import annotations

import gzip
import json
import logging
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.builtin import MNIST_FILES, open_source
from cnnkit.data.sources import as_problem, from_arrays, from_csv, from_folder, infer_problem
from cnnkit.errors import CnnkitError


def write_image(path: Path, array: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def random_image(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def pil_chw(path: Path, mode: str = "RGB") -> np.ndarray:
    a = np.asarray(Image.open(path).convert(mode))
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


# ---------------------------------------------------------------- image folders

def test_folder_of_class_folders(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "animals"
    written = {}
    for rel in ["bee/1.png", "bee/0.jpg", "ant/x.png", "ant/deeper/y.png", "cow/a.bmp"]:
        written[rel] = write_image(root / rel, random_image(rng, 10))
    (root / "ant" / "notes.txt").write_text("not an image")
    write_image(root / ".hidden" / "z.png", random_image(rng, 10))  # hidden folders are no class

    src = from_folder(root)
    assert src.name == "animals"
    assert src.classes == ["ant", "bee", "cow"]
    assert src.ids == ["ant/deeper/y.png", "ant/x.png", "bee/0.jpg", "bee/1.png", "cow/a.bmp"]
    assert src.labels.tolist() == [0, 0, 1, 1, 2]
    assert src.labels.dtype == np.int64
    assert src.presplit == {}
    assert len(src) == 5
    for i, item_id in enumerate(src.ids):
        assert src.paths[i] == written[item_id]
        np.testing.assert_array_equal(src.load(i, 3).numpy(), pil_chw(written[item_id]))


def test_train_val_test_folders_are_given_splits(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "set"
    layout = {"train/a": 4, "train/b": 3, "val/a": 2, "val/b": 2, "test/b": 1, "test/a": 2}
    for folder, n in layout.items():
        for i in range(n):
            write_image(root / folder / f"{i}.png", random_image(rng, 8))
    src = from_folder(root)
    assert src.classes == ["a", "b"]
    assert set(src.presplit) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        idx = src.presplit[split]
        ids = [src.ids[i] for i in idx]
        assert all(i.startswith(split + "/") for i in ids)
        expected = sorted(f"{split}/{c}/{i}.png" for c in "ab" for i in range(layout[f"{split}/{c}"]))
        assert sorted(ids) == expected
        for i in idx:  # the label is the class folder's name, whatever the split
            assert src.classes[src.labels[i]] == src.ids[i].split("/")[1]
    all_idx = np.concatenate(list(src.presplit.values()))
    assert sorted(all_idx.tolist()) == list(range(len(src)))


def test_class_only_in_val_still_gets_its_index(tmp_path):
    rng = np.random.default_rng(3)
    for rel in ["train/a/0.png", "train/b/0.png", "val/a/0.png", "val/c/0.png"]:
        write_image(tmp_path / "s" / rel, random_image(rng, 8))
    src = from_folder(tmp_path / "s")
    assert src.classes == ["a", "b", "c"]
    assert src.classes[src.labels[src.ids.index("val/c/0.png")]] == "c"


@pytest.mark.parametrize("case, message", [
    ("missing", "data folder not found"),
    ("empty", "no class sub-folders"),
    ("no_images", "class 'b' has no images"),
    ("single", "only one class ('a')"),
])
def test_folder_errors(tmp_path, case, message):
    rng = np.random.default_rng(4)
    root = tmp_path / case
    if case != "missing":
        root.mkdir()
    if case == "no_images":
        write_image(root / "a" / "0.png", random_image(rng, 8))
        (root / "b").mkdir()
        (root / "b" / "readme.txt").write_text("x")
    if case == "single":
        for i in range(3):
            write_image(root / "a" / f"{i}.png", random_image(rng, 8))
    with pytest.raises(CnnkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_folder(root)


# ---------------------------------------------------------------- corrupt files in a folder

def test_corrupt_files_are_skipped_with_a_warning(make_image_folder, caplog):
    root = make_image_folder({"a": 10, "b": 10})
    png = (root / "a" / "0.png").read_bytes()
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "noise.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    (root / "b" / "cut.png").write_bytes(png[: len(png) // 2])
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        src = open_source(str(root), max_bad_fraction=0.2)
    assert len(src) == 20
    assert not any(i.endswith(("empty.png", "noise.jpg", "cut.png")) for i in src.ids)
    warnings = [r for r in caplog.records if r.name == "cnnkit" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "3 unreadable" in text
    for name in ("a/empty.png", "b/noise.jpg", "b/cut.png"):
        assert name in text
    assert "empty file" in text


def test_too_many_corrupt_files_is_an_error(make_image_folder):
    root = make_image_folder({"a": 4, "b": 4})
    for i in range(3):
        (root / "a" / f"bad{i}.png").write_bytes(b"xx")
    with pytest.raises(CnnkitError, match=r"3 of 11 images are unreadable .*max_bad_fraction") as err:
        open_source(str(root), max_bad_fraction=0.1)
    assert "a/bad0.png" in str(err.value)
    src = open_source(str(root), max_bad_fraction=0.5)  # the same folder, with a looser limit
    assert len(src) == 8


def test_skipping_corrupt_files_that_empties_a_class_is_an_error(make_image_folder):
    root = make_image_folder({"a": 20})
    (root / "b").mkdir()
    (root / "b" / "only.png").write_bytes(b"")  # 1 bad of 21: under the limit, but class b is left empty
    with pytest.raises(CnnkitError, match="class 'b' has no images"):
        open_source(str(root), max_bad_fraction=0.1)


# ---------------------------------------------------------------- CSV

def test_csv_paths_are_relative_to_the_csv(tmp_path):
    rng = np.random.default_rng(5)
    lists = tmp_path / "lists"
    a = write_image(lists / "img" / "one.png", random_image(rng, 9))
    b = write_image(tmp_path / "other" / "two.png", random_image(rng, 9))
    c = write_image(lists / "three.jpg", random_image(rng, 9))
    csv_path = lists / "labels.csv"
    csv_path.write_text("path,label,extra\nimg/one.png,zebra,1\n../other/two.png,ant,2\nthree.jpg,zebra,3\n")
    src = from_csv(csv_path)
    assert src.name == "labels"
    assert src.classes == ["ant", "zebra"]
    assert src.ids == ["img/one.png", "../other/two.png", "three.jpg"]
    assert src.labels.tolist() == [1, 0, 1]
    assert [p.resolve() for p in src.paths] == [a.resolve(), b.resolve(), c.resolve()]
    np.testing.assert_array_equal(src.load(1, 3).numpy(), pil_chw(b))


def test_csv_with_spaces_and_a_byte_order_mark(tmp_path):
    rng = np.random.default_rng(6)
    write_image(tmp_path / "x.png", random_image(rng, 8))
    write_image(tmp_path / "y.png", random_image(rng, 8))
    (tmp_path / "excel.csv").write_text("path , label\n x.png , cat\ny.png,dog\n", encoding="utf-8-sig")
    src = from_csv(tmp_path / "excel.csv")
    assert src.ids == ["x.png", "y.png"] and src.classes == ["cat", "dog"]


@pytest.mark.parametrize("text, message", [
    ("file,class\nx.png,a\n", "the header must be 'path,label'"),
    ("path,kind\nx.png,a\n", "row 2, column 'kind': 'a' is not a finite number"),
    ("path,size\nx.png,nan\n", "row 2, column 'size': 'nan' is not a finite number"),
    ("path,size\nx.png,3\nx.png,3\n", "target 'size' has the same value on every image"),
    ("", "the header must be 'path,label'"),
    ("path,label\n", "no rows under the header"),
    ("path,label\nnope.png,a\nx.png,b\n", "1 listed file(s) do not exist, e.g. 'nope.png'"),
    ("path,label\nx.png,a\nx.png,a\n", "only one class ('a')"),
])
def test_csv_errors(tmp_path, text, message):
    write_image(tmp_path / "x.png", random_image(np.random.default_rng(7), 8))
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(CnnkitError) as err:
        from_csv(tmp_path / "list.csv")
    assert message in str(err.value)


def test_csv_multilabel_cells_split_on_semicolons(tmp_path):
    rng = np.random.default_rng(8)
    for name in "abcd":
        write_image(tmp_path / f"{name}.png", random_image(rng, 8))
    (tmp_path / "tags.csv").write_text("path,label\na.png,cat;dog\nb.png,dog\nc.png,\nd.png, bird ; cat\n")
    src = from_csv(tmp_path / "tags.csv")
    assert src.problem == "multilabel" and src.classes == ["bird", "cat", "dog"]
    assert src.targets.tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0], [1, 1, 0]]  # an empty cell: no label
    assert src.target_tensor(np.array([3, 0])).tolist() == [[1, 1, 0], [0, 1, 1]]
    assert infer_problem(src) == "multilabel"


def test_csv_regression_scalar_and_vector_targets(tmp_path):
    rng = np.random.default_rng(9)
    for name in "abc":
        write_image(tmp_path / f"{name}.png", random_image(rng, 8))
    (tmp_path / "age.csv").write_text("path,age\na.png,31\nb.png,2.5\nc.png,-4e1\n")
    src = from_csv(tmp_path / "age.csv")
    assert (src.problem, src.classes, src.targets[:, 0].tolist()) == ("regression", ["age"], [31.0, 2.5, -40.0])
    (tmp_path / "box.csv").write_text("path,x,y,size\na.png,1,2,3\nb.png,4,5,6\nc.png,7,8,10\n")
    src = from_csv(tmp_path / "box.csv")
    assert src.classes == ["x", "y", "size"] and src.targets.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 10]]
    assert src.label_text(2) == "7;8;10"


def test_single_labels_become_the_targets_a_forced_problem_needs(tmp_path):
    labels = np.array([0, 1, 2, 1])
    src = from_arrays(np.zeros((4, 8, 8), np.uint8), labels, ["1.5", "3", "10"])
    assert infer_problem(src) == "multiclass"
    assert as_problem(src, "multilabel").targets.tolist() == np.eye(3)[labels].tolist()
    assert as_problem(src, "regression").targets[:, 0].tolist() == [1.5, 3.0, 10.0, 3.0]  # numeric class names
    two = from_arrays(np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 1]), ["no", "yes"])
    assert infer_problem(two) == "binary" and as_problem(two, "multiclass") is two
    with pytest.raises(CnnkitError, match="--task binary needs exactly 2 classes"):
        as_problem(src, "binary")
    with pytest.raises(CnnkitError, match="regression needs numeric labels"):
        as_problem(two, "regression")
    multi = from_arrays(np.zeros((2, 8, 8), np.uint8), np.array([[1, 0], [1, 1]]), ["a", "b"], problem="multilabel")
    with pytest.raises(CnnkitError, match="holds multilabel targets; train it with --task multilabel"):
        as_problem(multi, "multiclass")


def test_array_targets_are_checked():
    with pytest.raises(CnnkitError, match="multilabel targets must be 0/1 rows"):
        from_arrays(np.zeros((2, 8, 8), np.uint8), np.array([[0.5, 1], [1, 0]]), problem="multilabel")
    with pytest.raises(CnnkitError, match="label '1' is on no image"):
        from_arrays(np.zeros((2, 8, 8), np.uint8), np.array([[1, 0], [1, 0]]), problem="multilabel")
    with pytest.raises(CnnkitError, match="regression targets must be finite"):
        from_arrays(np.zeros((2, 8, 8), np.uint8), np.array([1.0, np.inf]), problem="regression")


def test_csv_not_found(tmp_path):
    with pytest.raises(CnnkitError, match="CSV file not found"):
        open_source(str(tmp_path / "absent.csv"))


# ---------------------------------------------------------------- arrays

def test_arrays_n_h_w():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 256, (6, 5, 7), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    src = from_arrays(x, y)
    assert src.arrays.shape == (6, 1, 5, 7) and src.arrays.dtype == torch.uint8
    np.testing.assert_array_equal(src.arrays[:, 0].numpy(), x)
    assert src.classes == ["0", "1", "2"] and src.ids == [f"#{i}" for i in range(6)]
    np.testing.assert_array_equal(src.load(2, 3).numpy(), np.repeat(x[2][None], 3, axis=0))


def test_arrays_channels_first_and_last_agree():
    rng = np.random.default_rng(9)
    nchw = rng.integers(0, 256, (4, 3, 6, 5), dtype=np.uint8)
    y = np.array([0, 1, 0, 1])
    a = from_arrays(nchw, y)
    b = from_arrays(np.ascontiguousarray(nchw.transpose(0, 2, 3, 1)), y)  # (N, H, W, C)
    c = from_arrays(torch.from_numpy(nchw), torch.from_numpy(y))
    for s in (a, b, c):
        np.testing.assert_array_equal(s.arrays.numpy(), nchw)


def test_arrays_alpha_is_dropped():
    rng = np.random.default_rng(10)
    x = rng.integers(0, 256, (2, 4, 4, 4), dtype=np.uint8)  # (N, C=4, H, W)
    src = from_arrays(x, np.array([0, 1]))
    np.testing.assert_array_equal(src.arrays.numpy(), x[:, :3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arrays_float_in_unit_range(dtype):
    rng = np.random.default_rng(11)
    k = rng.integers(0, 256, (5, 4, 4))
    k[0, 0, :2] = 0, 255
    src = from_arrays((k / 255.0).astype(dtype), np.array([0, 1, 0, 1, 0]))  # k/255 → exactly k
    np.testing.assert_array_equal(src.arrays[:, 0].numpy(), k)
    x = rng.random((2, 3, 5, 5)).astype(dtype)  # anything in [0, 1]: the nearest of the 256 levels
    got = from_arrays(x, np.array([0, 1])).arrays.numpy().astype(np.float64)
    assert np.abs(got - x.astype(np.float64) * 255).max() <= 0.5 + 1e-4


def test_arrays_rgb_to_grey_matches_pil():
    rng = np.random.default_rng(12)
    x = rng.integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    src = from_arrays(x, np.array([0, 1, 1]))
    for i in range(3):
        expected = np.asarray(Image.fromarray(x[i]).convert("L"))
        np.testing.assert_array_equal(src.load(i, 1)[0].numpy(), expected)


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((3, 4, 4), np.uint8), np.array([0, 1]), "3 images but 2 labels"),
    (np.zeros((2, 4, 4), np.uint8), np.array([0.0, 1.0]), "non-negative integer"),
    (np.zeros((2, 4, 4), np.uint8), np.array([-1, 1]), "non-negative integer"),
    (np.zeros((2, 1, 1, 4, 4), np.uint8), np.array([0, 1]), "must be (N, H, W) or (N, C, H, W)"),
    (np.zeros((2, 4, 4), np.uint8), np.array([0, 0]), "only one class"),
    (np.full((2, 4, 4), 200.0), np.array([0, 1]), "float images must be in [0, 1]"),
    (np.full((2, 4, 4), 300, np.int64), np.array([0, 1]), "integer images must be in [0, 255]"),
])
def test_arrays_errors(images, labels, message):
    with pytest.raises(CnnkitError) as err:
        from_arrays(images, labels)
    assert message in str(err.value)


def test_arrays_more_labels_than_class_names():
    with pytest.raises(CnnkitError, match="labels go up to 2 but only 2 class names"):
        from_arrays(np.zeros((3, 4, 4), np.uint8), np.array([0, 1, 2]), ["a", "b"])


# ---------------------------------------------------------------- built-ins

def test_digits_equals_scikit_learn():
    from sklearn.datasets import load_digits

    d = load_digits()
    src = open_source("digits")
    assert src.name == "digits" and len(src) == 1797
    assert src.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(src.labels, d.target)
    assert src.arrays.shape == (1797, 1, 8, 8)
    np.testing.assert_array_equal(src.arrays[:, 0].numpy(), np.round(d.images * 255 / 16).astype(np.uint8))
    assert src.arrays.max() == 255  # grey level 16 is white


def write_idx(folder: Path, name: str, array: np.ndarray, gz: bool) -> None:
    """An IDX file as LeCun's format defines it: magic (0, 0, 0x08 = ubyte, ndim), big-endian sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    folder.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(folder / f"{name}.gz", "wb") as f:
            f.write(data)
    else:
        (folder / name).write_bytes(data)


def fake_mnist(folder: Path, n_train: int, n_test: int, seed: int, gz: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, (n_train, 28, 28)), MNIST_FILES[1]: np.arange(n_train) % 10,
        MNIST_FILES[2]: rng.integers(0, 256, (n_test, 28, 28)), MNIST_FILES[3]: rng.integers(0, 10, n_test),
    }
    for name, a in arrays.items():
        write_idx(folder, name, a, gz)
    return arrays


@pytest.mark.parametrize("layout, gz", [("", True), ("", False), ("raw", True), ("MNIST/raw", False)])
def test_mnist_reads_idx_files(tmp_path, monkeypatch, layout, gz):
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "m"
    arrays = fake_mnist(root / layout if layout else root, 30, 12, seed=0, gz=gz)
    src = open_source(f"mnist:{root}")
    assert len(src) == 42
    np.testing.assert_array_equal(src.presplit["train"], np.arange(30))
    np.testing.assert_array_equal(src.presplit["test"], np.arange(30, 42))
    np.testing.assert_array_equal(src.arrays[:30, 0].numpy(), arrays[MNIST_FILES[0]])
    np.testing.assert_array_equal(src.arrays[30:, 0].numpy(), arrays[MNIST_FILES[2]])
    np.testing.assert_array_equal(src.labels, np.concatenate([arrays[MNIST_FILES[1]], arrays[MNIST_FILES[3]]]))


def test_mnist_cache_is_per_folder(tmp_path, monkeypatch):
    """Fashion-MNIST & co. reuse MNIST's file names: a second folder must not get the first one's cached files."""
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    first = fake_mnist(tmp_path / "digits", 20, 10, seed=1)
    second = fake_mnist(tmp_path / "fashion", 20, 10, seed=2)
    a = open_source(f"mnist:{tmp_path / 'digits'}")
    b = open_source(f"mnist:{tmp_path / 'fashion'}")
    np.testing.assert_array_equal(a.arrays[:20, 0].numpy(), first[MNIST_FILES[0]])
    np.testing.assert_array_equal(b.arrays[:20, 0].numpy(), second[MNIST_FILES[0]])


def test_mnist_errors(tmp_path):
    with pytest.raises(CnnkitError, match="MNIST folder not found"):
        open_source(f"mnist:{tmp_path / 'absent'}")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CnnkitError, match="no MNIST IDX files"):
        open_source(f"mnist:{tmp_path / 'emptydir'}")


def read_idx_gz(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# The official class counts of MNIST (LeCun et al.), train and t10k.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist(data_root, tmp_path, monkeypatch):
    folder = data_root / "mnist"
    if not all((folder / f"{f}.gz").is_file() for f in MNIST_FILES):
        pytest.skip(f"MNIST IDX files not found in {folder}")
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    src = open_source("mnist:" + str(folder))
    assert len(src) == 70000
    assert len(src.presplit["train"]) == 60000 and len(src.presplit["test"]) == 10000
    train, test = src.presplit["train"], src.presplit["test"]
    assert np.bincount(src.labels[train], minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(src.labels[test], minlength=10).tolist() == MNIST_TEST_COUNTS
    # the labels and pixels, item by item, against a plain reading of the gzipped IDX files
    np.testing.assert_array_equal(src.labels[train], read_idx_gz(folder / f"{MNIST_FILES[1]}.gz"))
    np.testing.assert_array_equal(src.labels[test], read_idx_gz(folder / f"{MNIST_FILES[3]}.gz"))
    np.testing.assert_array_equal(src.arrays[train, 0].numpy(), read_idx_gz(folder / f"{MNIST_FILES[0]}.gz"))
    np.testing.assert_array_equal(src.arrays[test, 0].numpy(), read_idx_gz(folder / f"{MNIST_FILES[2]}.gz"))


def test_real_hymenoptera_folders(data_root):
    folder = data_root / "hymenoptera"
    if not folder.is_dir():
        pytest.skip(f"hymenoptera not found in {data_root}")
    src = from_folder(folder)
    assert src.classes == ["ants", "bees"]
    for split in ("train", "val"):
        for k, cls in enumerate(src.classes):
            on_disk = sorted(p.name for p in (folder / split / cls).iterdir() if p.is_file())
            listed = sorted(Path(src.ids[i]).name for i in src.presplit[split] if src.labels[i] == k)
            assert listed == on_disk


# ---------------------------------------------------------------- open_source

@pytest.mark.parametrize("spec, message", [
    ("digit", "did you mean 'digits'?"),
    ("mnst", "did you mean"),
    ("synthetic-shape", "did you mean 'synthetic-shapes'?"),
])
def test_unknown_builtin_did_you_mean(spec, message):
    with pytest.raises(CnnkitError, match="data not found") as err:
        open_source(spec)
    assert message in str(err.value)


def test_a_file_that_is_not_a_csv(tmp_path):
    (tmp_path / "list.txt").write_text("path,label\n")
    with pytest.raises(CnnkitError, match="is a file but not a .csv"):
        open_source(str(tmp_path / "list.txt"))


# ---------------------------------------------------------------- hostile folders: links, pipes, odd names

def cnnkit_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cnnkit" and r.levelno == logging.WARNING]


def test_folders_named_like_images_are_not_images(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a/0.png", "a/cat.jpg/1.png", "b/0.png", "b/dog.png/x.txt"):
        path = tmp_path / "d" / name
        write_image(path, random_image(rng, 6)) if name.endswith(".png") else path.parent.mkdir(parents=True)
    src = from_folder(tmp_path / "d")
    assert src.ids == ["a/0.png", "a/cat.jpg/1.png", "b/0.png"]  # the files inside a 'cat.jpg' folder are images


def test_hidden_files_and_folders_are_left_out(tmp_path):
    """macOS's '._IMG.jpg' resource forks and Jupyter's '.ipynb_checkpoints' copies are not training images."""
    rng = np.random.default_rng(0)
    for name in ("a/0.png", "a/.ipynb_checkpoints/0.png", "b/0.png"):
        write_image(tmp_path / "d" / name, random_image(rng, 6))
    (tmp_path / "d" / "b" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert from_folder(tmp_path / "d").ids == ["a/0.png", "b/0.png"]


def test_symlinks_are_followed_once_and_loops_end(tmp_path, caplog):
    """Links to files and folders outside are read; links back to the class folder, to one of its sub-folders or
    to the data root are loops and walked no further; a second link to the same folder adds nothing; a broken
    link is skipped with a warning naming it."""
    rng = np.random.default_rng(0)
    root, outside = tmp_path / "d", tmp_path / "outside"
    for name in ("a/0.png", "a/sub/1.png", "b/0.png"):
        write_image(root / name, random_image(rng, 6))
    write_image(outside / "e.png", random_image(rng, 6))
    (root / "a" / "loop").symlink_to(root / "a")
    (root / "a" / "sub" / "back").symlink_to("..")
    (root / "a" / "up").symlink_to(root)
    (root / "b" / "extra").symlink_to(outside)
    (root / "b" / "extra2").symlink_to(outside)
    (root / "b" / "alias.png").symlink_to(outside / "e.png")
    (root / "b" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "b" / "self.png").symlink_to(root / "b" / "self.png")
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        src = from_folder(root)
    assert src.ids == ["a/0.png", "a/sub/1.png", "b/0.png", "b/alias.png", "b/extra/e.png"]
    assert src.labels.tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(src.load(3, 3).numpy(), pil_chw(outside / "e.png"))
    (warning,) = cnnkit_warnings(caplog)
    assert "skipping 2 path(s)" in warning and "b/gone.png" in warning and "b/self.png" in warning


def test_a_pipe_named_like_an_image_is_skipped_not_read(tmp_path, caplog):
    """Opening a FIFO blocks until a writer comes: the scan must never open one."""
    rng = np.random.default_rng(0)
    for name in ("a/0.png", "b/0.png"):
        write_image(tmp_path / "d" / name, random_image(rng, 6))
    os.mkfifo(tmp_path / "d" / "a" / "pipe.png")
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        src = open_source(str(tmp_path / "d"))
    assert src.ids == ["a/0.png", "b/0.png"]
    assert "a/pipe.png" in cnnkit_warnings(caplog)[0]


def non_utf8_folder(root: Path) -> Path:
    """Class folders b'c\\xe4t' (Latin-1 'cät') and 'dog'; b'c\\xe4t/caf\\xe9.png' among the files: names that are
    not UTF-8, as an old Latin-1 system writes them (Linux takes any bytes)."""
    rng = np.random.default_rng(0)
    for folder, name in [(b"c\xe4t", b"0.png"), (b"c\xe4t", b"caf\xe9.png"), (b"dog", b"0.png"), (b"dog", b"1.png")]:
        path = os.path.join(os.fsencode(root), folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(random_image(rng, 6)).save(os.fsdecode(path), format="PNG")
    return root


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux file systems take names that are not UTF-8")
def test_names_that_are_not_utf8_are_read_with_escaped_ids(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        src = from_folder(non_utf8_folder(tmp_path / "d"))
    assert src.classes == ["c\\xe4t", "dog"]
    assert src.ids == ["c\\xe4t/0.png", "c\\xe4t/caf\\xe9.png", "dog/0.png", "dog/1.png"]
    json.dumps(src.ids, ensure_ascii=False).encode("utf-8")  # JSON-safe: no lone surrogates
    assert os.fsencode(src.paths[1]).endswith(b"c\xe4t/caf\xe9.png")  # the path itself keeps the bytes
    np.testing.assert_array_equal(src.load(1, 3).numpy(), pil_chw(src.paths[1]))
    (warning,) = cnnkit_warnings(caplog)
    assert "2 file name(s) are not UTF-8" in warning and "c\\xe4t/caf\\xe9.png" in warning


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux file systems take names that are not UTF-8")
def test_train_and_evaluate_on_names_that_are_not_utf8(tmp_path, capsys):
    """End to end: split.json is UTF-8 JSON with the escaped ids, and `evaluate` finds the same items again."""
    from tests.conftest import run_cli

    data = non_utf8_folder(tmp_path / "d")
    for i in range(2, 6):  # enough for a val split
        for cls in (b"c\xe4t", b"dog"):
            Image.fromarray(random_image(np.random.default_rng(i), 6)).save(
                os.fsdecode(os.path.join(os.fsencode(data), cls, b"%d.png" % i)), format="PNG")
    code, _, err = run_cli(capsys, "-q", "train", "--data", str(data), "--model", "lenet5", "--epochs", "1",
                           "--out", str(tmp_path / "run"))
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "split.json").read_bytes().decode("utf-8"))
    ids = [i for split in record["splits"].values() for i in split["ids"]]
    assert "c\\xe4t/caf\\xe9.png" in ids and len(ids) == 12
    code, out, err = run_cli(capsys, "evaluate", str(tmp_path / "run"), "--json")
    assert code == 0, err
    assert json.loads(out)["count"] == len(record["splits"]["val"]["ids"])


@pytest.mark.parametrize("kind", ["short", "bad-crc", "bad-zlib"])
def test_a_png_that_crashes_libpng_is_skipped_naming_it(make_image_folder, caplog, monkeypatch, kind):
    """The scan (check_image) catches it with the same PNG check as read_image; torchvision never sees a PNG."""
    from tests.conftest import write_broken_png

    import cnnkit.data.images as images_module

    monkeypatch.setattr(images_module, "decode_image", lambda *a, **k: pytest.fail("torchvision decoded a PNG"))
    root = make_image_folder({"a": 10, "b": 10})
    write_broken_png(root / "b" / f"{kind}.png", kind)
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        src = open_source(str(root))
    assert len(src) == 20 and f"b/{kind}.png" not in src.ids
    (warning,) = cnnkit_warnings(caplog)
    assert f"skipping 1 unreadable image(s): b/{kind}.png (PNG " in warning
    assert src.load(0, 3).shape == (3, 12, 12)


def test_a_folder_is_scanned_and_warned_about_once_a_process_until_a_file_changes(make_image_folder, caplog,
                                                                                   monkeypatch) -> None:
    """The run, its verdict and its report open the data several times: one decode-level scan, one warning."""
    from tests.conftest import write_short_png

    import cnnkit.data.sources as sources
    from cnnkit.data.images import check_image

    root = make_image_folder({"a": 6, "b": 6})
    write_short_png(root / "a" / "short.png")
    calls = []
    monkeypatch.setattr(sources, "check_image", lambda p: calls.append(p) or check_image(p))
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        for _ in range(3):
            assert len(open_source(str(root))) == 12
    assert len(calls) == 13 and sum("skipping 1 unreadable" in r.message for r in caplog.records) == 1
    (root / "b" / "new.png").write_bytes((root / "b" / sorted(os.listdir(root / "b"))[0]).read_bytes())
    assert len(open_source(str(root))) == 13
    assert len(calls) == 27  # a new file: scanned again
