"""The learning curve by data size: stratified nested subsets of the training split only, the same val split,
RUN's own files untouched, and the reading rule of the last two points."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from cnnkit.experiments.datacurve import check_percents, data_curve, read_data_curve, subset


def test_subsets_are_stratified_nested_and_seeded():
    labels = np.repeat([0, 1, 2], [40, 20, 10])
    train = np.arange(0, 70, 1)[::-1]  # any order
    small, half, full = (subset(train, labels, p, seed=3) for p in (10, 50, 100))
    assert np.bincount(labels[small]).tolist() == [4, 2, 1] and np.bincount(labels[half]).tolist() == [20, 10, 5]
    assert set(small) <= set(half) <= set(full) and sorted(full) == list(range(70))
    assert np.array_equal(subset(train, labels, 50, seed=3), half)
    assert not np.array_equal(subset(train, labels, 50, seed=4), half)
    assert len(subset(train, None, 25)) == 18  # no labels (regression, multilabel): a plain random share


@pytest.mark.parametrize("errors, sizes, falling", [
    ([0.5, 0.3, 0.2], [100, 200, 400], True),       # 0.1 per doubling
    ([0.5, 0.3, 0.295], [100, 200, 400], False),    # 0.005 per doubling of a 0.3 error: below 0.01
    ([0.2, 0.04, 0.035], [100, 200, 400], True),    # 0.005 of a 0.04 error: above 10 % of it
    ([0.4, 0.3, 0.32], [100, 200, 400], False),     # rising: flat
])
def test_reading_from_the_last_two_points(errors, sizes, falling):
    rows = [{"n_train": n, "val_error": e} for n, e in zip(sizes, errors)]
    reading = read_data_curve(rows)
    expected = "val error still falling: more data would help" if falling else "flat: more data unlikely to help"
    assert reading.startswith(expected), reading
    assert "one training-set size only" in read_data_curve(rows[:1])


@pytest.mark.parametrize("percents, message", [
    ([0, 50], "in (0, 100]"), ([150], "got 150"), ([], "at least one"), (["ten"], "must be numbers"),
])
def test_bad_percents(percents, message):
    with pytest.raises(CnnkitError, match=message.replace("(", r"\(").replace("]", r"\]")):
        check_percents(percents)


def test_data_curve_of_a_run(tmp_path, make_image_folder, capsys):
    from cnnkit.cli.app import main

    data = make_image_folder({"a": 16, "b": 16}, size=10)
    run = tmp_path / "run"
    assert main(["-q", "train", "--data", str(data), "--model", "lenet5", "--epochs", "1", "--out", str(run)]) == 0
    own = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}
    record = json.loads((run / "split.json").read_text())
    rows = data_curve(run, [100, 50], epochs=1)
    assert [r["percent"] for r in rows] == [50, 100]
    n = record["splits"]["train"]["count"]
    assert rows[1]["n_train"] == n and n / 2 - 1 <= rows[0]["n_train"] <= n / 2 + 1  # per class rounded
    for r in rows:
        assert set(r) >= {"percent", "n_train", "train_error", "val_error", "val_metric"}
        assert r["val_error"] == pytest.approx(1 - r["val_metric"]) and 0 <= r["train_error"] <= 1
        sub = json.loads((tmp_path / "run" / "data_curve" / f"p{r['percent']:g}" / "split.json").read_text())
        assert set(sub["splits"]["train"]["ids"]) <= set(record["splits"]["train"]["ids"])  # never val or test
        assert sub["splits"]["train"]["count"] == r["n_train"]
        assert sub["splits"]["val"] == record["splits"]["val"]  # the same val split for every size
    assert (run / "plots" / "data_curve.png").is_file()
    saved = json.loads((run / "data_curve" / "data_curve.json").read_text())
    assert saved["rows"] == rows and saved["reading"] == read_data_curve(rows)
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == digest for p, digest in own.items())  # RUN untouched
    sub = run / "data_curve" / "p50"
    assert (sub / "model.pt").is_file() and not (sub / "report.html").exists()  # a run folder, without a report
    capsys.readouterr()
