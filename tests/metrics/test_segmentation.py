"""cnnkit.metrics.segmentation against torchmetrics, sklearn and hand-computed matrices."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

from cnnkit.errors import CnnkitError
from cnnkit.metrics import segmentation as sm
from cnnkit.metrics.segmentation import ConfusionMatrix, boundary_f1, segmentation_scores

C, IGNORE = 5, 255


def random_batch(seed: int, absent: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """pred, target (2, 8, 9) with ~20 % ignored target pixels; `absent`: a class in neither."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, C, (2, 8, 9), generator=g)
    target = torch.where(torch.rand(2, 8, 9, generator=g) < 0.7, pred, torch.randint(0, C, (2, 8, 9), generator=g))
    if absent is not None:
        pred[pred == absent] = (absent + 1) % C
        target[target == absent] = (absent + 1) % C
    target[torch.rand(2, 8, 9, generator=g) < 0.2] = IGNORE
    return pred, target


def accumulate(batches) -> ConfusionMatrix:
    cm = ConfusionMatrix(C, ignore_index=IGNORE)
    for pred, target in batches:
        cm.update(pred, target)
    return cm


def test_matrix_equals_torchmetrics_and_sklearn() -> None:
    batches = [random_batch(0), random_batch(1)]
    cm = accumulate(batches)
    assert cm.matrix.dtype == np.int64 and cm.matrix.shape == (C, C)
    tm = MulticlassConfusionMatrix(C, ignore_index=IGNORE)
    for pred, target in batches:
        tm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix, tm.compute().numpy())
    pred = torch.cat([p.flatten() for p, _ in batches]).numpy()
    target = torch.cat([t.flatten() for _, t in batches]).numpy()
    keep = target != IGNORE
    np.testing.assert_array_equal(cm.matrix, confusion_matrix(target[keep], pred[keep], labels=list(range(C))))


def test_numpy_inputs_and_logits_and_reset() -> None:
    pred, target = random_batch(2)
    from_torch = accumulate([(pred, target)]).matrix
    cm = ConfusionMatrix(C, ignore_index=IGNORE)
    cm.update(pred.numpy(), target.numpy())
    np.testing.assert_array_equal(cm.matrix, from_torch)
    cm.reset()
    assert cm.matrix.sum() == 0
    logits = torch.nn.functional.one_hot(pred, C).movedim(-1, 1).float()  # (N, C, H, W)
    cm.update(logits, target)
    np.testing.assert_array_equal(cm.matrix, from_torch)


@pytest.mark.parametrize("absent", [None, 3])
def test_scores_equal_torchmetrics(absent: int | None) -> None:
    batches = [random_batch(10, absent), random_batch(11, absent)]
    scores = accumulate(batches).scores()
    metrics = {
        "per_class": MulticlassJaccardIndex(C, average=None, ignore_index=IGNORE),
        "macro": MulticlassJaccardIndex(C, average="macro", ignore_index=IGNORE),
        "pixel": MulticlassAccuracy(C, average="micro", ignore_index=IGNORE),
        "mean_acc": MulticlassAccuracy(C, average="macro", ignore_index=IGNORE),
    }
    for pred, target in batches:
        for metric in metrics.values():
            metric.update(pred, target)
    got = {k: m.compute() for k, m in metrics.items()}
    assert scores["miou"] == pytest.approx(float(got["macro"]), abs=1e-6)
    assert scores["pixel_accuracy"] == pytest.approx(float(got["pixel"]), abs=1e-6)
    # torchmetrics reports a class absent from target and prediction as IoU 0 (zero_division) but leaves it
    # out of the macro mean; we report None and leave it out too.
    per_class = [0.0 if v is None else v for v in scores["per_class_iou"]]
    np.testing.assert_allclose(per_class, got["per_class"].numpy(), atol=1e-6)
    assert (scores["per_class_iou"][3] is None) == (absent == 3)
    # Macro accuracy: torchmetrics drops classes with tp + fp + fn = 0, we (Long et al.) drop t_i = 0; the same
    # classes here, since every class predicted somewhere also occurs in the target.
    assert scores["mean_accuracy"] == pytest.approx(float(got["mean_acc"]), abs=1e-6)


def test_scores_on_hand_matrix() -> None:
    cm = ConfusionMatrix(4)
    # rows true, cols predicted; class 2 predicted once but never true; class 3 absent from both
    cm.matrix[:] = np.array([[5, 1, 0, 0], [2, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    s = cm.scores()
    # t = (6, 6, 0, 0) true pixels, p = (7, 4, 1, 0) predicted pixels, n_ii = (5, 3, 0, 0)
    assert s["pixel_accuracy"] == pytest.approx(8 / 12)
    assert s["per_class_accuracy"] == [pytest.approx(5 / 6), pytest.approx(3 / 6), None, None]
    assert s["mean_accuracy"] == pytest.approx((5 / 6 + 3 / 6) / 2)
    iou = [5 / (6 + 7 - 5), 3 / (6 + 4 - 3), 0.0]
    assert s["per_class_iou"][:3] == pytest.approx(iou) and s["per_class_iou"][3] is None
    assert s["miou"] == pytest.approx(sum(iou) / 3)
    assert s["fw_iou"] == pytest.approx((6 * iou[0] + 6 * iou[1]) / 12)
    dice = [2 * 5 / 13, 2 * 3 / 10, 0.0]
    assert s["per_class_dice"][:3] == pytest.approx(dice) and s["per_class_dice"][3] is None
    assert s["dice"] == pytest.approx(sum(dice) / 3)


def test_empty_matrix_scores_are_none() -> None:
    s = ConfusionMatrix(3).scores()
    assert s["miou"] is None and s["pixel_accuracy"] is None and s["per_class_iou"] == [None] * 3


def test_segmentation_scores_helper() -> None:
    batches = [random_batch(20), random_batch(21)]
    expected = accumulate(batches).scores()
    assert segmentation_scores([p for p, _ in batches], [t for _, t in batches], C, IGNORE) == expected
    one = segmentation_scores(batches[0][0], batches[0][1], C, IGNORE)
    assert one == accumulate(batches[:1]).scores()


def test_update_errors() -> None:
    cm = ConfusionMatrix(C, ignore_index=IGNORE)
    pred, target = random_batch(3)
    bad = target.clone()
    bad[0, 0, 0] = 7
    for args, message in [
        ((pred[:, :4], target), "differ in shape"),
        ((pred, bad), "target label 7 is outside 0..4 and is not ignore_index 255"),
        ((pred + C, target), "predicted class .* is outside 0..4"),
        ((pred, target.float()), "integer class indices"),
    ]:
        with pytest.raises(CnnkitError, match=message) as info:
            cm.update(*args)
        assert "\n" not in str(info.value)


# --- boundary F1 ---------------------------------------------------------------------------


def square(shift: int = 0, size: int = 16) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.int64)
    mask[4 : 12, 4 + shift : 12 + shift] = 1
    return mask


def test_boundary_f1_identical_and_shifted() -> None:
    target = square()
    assert boundary_f1(target, target) == 1.0
    assert boundary_f1(torch.from_numpy(target), torch.from_numpy(target), tolerance=0) == 1.0
    assert boundary_f1(square(1), target, tolerance=2) == 1.0  # a 1-pixel shift is within tolerance
    assert boundary_f1(square(1), target, tolerance=0) < 1.0
    scores = [boundary_f1(square(shift), target, tolerance=1) for shift in (1, 2, 3, 4)]
    assert scores[0] == 1.0 and scores[1] > scores[2] > scores[3] > 0  # lower as the shift grows


def test_boundary_f1_hand_case() -> None:
    # Class 1 is an 8×8 square, rows 4..11 × cols 4..11 (rim: 28 pixels); class 0 the rest (boundary: the
    # 36-pixel ring around it). The prediction shifts the square right by 3 (cols 7..14); tolerance 2.
    # Class 1 precision by hand: predicted top/bottom rows, cols 7..13, lie ≤ 2 from the true rows or corner
    # (4, 11) / (11, 11); col 14 is 3 away -> 2 misses. Predicted left side (col 7, rows 5..10) is 3 from col 4,
    # but rows 5, 6, 9, 10 are ≤ 2 from the true top/bottom rows -> rows 7, 8 miss. Right side rows 5..10 miss
    # (6). So P = (28 − 10) / 28 and, by symmetry, R = P -> F1 = 18 / 28.
    pred, target = square(3), square()
    ours = boundary_f1(pred, target, tolerance=2)
    expected = []
    for c in (0, 1):
        pb, tb = sm._boundary(pred == c, np.ones_like(pred, bool)), sm._boundary(target == c, np.ones_like(pred, bool))
        py, px = np.nonzero(pb)
        ty, tx = np.nonzero(tb)
        dist = np.sqrt((py[:, None] - ty[None]) ** 2 + (px[:, None] - tx[None]) ** 2)  # brute-force distances
        precision, recall = (dist.min(1) <= 2).mean(), (dist.min(0) <= 2).mean()
        expected.append(2 * precision * recall / (precision + recall))
    assert ours == pytest.approx(np.mean(expected))
    b1 = sm._boundary(target == 1, np.ones_like(target, bool))
    assert b1.sum() == 28 and sm._boundary(target == 0, np.ones_like(target, bool)).sum() == 36
    assert expected[1] == pytest.approx(18 / 28)


def test_boundary_f1_torch_fallback_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    b = rng.random((12, 13)) < 0.05
    for tol in (0, 1, 1.5, 2, 3):
        np.testing.assert_array_equal(sm._near_torch(b, tol), sm._near_scipy(b, tol))


def test_boundary_f1_ignore_and_errors() -> None:
    target = square()
    void = target.copy()
    void[:, :2] = IGNORE
    assert boundary_f1(target, void) == 1.0
    assert np.isnan(boundary_f1(target, np.full_like(target, IGNORE)))
    with pytest.raises(CnnkitError, match="same \\(H, W\\) shape"):
        boundary_f1(target[None], target[None])
