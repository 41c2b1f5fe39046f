"""The report sections every run can have, from the run folder's own files (diagnosis.json, history.csv,
config.yaml, split.json): the summary's headline at the last and the best epoch, the verdict and its remedies, the
overfitting alarm, the configuration, the timing, and which metric the curves show."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cnnkit.diagnose.report_page import RunInfo
from cnnkit.diagnose.report_sections import (
    alarm_section,
    config_section,
    curve_metric,
    curves_section,
    summary_section,
    timing_section,
    verdict_section,
)
from cnnkit.runs.card import ModelCard

VERDICT = {"label": "high variance", "metric": "accuracy", "train_error": 0.02, "val_error": 0.2, "bias": 0.02,
           "variance": 0.18, "remedies": ["more data <or augmentation>", "stronger regularisation"],
           "note": "val set of 40 images"}
HISTORY = ("epoch,train_loss,val_loss,train_accuracy,val_accuracy,time\n"
           "1,1.0,0.9,0.5,0.55,2.0\n2,0.6,0.5,0.8,0.82,4.0\n3,0.3,0.7,0.95,0.8,2.0\n")


def _info(path: Path, task: str = "multiclass", curve: str | None = None, config: dict | None = None,
          record: dict | None = None) -> RunInfo:
    card = ModelCard("lenet5", task, ["a", "b"], [1, 32, 32], [0.5], [0.5])
    record = record or {"splits": {"train": {"count": 100}, "val": {"count": 20}, "test": {"count": 20}}}
    return RunInfo(path, config or {}, record, card, path / "plots", curve)


def _cells(html: str, row: str) -> list[str]:
    """The cells of the row whose first cell is `row`."""
    match = re.search(rf"<tr><th[^>]*>{re.escape(row)}</th>(.*?)</tr>", html)
    assert match, (row, html)
    return re.findall(r"<td[^>]*>(.*?)</td>", match.group(1))


def test_summary_shows_the_verdict_the_last_and_best_epochs_and_the_next_step(tmp_path: Path) -> None:
    import json

    (tmp_path / "diagnosis.json").write_text(json.dumps({"verdict": VERDICT}))
    (tmp_path / "history.csv").write_text(HISTORY)
    html = summary_section(_info(tmp_path))
    assert '<p class="verdict" id="summary-label">high variance</p>' in html
    assert "train 0.0200 (eval mode), val 0.2000; bias 0.0200, variance 0.1800" in html
    assert "last epoch (3)" in html and "best epoch (2)" in html  # the best: the lowest val loss
    assert _cells(html, "loss") == ["0.7", "0.5"] and _cells(html, "accuracy") == ["0.8", "0.82"]
    assert "Next step:</strong> more data &lt;or augmentation&gt;" in html


def test_summary_without_files_says_what_is_missing(tmp_path: Path) -> None:
    html = summary_section(_info(tmp_path))
    assert "no verdict recorded" in html and "no history.csv" in html and "`cnnkit evaluate RUN`" in html
    (tmp_path / "history.csv").write_text("epoch,train_loss\n1,0.5\n")
    assert "records no val metric" in summary_section(_info(tmp_path))


def test_without_a_val_loss_the_best_epoch_is_the_best_value_of_the_metric(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text("epoch,train_mae,val_mae\n1,3.0,2.0\n2,2.0,1.5\n3,1.0,1.8\n")
    html = summary_section(_info(tmp_path, "regression"))
    assert "best epoch (2)" in html  # mae: lower is better
    assert _cells(html, "mae") == ["1.8", "1.5"]


def test_curve_metric_the_named_one_else_the_problems_if_logged(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "train_accuracy": 0.5, "val_accuracy": 0.5}]
    assert curve_metric(_info(tmp_path, curve="f1"), rows) == "f1"
    assert curve_metric(_info(tmp_path), rows) == "accuracy"
    assert curve_metric(_info(tmp_path, "regression"), rows) == "accuracy"  # no mae logged: the first logged
    assert curve_metric(_info(tmp_path, "regression"), [{"epoch": 1, "val_mae": 0.3}]) == "mae"


def test_curves_section_redraws_the_curves_from_history(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "history.csv").write_text(HISTORY)
    html = curves_section(_info(tmp_path))
    assert (tmp_path / "plots" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "loss and accuracy per epoch (accuracy: train and val)" in html
    assert "no history.csv" in curves_section(_info(tmp_path / "elsewhere"))


def test_verdict_section_lists_the_numbers_and_the_remedies_in_order(tmp_path: Path) -> None:
    import json

    assert "no verdict was recorded" in verdict_section(_info(tmp_path))
    (tmp_path / "diagnosis.json").write_text(json.dumps({"verdict": VERDICT}))
    html = verdict_section(_info(tmp_path))
    assert '<p class="verdict" id="verdict-label">high variance</p>' in html
    assert _cells(html, "variance") == ["0.18"] and _cells(html, "metric") == ["accuracy"]
    assert "<ol><li>more data &lt;or augmentation&gt;</li><li>stronger regularisation</li></ol>" in html
    assert "val set of 40 images" in html


def test_alarm_section_when_it_fired_and_when_not(tmp_path: Path) -> None:
    import json

    assert "no alarm was recorded" in alarm_section(_info(tmp_path))
    (tmp_path / "diagnosis.json").write_text(json.dumps({"alarm": {"fired_epoch": None, "patience": 3,
                                                                   "best_epoch": 4}}))
    html = alarm_section(_info(tmp_path))
    assert "did not fire (patience 3 epochs); the best epoch (lowest val loss) was 4" in html
    (tmp_path / "diagnosis.json").write_text(json.dumps({"alarm": {"fired_epoch": 7, "patience": 3,
                                                                   "best_epoch": 4, "stop": True}}))
    html = alarm_section(_info(tmp_path))
    assert 'id="alarm-epoch">overfitting alarm at epoch 7</p>' in html
    assert "rose for 3 epochs in a row" in html and "training stopped there" in html


def test_timing_is_training_images_over_epoch_seconds(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text(HISTORY)
    html = timing_section(_info(tmp_path))
    assert "3 epoch(s) in 8.0 s; 100 training images" in html
    assert _cells(html.replace('<td class="num">', "<td>"), "1") == ["2", "50"]  # 100 images / 2 s
    assert _cells(html.replace('<td class="num">', "<td>"), "2") == ["4", "25"]
    detection = _info(tmp_path, record={"splits": {"train": [0, 1, 2, 3], "val": [4]}})  # image indices
    assert "4 training images" in timing_section(detection)


def test_config_section_one_table_per_section(tmp_path: Path) -> None:
    config = {"task": "multiclass", "out": "runs/x", "data": {"source": "digits", "val": 0.15},
              "model": {"name": "lenet5", "options": {"activation": "gelu"}}}
    html = config_section(_info(tmp_path, config=config))
    for name in ("data", "model", "run"):
        assert f'id="config-{name}"' in html
    assert _cells(html, "source") == ["digits"] and _cells(html, "task") == ["multiclass"]
    assert _cells(html, "options") == ["{&quot;activation&quot;: &quot;gelu&quot;}"]  # as JSON


@pytest.mark.parametrize("problem", ["binary", "multilabel", "segment", "detect", "instance"])
def test_every_problem_has_a_curve_metric(tmp_path: Path, problem: str) -> None:
    from cnnkit.diagnose.report_sections import CURVE_METRICS

    assert problem in CURVE_METRICS
    assert curve_metric(_info(tmp_path, problem), [{"epoch": 1, f"val_{CURVE_METRICS[problem]}": 0.5}]) == \
        CURVE_METRICS[problem]
