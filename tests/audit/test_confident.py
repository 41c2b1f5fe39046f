"""Confident learning against the paper's definitions, worked by hand, and on simulated noisy labels."""
from __future__ import annotations

import numpy as np
import pytest

from cnnkit.audit.confident import (
    audit_labels,
    audit_multilabel,
    calibrated_joint,
    confident_joint,
    thresholds,
)
from cnnkit.errors import CnnkitError

# five items, two classes: labels and out-of-sample probabilities
LABELS = np.array([0, 0, 0, 1, 1])
PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]])


def test_thresholds_confident_joint_and_calibration_by_hand() -> None:
    t = thresholds(LABELS, PROBS)
    np.testing.assert_allclose(t, [(0.9 + 0.8 + 0.2) / 3, (0.7 + 0.9) / 2])  # [0.633, 0.8]
    c = confident_joint(LABELS, PROBS, t)
    # item 0: 0.9 ≥ .633 → class 0; item 1: 0.8 → 0; item 2: p1 = 0.8 ≥ 0.8 → class 1;
    # item 3: p0 = 0.3 < .633 and p1 = 0.7 < 0.8 → not counted; item 4: → 1
    np.testing.assert_array_equal(c, [[2, 1], [0, 1]])
    q = calibrated_joint(c, np.array([3.0, 2.0]))
    np.testing.assert_allclose(q, np.array([[2.0, 1.0], [0.0, 2.0]]) / 5)


def test_prune_by_noise_rate_flags_the_item_of_largest_margin() -> None:
    audit = audit_labels(LABELS, PROBS)
    # N·Q̂[0][1] = 5 · 1/5 = 1 item labelled 0 is flagged: the one of largest p̂_1 − p̂_0 (item 2)
    np.testing.assert_array_equal(audit.issues, [False, False, True, False, False])
    assert audit.suggested[2] == 1
    np.testing.assert_allclose(audit.margin, [0.8, 0.6, -0.6, 0.4, 0.8])
    assert audit.ranking()[0] == 2
    np.testing.assert_allclose(audit.noise_matrix.sum(0), [1.0, 1.0])


def _simulated(n: int, k: int, noise: float, seed: int, pair: bool = False):
    """True labels, given labels with `noise` of them flipped (uniformly, or to the next class with `pair`),
    and probabilities of a decent model of the true labels."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 3.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    flipped = rng.random(n) < noise
    other = (true + 1) % k if pair else (true + rng.integers(1, k, n)) % k
    return true, np.where(flipped, other, true), probs, flipped


@pytest.mark.parametrize("pair", [False, True])
def test_simulated_noise_is_found_and_its_rate_estimated(pair: bool) -> None:
    _, given, probs, flipped = _simulated(6000, 5, 0.08, seed=1, pair=pair)
    audit = audit_labels(given, probs)
    found = audit.issues
    precision, recall = (found & flipped).sum() / found.sum(), (found & flipped).sum() / flipped.sum()
    assert precision > 0.8 and recall > 0.8, (precision, recall)
    off_diagonal = audit.joint.sum() - np.trace(audit.joint)
    assert abs(off_diagonal - flipped.mean()) < 0.03  # the estimated noise rate
    top = audit.ranking()[: flipped.sum()]
    assert flipped[top].mean() > 0.8


def test_multilabel_is_audited_class_by_class() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((3000, 3)) < 0.4
    probs = np.clip(np.where(truth, 0.85, 0.15) + rng.normal(0, 0.08, truth.shape), 0.01, 0.99)
    given = truth.copy()
    flip = rng.random(truth.shape) < 0.05
    given ^= flip
    issues, score, suggested = audit_multilabel(given.astype(float), probs)
    assert (issues & flip).sum() / issues.sum() > 0.8 and (issues & flip).sum() / flip.sum() > 0.8
    assert (suggested == truth).mean() > (given == truth).mean()
    assert score.shape == (3000,)


def test_bad_shapes_are_one_line_errors() -> None:
    with pytest.raises(CnnkitError, match="probabilities"):
        audit_labels(np.array([0, 1]), np.ones((3, 2)))
    with pytest.raises(CnnkitError, match="labels must lie"):
        audit_labels(np.array([0, 2]), np.ones((2, 2)))
