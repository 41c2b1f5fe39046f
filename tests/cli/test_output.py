"""How the CLI prints results: train's val metrics, verdict and the run folder last (130 when interrupted); metrics
as JSON or as a line of scalars with a table per class; one line per prediction of each task."""
from __future__ import annotations

import json
import types
from pathlib import Path

from cnnkit.cli.output import TRAIN_METRICS, prediction_line, print_metrics, report_train


def _result(**fields) -> types.SimpleNamespace:
    base = {"val": {}, "verdict": None, "interrupted": False, "run_dir": Path("runs/x")}
    return types.SimpleNamespace(**{**base, **fields})


def test_report_train_prints_the_known_val_metrics_in_order_then_the_folder(capsys) -> None:
    val = {"loss": 0.25, "f1_macro": 0.5, "accuracy": 0.875, "count": 40, "per_class": {"a": 1.0}}
    assert report_train(_result(val=val)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["val accuracy 0.8750  val f1_macro 0.5000  val loss 0.2500", "runs/x"]
    assert TRAIN_METRICS.index("accuracy") < TRAIN_METRICS.index("loss")


def test_report_train_shows_the_verdict(capsys) -> None:
    from cnnkit.diagnose.verdict import format_verdict

    verdict = {"label": "high bias", "metric": "accuracy", "train_error": 0.3, "val_error": 0.32, "bias": 0.3,
               "variance": 0.02, "remedies": ["a bigger model"], "note": "train error in eval mode"}
    report_train(_result(verdict=types.SimpleNamespace(as_dict=lambda: verdict)))
    out = capsys.readouterr().out
    assert out == format_verdict(verdict) + "\nruns/x\n"
    assert out.startswith("verdict: high bias  (bias 0.3000, variance 0.0200;") and "  1. a bigger model" in out


def test_an_interrupted_run_says_how_to_resume_and_exits_130(capsys) -> None:
    verdict = types.SimpleNamespace(as_dict=lambda: {"label": "never shown"})
    assert report_train(_result(interrupted=True, verdict=verdict)) == 130
    out, err = capsys.readouterr()
    assert out == "runs/x\n" and "never shown" not in out
    assert err.strip() == ("interrupted: the weights so far are in runs/x; `cnnkit train --resume runs/x` goes on "
                           "from the last whole epoch")


def test_print_metrics_as_json(capsys) -> None:
    metrics = {"accuracy": 0.5, "per_class": {"a": {"f1": 0.5}}}
    print_metrics(metrics, as_json=True)
    assert json.loads(capsys.readouterr().out) == metrics


def test_print_metrics_scalars_then_a_flat_table_then_a_nested_one(capsys) -> None:
    metrics = {"miou": 0.123456, "count": 4, "split": "val",
               "per_class_iou": {"soil": 0.9, "weed": None, "n": 3},
               "per_class": {"tabby": {"recall": 0.5, "support": 10}, "beagle": {"recall": None, "support": 2}}}
    print_metrics(metrics, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "miou 0.1235  count 4  split val"
    assert lines[1] == "per_class_iou  soil 0.9000  weed n/a  n 3"
    assert lines[2] == ""
    assert lines[3].split() == ["class", "recall", "support"]  # "per_" dropped from the table's name
    assert lines[4].split() == ["tabby", "0.5000", "10"] and lines[5].split() == ["beagle", "n/a", "2"]
    assert lines[3].index("recall") + len("recall") == lines[4].index("0.5000") + len("0.5000")  # right-aligned
    assert len({len(line) for line in lines[3:6]}) == 1


def test_prediction_line_of_each_task() -> None:
    assert prediction_line({"path": "a.png", "predictions": [{"label": "cat", "probability": 0.91234},
                                                             {"label": "dog", "probability": 0.05}]}) == \
        "a.png  cat 0.912  dog 0.050"
    assert prediction_line({"path": "a.png", "labels": ["red"], "predictions": [
        {"label": "red", "probability": 0.8}, {"label": "round", "probability": 0.1}]}) == \
        "a.png  [red]  red 0.800  round 0.100"
    assert prediction_line({"path": "a.png", "values": {"x": 1.23456, "size": 1200.0}}) == "a.png  x 1.235  size 1200"
    assert prediction_line({"path": "a.png", "label": "cat", "score": 0.8766, "bbox": [1, 2.25, 30, 40]}) == \
        "a.png  cat 0.877  x,y,w,h 1.0,2.2,30.0,40.0"
    assert prediction_line({"path": "a.png", "fractions": {"soil": 0.75, "weed": 0.25}, "mask": "m/a_mask.png"}) == \
        "a.png  soil 0.750  weed 0.250  → m/a_mask.png"
    assert prediction_line({"path": "a.png", "fractions": {"soil": 1.0}}) == "a.png  soil 1.000"
