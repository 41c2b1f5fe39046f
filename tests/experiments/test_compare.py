"""`cnnkit transfer compare`: every strategy trained on the same split and budget, the table's numbers checked
against the runs themselves (split.json, evaluate, parameter counts by hand), failures and Ctrl-C."""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnkit import api
from cnnkit.cli.app import main
from cnnkit.errors import CnnkitError
from cnnkit.experiments.compare import DEFAULT_STRATEGIES, compare_strategies
from cnnkit.models.factory import create_model
from cnnkit.recipes import runner
from cnnkit.runs.folder import load_model

DATA = "synthetic-shapes:n=90,size=32"
K = 3  # circle, square, triangle
# LeNet-5's layers by hand: c1 1→6 5×5, c3 6→16 5×5, c5 16→120 5×5, f6 120→84, output 84→K
C1, C3, C5, F6, OUT = 6 * 25 + 6, 16 * 6 * 25 + 16, 120 * 16 * 25 + 120, 120 * 84 + 84, 84 * K + K
STRATEGIES = (*DEFAULT_STRATEGIES, "auto")


@pytest.fixture(scope="module", autouse=True)
def _no_reports():
    """report.html (matplotlib figures) takes most of a tiny run's time and is not what is tested here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "write_report_quietly", lambda recipe, run_dir: None)
        yield


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lenet5 state dict trained one epoch on the shapes: the "pretrained" model the strategies start from."""
    folder = tmp_path_factory.mktemp("base")
    base = api.train(api.load_config(overrides={"data": {"source": DATA}, "model": {"name": "lenet5"},
                                                "train": {"epochs": 1}, "out": str(folder / "run")}))
    path = folder / "lenet5.pt"
    torch.save(load_model(base.run_dir)[0].state_dict(), path)
    return path


@pytest.fixture(scope="module")
def compared(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One CLI comparison of every strategy (and auto); its folder and stdout."""
    out = tmp_path_factory.mktemp("cmp") / "compare"
    cfg = out.parent / "cfg.yaml"
    cfg.write_text(f"model:\n  weights: {weights}\n")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["-q", "transfer", "compare", "--data", DATA, "--model", "lenet5", "--config", str(cfg),
                     "--strategies", ",".join(STRATEGIES), "--epochs", "1", "--out", str(out)])
    assert code == 0
    return out, stdout.getvalue()


def _rows(out: Path) -> dict[str, dict]:
    return {r["strategy"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}


def test_a_row_per_strategy_and_the_folder_printed_last(compared: tuple[Path, str]) -> None:
    out, stdout = compared
    rows = _rows(out)
    assert list(rows) == list(STRATEGIES)
    assert all(r["error"] is None and Path(r["run"]) == out / s for s, r in rows.items())
    assert stdout.splitlines()[-1] == str(out)
    assert all(s in stdout for s in STRATEGIES) and "no epochs" in stdout
    assert rows["linear-probe"]["epochs"] == 0 and rows["fine-tune"]["epochs"] == 1  # the same budget
    chosen = rows["auto"]["chosen"]
    assert chosen in ("linear-probe", "partial", "fine-tune")
    saved = (out / "auto" / "config.yaml").read_text()
    assert f"strategy: {chosen}" in saved


def test_every_run_has_the_same_split(compared: tuple[Path, str]) -> None:
    out, _ = compared
    splits = {s: json.loads((out / s / "split.json").read_text()) for s in STRATEGIES}
    first = splits["feature-extractor"]
    assert all(first["splits"][name]["count"] > 0 for name in ("train", "val"))  # a real split
    assert all(split == first for split in splits.values())


def test_trainable_parameters_by_hand(compared: tuple[Path, str]) -> None:
    out, _ = compared
    rows, total = _rows(out), C1 + C3 + C5 + F6 + OUT
    assert sum(p.numel() for p in create_model("lenet5", num_classes=K).parameters()) == total  # the hand count
    expected = {"feature-extractor": F6 + OUT, "head-only": OUT, "fine-tune": total, "linear-probe": OUT,
                "scratch": total, "partial": 16 * K + K}  # partial: 2 of 4 stages (c1, c3), pooled 16 → K
    for strategy, count in expected.items():
        assert rows[strategy]["trainable_params"] == count, strategy
        if strategy != "partial":
            assert rows[strategy]["total_params"] == total
    assert rows["partial"]["total_params"] == C1 + C3 + 16 * K + K
    assert "first 2 of 4 stages" in rows["partial"]["note"]


def test_scratch_starts_from_random_weights(compared: tuple[Path, str], weights: Path) -> None:
    out, _ = compared
    assert "weights: null" in (out / "scratch" / "config.yaml").read_text()
    assert str(weights) in (out / "fine-tune" / "config.yaml").read_text()


def test_table_matches_evaluate_csv_and_png(compared: tuple[Path, str]) -> None:
    out, _ = compared
    rows = _rows(out)
    for strategy, row in rows.items():
        metrics = api.evaluate(row["run"])
        assert row["val_accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6), strategy
        assert row["val_loss"] == pytest.approx(metrics["loss"], rel=1e-4, abs=1e-5), strategy
        assert row["train_seconds"] > 0
    with open(out / "compare.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["strategy"] for r in table] == list(rows)
    for r in table:
        assert float(r["val_accuracy"]) == pytest.approx(rows[r["strategy"]]["val_accuracy"])
        assert int(r["trainable_params"]) == rows[r["strategy"]]["trainable_params"]
    with Image.open(out / "compare.png") as png:
        assert png.format == "PNG" and png.width > 0 and png.height > 0


def test_unknown_strategy_is_one_line_with_a_suggestion(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code = main(["transfer", "compare", "--data", DATA, "--strategies", "fine-tune,feature_extractor",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "did you mean 'feature-extractor'" in err
    assert not (tmp_path / "x").exists()


def test_a_failing_strategy_is_an_error_row(weights: Path, tmp_path: Path) -> None:
    """linear-probe fits a classifier: on a regression task it fails, head-only still trains."""
    cfg = api.load_config(overrides={"data": {"source": DATA + ",target=geometry"}, "model": {"weights": str(weights)},
                                     "train": {"epochs": 1}})
    result = compare_strategies(cfg, ["linear-probe", "head-only"], tmp_path / "cmp")
    probe, head = result.rows
    assert "classifier" in probe["error"] and probe["val_accuracy"] is None and probe["trainable_params"] is None
    assert head["error"] is None and head["val_loss"] is not None
    assert [r["strategy"] for r in _rows(tmp_path / "cmp").values()] == ["linear-probe", "head-only"]
    with pytest.raises(CnnkitError, match="every strategy failed"):
        compare_strategies(cfg, ["linear-probe"], tmp_path / "cmp2")


def test_ctrl_c_keeps_the_finished_rows(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train, calls = runner.train, []

    def interrupted_second(recipe, cfg):
        calls.append(cfg.train.strategy)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(recipe, cfg)

    monkeypatch.setattr(runner, "train", interrupted_second)  # each strategy is one runner.train
    cfg = api.load_config(overrides={"data": {"source": DATA}, "model": {"weights": str(weights)}})
    result = compare_strategies(cfg, ["linear-probe", "fine-tune", "scratch"], tmp_path / "cmp")
    assert result.interrupted and calls == ["linear-probe", "fine-tune"]
    assert list(_rows(tmp_path / "cmp")) == ["linear-probe"]
    assert (tmp_path / "cmp" / "compare.png").is_file()
