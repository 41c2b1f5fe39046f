"""Classification analysis: the confusion matrix against scikit-learn, the ECE against torchmetrics and by hand,
top losses against −log p_true computed here, and the analysis of real (tiny) runs, multiclass and binary."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.api import train
from cnnkit.config import load_config
from cnnkit.diagnose.classification import (
    classification_analysis,
    confusion_matrix,
    expected_calibration_error,
    normalize_confusion,
    plot_confusion,
    plot_reliability,
    plot_top_losses,
    split_predictions,
    top_k_accuracy,
    top_losses,
)
from cnnkit.errors import CnnkitError


def train_run(out: Path, source: str, epochs: int = 1, **data) -> Path:
    cfg = load_config(overrides={"data": {"source": source, **data}, "model": {"name": "lenet5"},
                                 "train": {"epochs": epochs, "batch_size": 32, "lr": 2e-3, "device": "cpu"},
                                 "out": str(out)})
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> Path:
    """LeNet-5 after one epoch on 240 shapes: right on most val images, wrong on some."""
    return train_run(tmp_path_factory.mktemp("cls") / "shapes", "synthetic-shapes:n=240,size=32")


def random_probs(n: int, k: int, seed: int, sharpness: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = (torch.randn(n, k, generator=g) * sharpness).softmax(1)  # (n, k)
    targets = torch.randint(0, k, (n,), generator=g)
    return probs, targets


# ---------------------------------------------------------------- formulas against trusted implementations

@pytest.mark.parametrize("k", [2, 3, 7])
def test_confusion_matrix_matches_sklearn(k):
    from sklearn.metrics import confusion_matrix as sk_confusion

    probs, targets = random_probs(200, k, seed=k)
    expected = sk_confusion(targets.numpy(), probs.argmax(1).numpy(), labels=range(k))
    assert np.array_equal(confusion_matrix(probs, targets, k), expected)  # from scores
    assert np.array_equal(confusion_matrix(probs.argmax(1).numpy(), targets.numpy(), k), expected)  # from labels


def test_confusion_keeps_absent_classes_and_normalises_rows():
    counts = confusion_matrix(torch.tensor([0, 0, 1, 0]), torch.tensor([0, 1, 1, 1]), 3)
    assert counts.tolist() == [[1, 0, 0], [2, 1, 0], [0, 0, 0]]  # rows true, columns predicted
    norm = normalize_confusion(counts)
    assert np.allclose(norm[:2].sum(1), 1.0) and np.array_equal(norm[2], [0, 0, 0])  # empty row stays 0
    assert norm[1].tolist() == pytest.approx([2 / 3, 1 / 3, 0])
    with pytest.raises(CnnkitError, match="0..2"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


@pytest.mark.parametrize("k, bins, sharpness", [(3, 15, 3.0), (10, 10, 1.0), (2, 5, 8.0)])
def test_ece_matches_torchmetrics(k, bins, sharpness):
    from torchmetrics.classification import MulticlassCalibrationError

    probs, targets = random_probs(500, k, seed=bins, sharpness=sharpness)
    probs[:20] = torch.nn.functional.one_hot(targets[:20], k).float()  # confidences of exactly 1: their own bin
    reference = MulticlassCalibrationError(num_classes=k, n_bins=bins, norm="l1")(probs, targets)
    assert expected_calibration_error(probs, targets, bins) == pytest.approx(float(reference), abs=1e-6)


def test_ece_by_hand_two_bins():
    # bin [0, 0.5): confidences 0.4, 0.45, one right → |0.5 − 0.425|; bin [0.5, 1): 0.9, 0.8, 0.6, two right
    probs = torch.tensor([[0.4, 0.3, 0.3], [0.45, 0.3, 0.25], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    targets = torch.tensor([0, 1, 0, 1, 0])
    expected = 2 / 5 * abs(0.5 - 0.425) + 3 / 5 * abs(2 / 3 - (0.9 + 0.8 + 0.6) / 3)
    assert expected_calibration_error(probs, targets, bins=2) == pytest.approx(expected, abs=1e-6)
    assert expected_calibration_error(torch.eye(3), torch.arange(3)) == 0.0  # sure and right: calibrated


def test_top_k_accuracy_counts_the_true_class_among_the_k_best():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.1, 0.3, 0.2]])
    acc = top_k_accuracy(probs, torch.tensor([0, 2, 2]))
    assert acc == pytest.approx({1: 1 / 3, 2: 1.0, 3: 1.0})  # k < K = 4


def test_plots_write_pngs(tmp_path):
    probs, targets = random_probs(300, 25, seed=1)
    counts = confusion_matrix(probs, targets, 25)
    names = [f"class {i}" for i in range(25)]  # > 20 classes: no cell annotations
    assert plot_confusion(counts, names, tmp_path / "c.png").stat().st_size > 0
    assert plot_confusion(counts[:3, :3], names[:3], tmp_path / "n.png", normalized=True).stat().st_size > 0
    assert plot_reliability(probs, targets, tmp_path / "r.png", bins=10).stat().st_size > 0


# ---------------------------------------------------------------- on a run

def test_split_predictions_follow_split_json(shapes_run):
    pred = split_predictions(shapes_run)
    ids = json.loads((shapes_run / "split.json").read_text())["splits"]["val"]["ids"]
    assert pred.ids == ids and len(pred.indices) == len(ids) and pred.classes == ["circle", "square", "triangle"]
    assert pred.probs.shape == (len(ids), 3) and pred.targets.dtype == torch.long
    assert torch.allclose(pred.probs.sum(1), torch.ones(len(ids)))
    assert not (shapes_run / "test_log.jsonl").exists()  # val by default: the test split is not read


def test_top_losses_are_sorted_by_minus_log_p_true(shapes_run, tmp_path):
    pred = split_predictions(shapes_run)
    loss = -pred.probs[torch.arange(len(pred.targets)), pred.targets].double().log()
    rows = top_losses(shapes_run, k=10)
    assert [r["id"] for r in rows] == [pred.ids[i] for i in torch.argsort(loss, descending=True)[:10].tolist()]
    assert [r["loss"] for r in rows] == pytest.approx(sorted(loss.tolist(), reverse=True)[:10], rel=1e-6)
    top = rows[0]
    assert top["predicted"] == pred.classes[int(pred.probs[top["position"]].argmax())]
    assert top["probability"] == pytest.approx(float(pred.probs[top["position"]].max()))
    assert plot_top_losses(shapes_run, tmp_path / "top.png", k=5).stat().st_size > 0


def test_classification_analysis_writes_the_pictures(shapes_run, tmp_path):
    result = classification_analysis(shapes_run, tmp_path / "plots")
    pred = split_predictions(shapes_run)
    assert np.array(result["confusion"]).sum() == len(pred.targets) == result["count"]
    assert result["ece"] == pytest.approx(expected_calibration_error(pred.probs, pred.targets))
    assert set(result["top_k_accuracy"]) == {1, 2}  # 3 classes
    assert result["top_k_accuracy"][1] == pytest.approx(float((pred.probs.argmax(1) == pred.targets).double().mean()))
    assert set(result["per_class"]) == {"circle", "square", "triangle"}
    for name in ("confusion", "confusion_normalized", "reliability", "top_losses"):
        assert Path(result["paths"][name]).is_file(), name
    json.dumps(result)  # plain types only


def test_the_test_split_only_when_named_and_recorded(shapes_run):
    pred = split_predictions(shapes_run, "test")
    assert len(pred.ids) == len(json.loads((shapes_run / "split.json").read_text())["splits"]["test"]["ids"])
    log = (shapes_run / "test_log.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["use"] == "diagnose"


def test_binary_runs_give_two_columns(tmp_path):
    rng = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("light", 215)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(15):
            pixels = np.clip(rng.normal(level, 20, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / cls / f"{i}.png")
    run = train_run(tmp_path / "bin", str(tmp_path / "data"), epochs=2, val=0.3, test=0.2)
    result = classification_analysis(run, tmp_path / "plots", k=4)
    assert np.array(result["confusion"]).shape == (2, 2) and len(result["top_losses"]) == 4
    assert split_predictions(run).probs.shape[1] == 2


def test_bad_runs_fail_in_one_line(tmp_path):
    regression = train_run(tmp_path / "reg", "synthetic-shapes:target=geometry,n=30")
    with pytest.raises(CnnkitError, match="binary or multiclass"):
        split_predictions(regression)
    empty = train_run(tmp_path / "noval", "synthetic-shapes:n=30", val=0.0)
    with pytest.raises(CnnkitError, match="val split .* is empty"):
        classification_analysis(empty, tmp_path / "plots")
    with pytest.raises(CnnkitError, match="unknown split"):
        split_predictions(empty, "valid")
    with pytest.raises(CnnkitError, match="not found"):
        top_losses(tmp_path / "missing")
