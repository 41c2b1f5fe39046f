"""cnnkit.metrics.core against formulas written out in numpy and tiny cases computed by hand (never against sklearn)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.metrics.core import classification_metrics, multilabel_metrics, regression_metrics, task_metrics

# ---------------------------------------------------------------- reference formulas


def counts(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN per class, by counting."""
    tp = np.array([np.sum((y_pred == c) & (y_true == c)) for c in range(k)], dtype=float)
    fp = np.array([np.sum((y_pred == c) & (y_true != c)) for c in range(k)], dtype=float)
    fn = np.array([np.sum((y_pred != c) & (y_true == c)) for c in range(k)], dtype=float)
    return tp, fp, fn


def safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    p, r = safe_div(tp, tp + fp), safe_div(tp, tp + fn)
    return safe_div(2 * p * r, p + r)


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Σ_n (R_n − R_{n−1}) P_n over the distinct thresholds, highest score first (R_0 = 0)."""
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(s)[::-1]:
        kept = s >= t
        precision, recall = y[kept].sum() / kept.sum(), y[kept].sum() / y.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def mann_whitney_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Fraction of (positive, negative) pairs where the positive scores higher; ties count ½."""
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def random_probs(n: int, k: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.softmax(torch.randn(n, k, dtype=torch.float64), dim=1)


# ---------------------------------------------------------------- single-label classification


def test_perfect_classification_scores_one():
    target = torch.tensor([0, 1, 2, 2, 1, 0, 3, 4, 5])
    probs = torch.nn.functional.one_hot(target, 6).double() * 0.9 + 0.01
    m = classification_metrics(probs, target, list("abcdef"))
    for key in ("accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro", "top_5_accuracy"):
        assert m[key] == 1.0, key
    assert all(c["f1"] == 1.0 for c in m["per_class"].values())


def test_known_confusion_by_hand():
    # target 0 0 1 1 2 2, predicted 0 1 1 1 2 0
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    probs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 2, 0]), 3).float()
    m = classification_metrics(probs, target, ["a", "b", "c"])
    # class a: TP 1 FP 1 FN 1 → P 1/2, R 1/2, F1 1/2
    # class b: TP 2 FP 1 FN 0 → P 2/3, R 1,   F1 2·(2/3)/(5/3) = 4/5
    # class c: TP 1 FP 0 FN 1 → P 1,   R 1/2, F1 2·(1/2)/(3/2) = 2/3
    assert m["accuracy"] == pytest.approx(4 / 6)  # 4 of 6 right
    assert m["f1_micro"] == pytest.approx(4 / 6)
    assert m["f1_macro"] == pytest.approx(59 / 90)  # (1/2 + 4/5 + 2/3)/3 = (45 + 72 + 60)/270
    assert m["precision_macro"] == pytest.approx(13 / 18)  # (1/2 + 2/3 + 1)/3
    assert m["recall_macro"] == pytest.approx(2 / 3)  # (1/2 + 1 + 1/2)/3
    assert m["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 4 / 5, "support": 2})
    assert "top_5_accuracy" not in m and "f1" not in m and "roc_auc" not in m


def test_classification_against_counting_formulas():
    k, n = 7, 300
    probs = random_probs(n, k)
    target = torch.randint(0, k, (n,))
    m = classification_metrics(probs, target, [f"c{i}" for i in range(k)])
    y_true, y_pred = target.numpy(), probs.numpy().argmax(1)
    tp, fp, fn = counts(y_true, y_pred, k)
    assert m["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert m["f1_micro"] == pytest.approx(m["accuracy"])  # single-label: micro F1 == accuracy
    assert m["f1_macro"] == pytest.approx(f1_from_counts(tp, fp, fn).mean())
    assert m["precision_macro"] == pytest.approx(safe_div(tp, tp + fp).mean())
    assert m["recall_macro"] == pytest.approx(safe_div(tp, tp + fn).mean())
    for c in range(k):
        assert m["per_class"][f"c{c}"]["support"] == int(np.sum(y_true == c))
        assert m["per_class"][f"c{c}"]["f1"] == pytest.approx(f1_from_counts(tp, fp, fn)[c])
    top5 = np.argsort(-probs.numpy(), axis=1)[:, :5]
    assert m["top_5_accuracy"] == pytest.approx(np.mean((top5 == y_true[:, None]).any(1)))
    assert m["accuracy"] < m["top_5_accuracy"] < 1.0


def test_top_5_by_hand():
    scores = torch.tensor([[0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]] * 3)
    target = torch.tensor([4, 5, 0])  # rank 5 (in the top 5), rank 6 (out), rank 1 (in)
    m = classification_metrics(scores, target, list("abcdefg"))
    assert m["top_5_accuracy"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(1 / 3)


def test_absent_class_counts_zero_and_does_not_crash():
    target = torch.tensor([0, 1, 0, 1])
    probs = torch.nn.functional.one_hot(target, 3).float()
    m = classification_metrics(probs, target, ["a", "b", "never"])
    assert m["f1_macro"] == pytest.approx(2 / 3)  # (1 + 1 + 0)/3: the absent class scores 0
    assert m["per_class"]["never"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_binary_by_hand():
    p = torch.tensor([0.9, 0.4, 0.6, 0.2])
    target = torch.tensor([1, 1, 0, 0])
    m = task_metrics("binary", p, target, ["neg", "pos"])
    # predicted 1 0 1 0 → TP 1 FP 1 FN 1 → F1 = 2·1/(2·1 + 1 + 1) = 1/2
    assert m["f1"] == pytest.approx(1 / 2)
    # pairs (pos, neg): (.9,.6) ✓ (.9,.2) ✓ (.4,.6) ✗ (.4,.2) ✓ → 3/4
    assert m["roc_auc"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(2 / 4)


def test_binary_roc_auc_is_mann_whitney_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1), 1)  # rounded: many ties
    m = task_metrics("binary", torch.from_numpy(s), torch.from_numpy(y), ["neg", "pos"])
    assert m["roc_auc"] == pytest.approx(mann_whitney_auc(y, s))
    assert 0.5 < m["roc_auc"] < 1.0
    tp, fp, fn = counts(y, (s > 0.5).astype(int), 2)  # argmax of [1-p, p]: p = 0.5 goes to class 0
    assert m["f1"] == pytest.approx(f1_from_counts(tp, fp, fn)[1])
    assert m["f1"] == m["per_class"]["pos"]["f1"]


def test_binary_with_one_class_present_has_no_roc_auc():
    m = task_metrics("binary", torch.tensor([0.8, 0.3]), torch.tensor([1, 1]), ["neg", "pos"])
    assert "roc_auc" not in m
    assert m["f1"] == pytest.approx(2 / 3)  # TP 1 FN 1 FP 0 → P 1, R 1/2 → 2·(1/2)/(3/2)


def test_binary_dispatch_equals_two_column_probabilities():
    p = torch.tensor([0.1, 0.7, 0.55, 0.3, 0.9])
    target = torch.tensor([0, 1, 0, 1, 1])
    two = torch.stack([1 - p, p], dim=1)
    assert task_metrics("binary", p, target, ["n", "p"]) == classification_metrics(two, target, ["n", "p"])
    assert task_metrics("multiclass", two, target, ["n", "p"]) == classification_metrics(two, target, ["n", "p"])


# ---------------------------------------------------------------- multi-label

ML_TARGET = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
ML_PROBS = torch.tensor([[0.9, 0.2, 0.1], [0.6, 0.7, 0.3], [0.4, 0.8, 0.6], [0.1, 0.3, 0.2]])


def test_multilabel_by_hand_with_a_label_without_positives():
    m = multilabel_metrics(ML_PROBS, ML_TARGET, ["a", "b", "c"])
    # a: by score .9+ .6- .4+ .1- → (R, P) = (1/2, 1), (1/2, 1/2), (1, 2/3) → AP = 1/2·1 + 1/2·2/3 = 5/6
    # b: .8+ .7+ first → AP 1;  c: no positive → skipped
    assert m["per_label"]["a"]["ap"] == pytest.approx(5 / 6)
    assert m["per_label"]["b"]["ap"] == pytest.approx(1.0)
    assert m["per_label"]["c"]["ap"] is None
    assert m["map"] == pytest.approx(11 / 12)  # (5/6 + 1)/2
    # at 0.5: a predicted 1 1 0 0 (TP 1 FP 1 FN 1 → F1 1/2), b exact (F1 1), c predicted 0 0 1 0 (TP 0 → F1 0)
    assert m["f1_macro"] == pytest.approx(1 / 2)  # (1/2 + 1 + 0)/3
    assert m["f1_micro"] == pytest.approx(2 / 3)  # TP 3, FP 2, FN 1 → 2·3/(2·3 + 2 + 1)
    assert m["subset_accuracy"] == pytest.approx(1 / 2)  # rows 0 and 3 fully right
    assert m["hamming_accuracy"] == pytest.approx(3 / 4)  # 3 wrong entries of 12
    assert [m["per_label"][x]["support"] for x in "abc"] == [2, 2, 0]
    json.dumps(m, allow_nan=False)  # per_label holds None, never nan


def test_multilabel_threshold_moves_predictions():
    m = multilabel_metrics(ML_PROBS, ML_TARGET, ["a", "b", "c"], threshold=0.35)
    # a predicted 1 1 1 0 → TP 2 FP 1 → F1 4/5; b predicted 0 1 1 0 → 1; c predicted 0 0 1 0 → 0
    assert m["f1_macro"] == pytest.approx(3 / 5)  # (4/5 + 1 + 0)/3
    assert m["map"] == pytest.approx(11 / 12)  # AP does not depend on the threshold


def test_multilabel_perfect_and_no_positives():
    target = torch.tensor([[1, 0], [0, 1], [1, 1]]).float()
    m = multilabel_metrics(target * 0.8 + 0.1, target, ["x", "y"])
    assert m["map"] == m["f1_macro"] == m["f1_micro"] == m["subset_accuracy"] == m["hamming_accuracy"] == 1.0
    empty = multilabel_metrics(torch.rand(3, 2), torch.zeros(3, 2), ["x", "y"])
    assert math.isnan(empty["map"])
    assert empty["per_label"]["x"]["ap"] is None


def test_multilabel_against_formulas():
    rng = np.random.default_rng(0)
    n, k = 120, 5
    y = (rng.random((n, k)) < 0.3).astype(int)
    y[:, 4] = 0  # a label without positives
    s = np.clip(0.35 * y + 0.65 * rng.random((n, k)), 0, 1)
    m = multilabel_metrics(torch.from_numpy(s), torch.from_numpy(y), list("abcde"))
    aps = [average_precision(y[:, j], s[:, j]) for j in range(4)]
    assert m["map"] == pytest.approx(np.mean(aps))
    for j, name in enumerate("abcd"):
        assert m["per_label"][name]["ap"] == pytest.approx(aps[j])
    pred = (s >= 0.5).astype(int)
    tp, fp, fn = ((pred & y).sum(0), (pred & (1 - y)).sum(0), ((1 - pred) & y).sum(0))
    f1s = f1_from_counts(tp.astype(float), fp.astype(float), fn.astype(float))
    assert m["f1_macro"] == pytest.approx(f1s.mean())
    assert m["f1_micro"] == pytest.approx(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))
    assert m["subset_accuracy"] == pytest.approx(np.mean((pred == y).all(1)))
    assert m["hamming_accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["per_label"]["e"] == {"ap": None, "f1": 0.0, "support": 0}


# ---------------------------------------------------------------- regression


def test_regression_scalar_by_hand():
    m = regression_metrics(torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]), ["y"])
    assert m["mae"] == pytest.approx(1 / 2)  # errors 0 0 0 2 → 2/4
    assert m["rmse"] == pytest.approx(1.0)  # sqrt(4/4)
    assert m["r2"] == pytest.approx(1 / 5)  # SS_res 4, SS_tot (2.25 + .25 + .25 + 2.25) = 5 → 1 − 4/5
    assert "per_target" not in m


def test_regression_perfect():
    y = torch.tensor([[1.0, -2.0], [3.0, 0.5], [2.0, 4.0]])
    m = regression_metrics(y.clone(), y, ["u", "v"])
    assert (m["mae"], m["rmse"], m["r2"]) == (0.0, 0.0, 1.0)


def test_regression_vector_targets_per_target():
    torch.manual_seed(0)
    target = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64)
    pred = target + torch.randn(50, 3, dtype=torch.float64) * torch.tensor([0.5, 3.0, 0.2], dtype=torch.float64)
    m = regression_metrics(pred, target, ["a", "b", "c"])
    y, p = target.numpy(), pred.numpy()
    mae = np.abs(p - y).mean(0)
    rmse = np.sqrt(((p - y) ** 2).mean(0))
    r2 = 1 - ((p - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    assert m["mae"] == pytest.approx(mae.mean())
    assert m["rmse"] == pytest.approx(rmse.mean())  # mean of per-output RMSE, not RMSE of everything
    assert m["rmse"] != pytest.approx(np.sqrt(((p - y) ** 2).mean()))
    assert m["r2"] == pytest.approx(r2.mean())
    for j, name in enumerate("abc"):
        assert m["per_target"][name] == pytest.approx({"mae": mae[j], "rmse": rmse[j], "r2": r2[j]})
    assert m["per_target"]["c"]["r2"] < 0  # noise larger than the spread of c


def test_regression_constant_target_r2_follows_sklearn():
    y = torch.tensor([2.0, 2.0, 2.0])
    assert regression_metrics(y.clone(), y, ["y"])["r2"] == 1.0  # exact on a constant target
    assert regression_metrics(torch.tensor([1.0, 2.0, 3.0]), y, ["y"])["r2"] == 0.0  # SS_tot = 0: forced to 0


# ---------------------------------------------------------------- errors, dispatch, output types


@pytest.mark.parametrize("call, message", [
    (lambda: classification_metrics(torch.rand(5, 4), torch.zeros(5, dtype=torch.long), list("abc")),
     "predictions have 4 columns but there are 3 classes"),
    (lambda: classification_metrics(torch.rand(5, 3), torch.zeros(4, dtype=torch.long), list("abc")),
     "there are 5 predictions but 4 targets"),
    (lambda: classification_metrics(torch.rand(2, 3), torch.tensor([0, 3]), list("abc")),
     "targets hold class indices from 0 to 3 but there are 3 classes"),
    (lambda: multilabel_metrics(torch.rand(4, 3), torch.zeros(4, 2), list("abc")),
     "targets have shape (4, 2) but predictions (4, 3)"),
    (lambda: multilabel_metrics(torch.rand(4, 3), torch.zeros(4, 3), list("ab")),
     "predictions have 3 columns but there are 2 labels"),
    (lambda: regression_metrics(torch.rand(4, 2), torch.rand(3, 2), ["u", "v"]),
     "there are 4 predictions but 3 targets"),
    (lambda: regression_metrics(torch.rand(4, 2), torch.rand(4, 2), ["u"]),
     "predictions have 2 outputs but there are 1 target names"),
    (lambda: task_metrics("binary", torch.rand(4, 2), torch.zeros(4, dtype=torch.long), ["n", "p"]),
     "binary predictions must be (N,) probabilities"),
])
def test_bad_shapes_raise_cnnkit_error(call, message):
    with pytest.raises(CnnkitError) as info:
        call()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_task_raises_value_error():
    with pytest.raises(ValueError, match="unknown task 'detection'"):
        task_metrics("detection", torch.rand(3, 2), torch.zeros(3), ["a", "b"])


def test_dispatch_regression_and_multilabel():
    assert task_metrics("regression", torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0]), ["y"])["mae"] == 0.5
    assert task_metrics("multilabel", ML_PROBS, ML_TARGET, ["a", "b", "c"])["map"] == pytest.approx(11 / 12)


def test_outputs_are_plain_python_numbers():
    m = classification_metrics(random_probs(40, 7, seed=1), torch.randint(0, 7, (40,)), list("abcdefg"))
    assert type(m["accuracy"]) is float and type(m["top_5_accuracy"]) is float
    assert type(m["per_class"]["a"]["support"]) is int and type(m["per_class"]["a"]["f1"]) is float
    r = regression_metrics(torch.rand(6, 2), torch.rand(6, 2), ["u", "v"])
    assert type(r["per_target"]["u"]["r2"]) is float
    json.loads(json.dumps([m, r], allow_nan=False))
