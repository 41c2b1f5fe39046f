"""Stratified seeded splits, given split folders, and the split.json record that pins them."""
from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.sources import from_arrays, from_folder, subset
from cnnkit.data.split import indices_from_record, make_split, split_hash, split_record, write_split
from cnnkit.errors import CnnkitError


def labelled(counts: list[int], seed: int = 0):
    """An in-memory source with counts[k] items of class k, in a shuffled order."""
    y = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(y)
    return from_arrays(np.zeros((len(y), 4, 4), np.uint8), y)


def assert_partition(split: dict, n: int) -> None:
    parts = [np.asarray(split[k]) for k in ("train", "val", "test")]
    for p in parts:
        assert len(np.unique(p)) == len(p)
    joined = np.concatenate(parts)
    assert len(joined) == n and sorted(joined.tolist()) == list(range(n))  # disjoint and covering


@pytest.mark.parametrize("counts", [[100, 60, 30, 13], [50, 50], [7, 9, 11, 200], [20] * 6])
@pytest.mark.parametrize("val, test", [(0.15, 0.15), (0.2, 0.1), (0.1, 0.3)])
def test_stratified_proportions(counts, val, test):
    src = labelled(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class is big enough: no fallback to a random split
        split = make_split(src, val, test, seed=0)
    assert_partition(split, len(src))
    n_c = np.asarray(counts, dtype=np.float64)
    for name, fraction in (("val", val), ("test", test)):
        got = np.bincount(src.labels[split[name]], minlength=len(counts))
        assert np.abs(got - fraction * n_c).max() <= 1 + 1e-9, (name, got, fraction * n_c)
    # train is what is left: two roundings of at most one item each
    got = np.bincount(src.labels[split["train"]], minlength=len(counts))
    assert np.abs(got - (1 - val - test) * n_c).max() <= 2 + 1e-9
    assert abs(len(split["test"]) - test * len(src)) <= 1 and abs(len(split["val"]) - val * len(src)) <= 1


def test_seeded_determinism():
    src = labelled([40, 30, 30])
    a, b, c = make_split(src, seed=7), make_split(src, seed=7), make_split(src, seed=8)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(a[k], b[k])
        assert np.all(np.diff(a[k]) > 0)  # sorted indices
    assert any(not np.array_equal(a[k], c[k]) for k in ("train", "val", "test"))


def test_small_class_falls_back_to_a_random_split():
    src = labelled([30, 30, 1])
    with pytest.warns(UserWarning, match="too small for a stratified split"):
        split = make_split(src, 0.15, 0.15, seed=0)
    assert_partition(split, len(src))


def write_tree(root, layout: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for folder, n in layout.items():
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")


def test_given_train_val_folders_are_kept_and_test_is_carved_from_train(tmp_path):
    write_tree(tmp_path, {"train/a": 40, "train/b": 20, "val/a": 10, "val/b": 10})
    src = from_folder(tmp_path)
    split = make_split(src, val=0.15, test=0.15, seed=0)
    assert_partition(split, len(src))
    np.testing.assert_array_equal(np.sort(split["val"]), np.sort(src.presplit["val"]))  # val kept as given
    given_train = set(src.presplit["train"].tolist())
    assert set(split["train"].tolist()) | set(split["test"].tolist()) == given_train
    assert all(src.ids[i].startswith("train/") for i in split["test"])
    # the test share is of the whole set (80 images → 12), stratified over train's 40:20 classes
    assert len(split["test"]) == 12
    assert np.bincount(src.labels[split["test"]]).tolist() == [8, 4]


def test_given_test_folder_is_kept_and_val_is_carved_from_train(tmp_path):
    write_tree(tmp_path, {"train/a": 30, "train/b": 30, "test/a": 5, "test/b": 5})
    src = from_folder(tmp_path)
    split = make_split(src, val=0.2, test=0.15, seed=0)
    assert_partition(split, len(src))
    np.testing.assert_array_equal(np.sort(split["test"]), np.sort(src.presplit["test"]))
    assert len(split["val"]) == 12 and np.bincount(src.labels[split["val"]]).tolist() == [6, 6]
    assert all(src.ids[i].startswith("train/") for i in split["val"])


def test_given_train_val_test_folders_are_all_kept(tmp_path):
    write_tree(tmp_path, {"train/a": 4, "train/b": 4, "val/a": 2, "val/b": 2, "test/a": 3, "test/b": 1})
    src = from_folder(tmp_path)
    split = make_split(src, seed=0)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(np.sort(split[k]), np.sort(src.presplit[k]))


@pytest.mark.parametrize("val, test, message", [
    (0.5, 0.5, "sum below 1"),
    (-0.1, 0.2, "in [0, 1)"),
    (0.1, 1.0, "in [0, 1)"),
    (0.1, 0.0, "test fraction must be above 0"),
])
def test_bad_fractions(val, test, message):
    with pytest.raises(CnnkitError) as err:
        make_split(labelled([10, 10]), val, test)
    assert message in str(err.value)


def test_val_may_be_empty():
    src = labelled([20, 20])
    split = make_split(src, val=0.0, test=0.2, seed=0)
    assert len(split["val"]) == 0 and len(split["test"]) == 8
    assert_partition(split, len(src))


def test_split_hash_is_sha256_of_sorted_lines():
    ids, labels = ["b.png", "a.png", "c.png"], [1, 0, 1]
    expected = hashlib.sha256(b"a.png\t0\nb.png\t1\nc.png\t1").hexdigest()
    assert split_hash(ids, labels) == expected
    assert split_hash(ids[::-1], labels[::-1]) == expected  # order does not matter
    assert split_hash(ids, [1, 1, 1]) != expected  # a changed label does
    assert split_hash(ids[:2], labels[:2]) != expected  # and a missing item


def test_record_round_trip_and_changed_data(tmp_path):
    src = labelled([30, 20, 10])
    split = make_split(src, seed=3)
    record = split_record(src, split, seed=3, fractions={"val": 0.15, "test": 0.15})
    write_split(tmp_path / "split.json", record)
    loaded = json.loads((tmp_path / "split.json").read_text())
    assert loaded == record and loaded["classes"] == src.classes and loaded["seed"] == 3
    for name in ("train", "val", "test"):
        entry = loaded["splits"][name]
        assert entry["count"] == len(split[name])
        assert entry["ids"] == [src.ids[i] for i in split[name]]
        assert entry["sha256"] == split_hash(entry["ids"], entry["labels"])
        np.testing.assert_array_equal(indices_from_record(src, loaded, name), split[name])

    # the same items in another order (new files sort in between): found by id
    order = np.random.default_rng(0).permutation(len(src))
    shuffled = subset(src, order)
    for name in ("train", "test"):
        idx = indices_from_record(shuffled, loaded, name)
        assert [shuffled.ids[i] for i in idx] == loaded["splits"][name]["ids"]

    # a label changed since training
    changed = labelled([30, 20, 10])
    victim = split["test"][0]
    changed.labels[victim] = (changed.labels[victim] + 1) % 3
    with pytest.raises(CnnkitError, match="test split's labels changed"):
        indices_from_record(changed, loaded, "test")
    np.testing.assert_array_equal(indices_from_record(changed, loaded, "train"), split["train"])  # train unaffected

    # an item gone
    kept = np.setdiff1d(np.arange(len(src)), [split["val"][1]])
    with pytest.raises(CnnkitError, match=r"val split lists 1 item\(s\) no longer in the data"):
        indices_from_record(subset(src, kept), loaded, "val")


def test_the_hash_covers_regression_targets():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    values = rng.normal(size=(40, 2))
    src = from_arrays(images, values, ["x", "y"], problem="regression")
    split = make_split(src, 0.2, 0.2, seed=0)
    record = split_record(src, split, 0, {"val": 0.2, "test": 0.2})
    assert indices_from_record(src, record, "val").tolist() == split["val"].tolist()
    i = int(split["val"][0])
    t = src.targets[i]  # float32, as stored
    assert record["splits"]["val"]["labels"][0] == f"{t[0]:.7g};{t[1]:.7g}"
    changed = values.copy()
    changed[i, 1] += 1.0  # one target of one val image
    with pytest.raises(CnnkitError, match="labels changed"):
        indices_from_record(from_arrays(images, changed, ["x", "y"], problem="regression"), record, "val")
