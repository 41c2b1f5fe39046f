"""K-fold cross-validation (`cnnkit train --folds K [--group-by COLUMN]`): the locked test split of a normal run
kept out of every fold, K disjoint folds that cover train+val (stratified, or grouped by a CSV column), one
ordinary run folder per fold, and folds.json with the mean and sample std of the val metrics."""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import assert_one_line_error, random_image, run_cli, write_image

from cnnkit.errors import CnnkitError
from cnnkit.experiments.folds import STD_DDOF, check_folds, fold_parts, summarize

DIGITS = ["--data", "digits", "--model", "lenet5", "--epochs", "1", "--batch-size", "128"]


def _main(*args: str) -> tuple[int, str]:
    from cnnkit.cli.app import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["-q", *args])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def digits_cv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """`cnnkit train --folds 5` on the digits, and the split.json of a normal `cnnkit train` of the same config."""
    root = tmp_path_factory.mktemp("folds")
    code, _ = _main("train", *DIGITS, "--out", str(root / "normal"))
    assert code == 0
    code, printed = _main("train", *DIGITS, "--folds", "5", "--out", str(root / "cv"))
    assert code == 0
    return root / "cv", printed, json.loads((root / "normal" / "split.json").read_text())


def _records(out: Path) -> list[dict]:
    return [json.loads((out / f"fold{i}" / "split.json").read_text()) for i in range(1, 6)]


@pytest.mark.slow  # the module's 5-fold digits run and a normal one: ~15 s on 2 cores
def test_five_ordinary_run_folders_and_the_table_printed(digits_cv: tuple[Path, str, dict]) -> None:
    out, printed, _ = digits_cv
    assert sorted(p.name for p in out.iterdir()) == ["fold1", "fold2", "fold3", "fold4", "fold5", "folds.json"]
    for i in range(1, 6):
        run = out / f"fold{i}"
        for name in ("split.json", "config.yaml", "model.pt", "history.csv", "diagnosis.json"):
            assert (run / name).is_file(), (run, name)
        assert not (run / "report.html").exists()
    lines = printed.splitlines()
    assert lines[-1] == str(out) and "5-fold cross-validation" in lines[0]
    summary = json.loads((out / "folds.json").read_text())["metrics"]
    accuracy = next(line for line in lines if line.split()[0] == "accuracy")
    assert accuracy.split() == ["accuracy", f"{summary['accuracy']['mean']:.4f}", "±",
                                f"{summary['accuracy']['std']:.4f}"]


@pytest.mark.slow  # the module's 5-fold digits run and a normal one: ~15 s on 2 cores
def test_folds_json_holds_the_mean_and_sample_std(digits_cv: tuple[Path, str, dict]) -> None:
    out = digits_cv[0]
    data = json.loads((out / "folds.json").read_text())
    assert [f["fold"] for f in data["folds"]] == [1, 2, 3, 4, 5]
    assert [f["run"] for f in data["folds"]] == [str(out / f"fold{i}") for i in range(1, 6)]
    assert {"accuracy", "loss", "f1_macro"} <= set(data["metrics"])
    for name, m in data["metrics"].items():
        values = [f[name] for f in data["folds"]]
        assert m["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert m["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert data["std_ddof"] == STD_DDOF == 1 and data["k"] == 5 and not data["interrupted"]


@pytest.mark.slow  # the module's 5-fold digits run and a normal one: ~15 s on 2 cores
def test_the_test_split_is_the_normal_one_and_in_no_fold(digits_cv: tuple[Path, str, dict]) -> None:
    out, _, normal = digits_cv
    test_ids = set(normal["splits"]["test"]["ids"])
    for record in _records(out):
        assert record["splits"]["test"] == normal["splits"]["test"]
        assert not test_ids & set(record["splits"]["train"]["ids"])
        assert not test_ids & set(record["splits"]["val"]["ids"])


@pytest.mark.slow  # the module's 5-fold digits run and a normal one: ~15 s on 2 cores
def test_the_folds_partition_train_and_val(digits_cv: tuple[Path, str, dict]) -> None:
    out, _, normal = digits_cv
    pool = set(normal["splits"]["train"]["ids"]) | set(normal["splits"]["val"]["ids"])
    vals = [set(r["splits"]["val"]["ids"]) for r in _records(out)]
    assert sum(len(v) for v in vals) == len(pool) and set().union(*vals) == pool  # disjoint, and they cover it
    for record, val in zip(_records(out), vals):
        assert set(record["splits"]["train"]["ids"]) == pool - val
        assert record["folds"]["k"] == 5


@pytest.mark.slow  # the module's 5-fold digits run and a normal one: ~15 s on 2 cores
def test_the_folds_are_stratified(digits_cv: tuple[Path, str, dict]) -> None:
    counts = np.asarray([np.bincount(r["splits"]["val"]["labels"], minlength=10) for r in _records(digits_cv[0])])
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all(), counts


def test_fold_parts_keep_groups_whole_and_stratify() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    groups = np.asarray([f"g{i // 5}" for i in range(200)], dtype=object)
    pool = np.arange(10, 200)
    parts = fold_parts(pool, 4, seed=1, labels=labels, groups=groups)
    assert np.array_equal(np.sort(np.concatenate(parts)), pool)
    owners = [{g for g in groups[p]} for p in parts]
    assert all(not owners[i] & owners[j] for i in range(4) for j in range(i + 1, 4))
    plain = fold_parts(pool, 4, seed=1, groups=groups)  # GroupKFold without labels
    assert all(not set(groups[a]) & set(groups[b]) for a in plain for b in plain if a is not b)
    assert [len(p) for p in fold_parts(pool, 5, seed=0)] == [38] * 5  # KFold: no labels, no groups


@pytest.mark.parametrize("k, message", [(1, "at least 2"), (0, "at least 2"), (2.5, "integer"), (11, "more than")])
def test_bad_fold_counts(k, message: str) -> None:
    with pytest.raises(CnnkitError, match=message):
        check_folds(k, 10)


def test_more_folds_than_groups_is_one_line() -> None:
    groups = np.asarray(["a", "b", "a", "b", "c", "c"], dtype=object)
    with pytest.raises(CnnkitError, match="needs at least 4 groups"):
        fold_parts(np.arange(6), 4, groups=groups)


def test_summary_of_folds_with_a_missing_value() -> None:
    summary = summarize([{"fold": 1, "run": "a", "x": 1.0}, {"fold": 2, "run": "b", "x": 3.0, "y": 2.0}])
    assert summary["x"]["mean"] == 2.0 and summary["x"]["std"] == pytest.approx(np.sqrt(2))
    assert summary["y"] == {"mean": 2.0, "std": None} and "fold" not in summary


def _grouped_csv(root: Path, n_groups: int = 8, per_group: int = 4) -> Path:
    """path,label,patient: each patient's images of both classes."""
    rng = np.random.default_rng(0)
    rows = ["path,label,patient"]
    for g in range(n_groups):
        for j in range(per_group):
            name = f"img/p{g}_{j}.png"
            write_image(root / name, random_image(rng, 10))
            rows.append(f"{name},{'ab'[(g + j) % 2]},p{g}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return root / "data.csv"


def _config(source: Path | str, out: Path):
    from cnnkit.config import load_config

    return load_config(overrides={"data": {"source": str(source)}, "model": {"name": "lenet5"},
                                  "train": {"epochs": 1, "batch_size": 16}, "out": str(out)})


def test_a_group_never_spans_two_folds(tmp_path: Path) -> None:
    from cnnkit import api

    csv_path = _grouped_csv(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # patients shared with the (ungrouped) test split are reported
        result = api.cross_validate(_config(csv_path, tmp_path / "cv"), folds=3, group_by="patient")
    assert len(result.folds) == 3 and result.file.is_file() and result.group_by == "patient"
    patient = {f"img/p{g}_{j}.png": f"p{g}" for g in range(8) for j in range(4)}
    records = [json.loads((tmp_path / "cv" / f"fold{i}" / "split.json").read_text()) for i in (1, 2, 3)]
    owners = [{patient[i] for i in r["splits"]["val"]["ids"]} for r in records]
    assert all(not owners[a] & owners[b] for a in range(3) for b in range(a + 1, 3))
    test = records[0]["splits"]["test"]["ids"]
    pool = set(patient) - set(test)
    assert set().union(*(set(r["splits"]["val"]["ids"]) for r in records)) == pool
    assert all(r["splits"]["test"]["ids"] == test and r["folds"]["group_by"] == "patient" for r in records)


def test_ctrl_c_keeps_the_folds_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnkit import api
    from cnnkit.recipes import runner
    from cnnkit.recipes.base import TrainResult

    real_fit, calls = runner.fit, []

    def fit_then_stop(recipe, ctx):
        calls.append(ctx.run_dir)
        return real_fit(recipe, ctx) if len(calls) == 1 else TrainResult(ctx.run_dir, [], {}, interrupted=True)

    monkeypatch.setattr(runner, "fit", fit_then_stop)
    result = api.cross_validate(_config(_grouped_csv(tmp_path / "data"), tmp_path / "cv"), folds=3)
    assert result.interrupted and len(calls) == 2 and [f["fold"] for f in result.folds] == [1]
    saved = json.loads(result.file.read_text())
    assert saved["interrupted"] and len(saved["folds"]) == 1 and "accuracy" in saved["metrics"]


@pytest.mark.parametrize("extra, fragments", [
    (["--folds", "1"], ("--folds must be an integer of at least 2", "1")),
    (["--folds", "2", "--group-by", "patient"], ("--group-by patient reads a column of a CSV", "digits")),
    (["--group-by", "patient"], ("give --folds K too",)),
    (["--folds", "3", "--resume", "runs/x"], ("--folds", "--resume")),
    (["--folds", "5000"], ("more than the 1527 train+val items",)),
])
def test_cli_refusals_are_one_line(capsys: pytest.CaptureFixture, tmp_path: Path, extra: list[str],
                                   fragments: tuple[str, ...]) -> None:
    code, out, err = run_cli(capsys, "-q", "train", *DIGITS, "--out", str(tmp_path / "cv"), *extra)
    assert code == 2
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "cv").exists()


def test_a_missing_group_column_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    csv_path = _grouped_csv(tmp_path / "data", n_groups=3, per_group=2)
    code, _, err = run_cli(capsys, "-q", "train", "--data", str(csv_path), "--model", "lenet5", "--epochs", "1",
                           "--folds", "2", "--group-by", "site", "--out", str(tmp_path / "cv"))
    assert_one_line_error(code, err, "has no column 'site'", "path,label,patient")


def test_folds_train_with_the_models_own_recipe_as_train_does() -> None:
    from cnnkit.config import load_config
    from cnnkit.experiments.folds import _prepared

    cfg = load_config(overrides={"task": "detect", "model": {"name": "ssd"}})
    _, prepared = _prepared(cfg, 3, None, {})
    assert (prepared.train.optimizer, prepared.train.lr, prepared.train.schedule) == ("adamw", 1e-3, "cosine")
    _, mine = _prepared(cfg, 3, None, {"lr": 0.05})
    assert mine.train.lr == 0.05
