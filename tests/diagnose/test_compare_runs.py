"""`cnnkit compare RUN RUN ...`: the final metrics side by side, the config keys that differ, the verdicts, the curves
overlaid; a table on stdout, compare.html (the plot embedded) and compare.json; a folder that is not a run refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.conftest import run_cli

from cnnkit.diagnose.compare_runs import compare_runs
from cnnkit.errors import CnnkitError


def _run(root: Path, name: str, lr: float, task: str = "multiclass", metric: str = "accuracy",
         verdict: str | None = "good fit") -> Path:
    """A run folder as `cnnkit train` leaves it: config.yaml, history.csv and diagnosis.json."""
    run = root / name
    run.mkdir(parents=True)
    config = {"data": {"source": "digits"}, "model": {"name": "lenet5", "options": {}},
              "train": {"epochs": 3, "lr": lr, "optimizer": "adam"}, "task": task, "out": str(run)}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [f"epoch,train_loss,train_{metric},val_loss,val_{metric},lr"]
    lines += [f"{e},{1 / e:.3f},{0.5 + e / 10 + lr:.3f},{1.2 / e:.3f},{0.4 + e / 10:.3f},{lr}" for e in (1, 2, 3)]
    (run / "history.csv").write_text("\n".join(lines) + "\n")
    if verdict:
        (run / "diagnosis.json").write_text(json.dumps({"verdict": {"label": verdict}}))
    return run


def test_three_runs_give_the_table_page_and_json(tmp_path: Path, capsys) -> None:
    runs = [_run(tmp_path, "a", 0.001), _run(tmp_path, "b", 0.01, verdict="high variance"),
            _run(tmp_path, "c", 0.01, task="regression", metric="mae", verdict=None)]
    out = tmp_path / "cmp"
    code, printed, _ = run_cli(capsys, "compare", *map(str, runs), "--out", str(out))
    assert code == 0 and printed.splitlines()[-1] == str(out / "compare.html")
    table = printed.splitlines()
    assert table[0].split() == ["a", "b", "c"]
    assert next(line for line in table if line.startswith("train.lr")).split() == ["train.lr", "0.001", "0.01", "0.01"]
    assert next(line for line in table if line.startswith("verdict")).split() == ["verdict", "good", "fit", "high",
                                                                                     "variance"]
    assert not any(line.startswith(("train.optimizer", "out ")) for line in table)  # equal, or ignored
    result = json.loads((out / "compare.json").read_text())
    assert result["common_metrics"] == ["train_loss", "val_loss"]  # the classifier's accuracy is not the regressor's
    assert result["config_differences"] == {"task": ["multiclass", "multiclass", "regression"],
                                            "train.lr": [0.001, 0.01, 0.01]}
    assert [r["final"]["val_loss"] for r in result["runs"]] == [0.4, 0.4, 0.4]
    assert result["runs"][0]["final"]["val_accuracy"] == 0.7 and result["runs"][2]["final"]["val_mae"] == 0.7
    page = (out / "compare.html").read_text()
    assert "data:image/png;base64," in page and "train.lr" in page and "high variance" in page
    assert (out / "compare.png").stat().st_size > 1000
    code, printed, _ = run_cli(capsys, "compare", *map(str, runs[:2]), "--out", str(out), "--json")
    assert code == 0 and json.loads(printed)["config_differences"] == {"train.lr": [0.001, 0.01]}


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path, "a", 0.1)
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "compare", str(run), str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 2 and err.strip() == (f"error: {tmp_path / 'empty'} is not a run folder (no config.yaml and no "
                                         "history.csv; a run comes from `cnnkit train`)")
    with pytest.raises(CnnkitError, match="at least two run folders"):
        compare_runs([run])
