"""Confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", JAIR 70, 2021), written here from the paper (cleanlab, its authors' library, is AGPL).

Given the given (noisy) labels ỹ and out-of-sample probabilities p̂ (each item predicted by a model that did
not train on it, `cnnkit.audit.crossfit`):

1. per-class thresholds t_j = the mean of p̂_j(x) over the items labelled j (the class's expected
   self-confidence), §2.1;
2. the confident joint C[i][j]: items labelled i whose p̂_j(x) ≥ t_j, counted in the class j of largest p̂ among
   the classes above their threshold (items above no threshold are not counted), eq. 1;
3. calibrated to the label counts and normalised: Q̂[i][j], the estimated joint distribution of the given label
   i and the true label j (eq. 3); the noise matrix p(ỹ=i | y*=j) = Q̂[i][j] / Σ_i Q̂[i][j];
4. the label issues, by "prune by noise rate" (§3.1, method 4): for every off-diagonal pair (i, j), the
   n·Q̂[i][j] items labelled i of largest margin p̂_j − p̂_i;
5. ranked by the normalised margin p̂_ỹ − max_{j≠ỹ} p̂_j (§3.1, "ranking"), lowest first.

Multilabel sets are audited class by class as binary problems (is class k present?), as the paper suggests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnkit.errors import CnnkitError


@dataclass
class LabelAudit:
    """Confident learning's result for N items and K classes."""

    thresholds: np.ndarray  # (K,) t_j
    confident_joint: np.ndarray  # (K, K) int: C[given][true]
    joint: np.ndarray  # (K, K) Q̂[given][true], sums to 1
    noise_matrix: np.ndarray  # (K, K) p(given = i | true = j), columns sum to 1
    issues: np.ndarray  # (N,) bool: flagged as a label error
    margin: np.ndarray  # (N,) p̂_given − max_{j≠given} p̂_j, in [−1, 1]; low = suspicious
    suggested: np.ndarray  # (N,) the most likely other class where flagged, else the argmax

    def ranking(self) -> np.ndarray:
        """Item positions, most suspicious first: the flagged items by margin, then the others by margin."""
        return np.lexsort((self.margin, ~self.issues))

    def score(self) -> np.ndarray:
        """(N,) in [0, 1]: how likely the label is wrong, (1 − margin) / 2."""
        return (1.0 - self.margin) / 2.0


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise CnnkitError(f"confident learning needs (N, K) probabilities for N labels, got {probs.shape} "
                          f"for {len(labels)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise CnnkitError(f"labels must lie in 0..{probs.shape[1] - 1}")
    return labels, probs


def thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(K,) t_j = mean p̂_j over the items labelled j (a class with no item: 1, so it never counts)."""
    k = probs.shape[1]
    return np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(k)])


def confident_joint(labels: np.ndarray, probs: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(K, K) C[i][j]: items labelled i counted in the class j of largest p̂ among those with p̂_j ≥ t_j."""
    k = probs.shape[1]
    above = probs >= t[None, :] - 1e-12  # (N, K)
    counted = above.any(1)
    true = np.where(above, probs, -np.inf).argmax(1)  # (N,)
    c = np.zeros((k, k), dtype=np.int64)
    np.add.at(c, (labels[counted], true[counted]), 1)
    return c


def calibrated_joint(c: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Q̂: each row of C rescaled to its label's count, then the whole normalised to sum 1 (eq. 3)."""
    rows = c.sum(1, keepdims=True).astype(np.float64)
    q = np.divide(c * label_counts[:, None], rows, out=np.zeros(c.shape), where=rows > 0)
    total = q.sum()
    return q / total if total > 0 else q


def prune_by_noise_rate(labels: np.ndarray, probs: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """(N,) bool: for each pair i ≠ j, the round(N·Q̂[i][j]) items labelled i of largest p̂_j − p̂_i."""
    n, k = probs.shape
    flagged = np.zeros(n, dtype=bool)
    for i in range(k):
        mine = np.flatnonzero(labels == i)
        for j in range(k):
            count = int(round(n * joint[i, j]))
            if i == j or count == 0 or len(mine) == 0:
                continue
            order = np.argsort(-(probs[mine, j] - probs[mine, i]), kind="stable")
            flagged[mine[order[:count]]] = True
    return flagged


def audit_labels(labels: np.ndarray, probs: np.ndarray) -> LabelAudit:
    """Confident learning on single-label items: `labels` (N,) in 0..K−1, `probs` (N, K) out of sample."""
    labels, probs = _check(labels, probs)
    k = probs.shape[1]
    t = thresholds(labels, probs)
    c = confident_joint(labels, probs, t)
    joint = calibrated_joint(c, np.bincount(labels, minlength=k).astype(np.float64))
    columns = joint.sum(0, keepdims=True)
    noise = np.divide(joint, columns, out=np.zeros_like(joint), where=columns > 0)
    issues = prune_by_noise_rate(labels, probs, joint)
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    margin = probs[np.arange(len(labels)), labels] - others.max(1)
    suggested = np.where(issues, others.argmax(1), probs.argmax(1))
    return LabelAudit(t, c, joint, noise, issues, margin, suggested)


def audit_multilabel(targets: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class by class as binary problems: (issues (N, K) bool, score (N,) of the most suspicious class,
    suggested (N, K) multi-hot with the flagged entries flipped)."""
    targets, probs = np.asarray(targets) > 0.5, np.asarray(probs, dtype=np.float64)
    if targets.shape != probs.shape:
        raise CnnkitError(f"multilabel audit needs targets and probabilities of one shape, got {targets.shape} "
                          f"and {probs.shape}")
    issues, scores = np.zeros(targets.shape, dtype=bool), np.zeros(targets.shape)
    for k in range(targets.shape[1]):
        binary = np.stack([1.0 - probs[:, k], probs[:, k]], 1)  # (N, 2)
        one = audit_labels(targets[:, k].astype(np.int64), binary)
        issues[:, k], scores[:, k] = one.issues, one.score()
    return issues, scores.max(1), targets ^ issues
