"""The split by image index of the detection, instance and segmentation recipes: seeded and disjoint with the
configured shares, given train/val/test kept, recorded in split.json and read back only while the data is the
same."""
from __future__ import annotations

import numpy as np
import pytest

from cnnkit.config import load_config
from cnnkit.errors import CnnkitError
from cnnkit.recipes.by_image import index_record, index_split, read_index_split


class Images:
    """A stand-in source: only its length matters to a split by image."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def _cfg(seed: int = 0, val: float = 0.2, test: float = 0.1, task: str = "detect"):
    return load_config(overrides={"task": task, "data": {"val": val, "test": test}, "train": {"seed": seed}})


def test_a_seeded_split_is_disjoint_complete_and_of_the_configured_shares() -> None:
    split = index_split(_cfg(), Images(100))
    assert set(split) == {"train", "val", "test"}
    joined = np.concatenate([split["train"], split["val"], split["test"]])
    assert sorted(joined.tolist()) == list(range(100))  # every image once
    assert (len(split["val"]), len(split["test"])) == (20, 10)


def test_the_same_seed_gives_the_same_split_another_seed_another() -> None:
    a, b = index_split(_cfg(seed=3), Images(60)), index_split(_cfg(seed=3), Images(60))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = index_split(_cfg(seed=4), Images(60))
    assert not np.array_equal(np.sort(a["test"]), np.sort(c["test"]))


def test_a_given_split_is_kept() -> None:
    given = {"train": np.arange(0, 30), "val": np.arange(30, 35), "test": np.arange(35, 40)}
    split = index_split(_cfg(seed=7), Images(40), given)
    for name, indices in given.items():
        assert np.array_equal(split[name], indices), name
    only_train_test = {"train": np.arange(0, 30), "test": np.arange(30, 40)}  # val is carved from the given train
    split = index_split(_cfg(val=0.2), Images(40), only_train_test)
    assert np.array_equal(split["test"], only_train_test["test"])
    assert set(split["train"]) | set(split["val"]) == set(range(30)) and len(split["val"]) == 6
    assert not set(split["train"]) & set(split["val"])


def test_the_record_round_trips_and_refuses_changed_data() -> None:
    cfg, source = _cfg(seed=5, task="segment"), Images(50)
    split = index_split(cfg, source)
    record = index_record(cfg, source, split)
    assert record["task"] == "segment" and record["seed"] == 5 and record["count"] == 50
    assert record["fractions"] == {"val": 0.2, "test": 0.1}
    assert all(isinstance(i, int) for v in record["splits"].values() for i in v)  # JSON-ready
    for name in ("train", "val", "test"):
        back = read_index_split(source, record, name)
        assert back.dtype == np.int64 and np.array_equal(back, split[name])
    with pytest.raises(CnnkitError, match="the data holds 51 images, but the run was split on 50; the data "
                                          "changed since training") as err:
        read_index_split(Images(51), record, "val")
    assert "\n" not in str(err.value)
