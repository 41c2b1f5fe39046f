"""Several annotators, one label column each: how far they agree, and what to train on.

- `read_annotations`: a CSV with a path column (`path`, or `file`, `filename`, `image`) and one label column per
  annotator; an empty cell is a label that annotator did not give.
- `cohen_kappa` (two annotators): kappa = (p_o - p_e) / (1 - p_e), p_o the share of items they label alike, p_e the
  share expected by chance from each one's label frequencies (Cohen 1960); equal to sklearn's `cohen_kappa_score`.
- `fleiss_kappa` (any number of annotators, Fleiss 1971): from the (items, categories) table n_ij of votes,
  P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)), p_j = sum_i n_ij / sum_i n_i, kappa = (mean P_i - sum_j p_j^2) /
  (1 - sum_j p_j^2). Items with fewer than two votes are left out; with missing labels n_i varies per item (the
  usual generalisation; with n_i equal it is Fleiss' formula).
- `agreement`: the summary the audit shows: kappa, percent agreement, majority and soft labels, disagreements.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cnnkit.errors import CnnkitError, brief, listed

__all__ = ["PATH_COLUMNS", "agreement", "annotator_columns", "cohen_kappa", "fleiss_kappa", "read_annotations",
           "vote_table"]

PATH_COLUMNS = ("path", "file", "filename", "image")


def _read_rows(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    if not csv_path.is_file():
        raise CnnkitError(f"annotation CSV not found: {csv_path}")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            rows = [[cell.strip() for cell in row] for row in csv.reader(f)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise CnnkitError(f"{csv_path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    rows = [r for r in rows if any(r)]
    if not rows:
        raise CnnkitError(f"{csv_path}: empty; expected a header 'path,<annotator1>,<annotator2>,...' and rows")
    return rows[0], rows[1:]


def _path_column(csv_path: Path, header: list[str]) -> int:
    lowered = [h.lower() for h in header]
    for name in PATH_COLUMNS:
        if name in lowered:
            return lowered.index(name)
    raise CnnkitError(f"{csv_path}: no path column (one of {', '.join(PATH_COLUMNS)}); the header is "
                      f"{listed(header) or 'empty'}")


def annotator_columns(csv_path: str | Path) -> list[str]:
    """The label columns `read_annotations` reads by default: every column but the path column, in order."""
    csv_path = Path(csv_path)
    header, _ = _read_rows(csv_path)
    at = _path_column(csv_path, header)
    return [h for k, h in enumerate(header) if k != at]


def read_annotations(csv_path: str | Path, columns: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(paths as written, labels (N, A) object array of str, None where the cell is empty), one column per
    annotator: `columns`, or every column but the path column."""
    csv_path = Path(csv_path)
    header, rows = _read_rows(csv_path)
    at = _path_column(csv_path, header)
    columns = annotator_columns(csv_path) if columns is None else list(columns)
    unknown = [c for c in columns if c not in header]
    if unknown:
        raise CnnkitError(f"{csv_path}: no column {brief(unknown[0])}; the header is {listed(header)}")
    if len(columns) < 2:
        raise CnnkitError(f"{csv_path}: {len(columns)} label column(s) ({listed(columns) or 'none'}); agreement "
                          "needs at least two annotators, one column each")
    if not rows:
        raise CnnkitError(f"{csv_path}: no rows under the header")
    picks = [header.index(c) for c in columns]
    paths, labels, seen = [], [], {}
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise CnnkitError(f"{csv_path}: row {line} has {len(row)} cells, the header has {len(header)}")
        if not row[at]:
            raise CnnkitError(f"{csv_path}: row {line} has an empty {brief(header[at])} cell")
        if row[at] in seen:
            raise CnnkitError(f"{csv_path}: {brief(row[at])} is listed twice (rows {seen[row[at]]} and {line}); "
                              "give one row per image, one column per annotator")
        seen[row[at]] = line
        paths.append(row[at])
        labels.append([row[k] or None for k in picks])
    return paths, np.asarray(labels, dtype=object).reshape(len(paths), len(columns))


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, str) and x == "") or (isinstance(x, float) and np.isnan(x))


def _encode(labels: np.ndarray) -> tuple[np.ndarray, list]:
    """(N, A) labels of any type → (N, A) int64 codes (-1 missing), and the categories in sorted order."""
    labels = np.asarray(labels, dtype=object)
    present = sorted({x for x in labels.ravel() if not _missing(x)}, key=lambda v: (str(type(v)), v))
    index = {c: k for k, c in enumerate(present)}
    codes = np.array([[-1 if _missing(x) else index[x] for x in row] for row in labels], dtype=np.int64)
    return codes.reshape(labels.shape), present


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two annotators' labels over the items both labelled (nan if chance agreement is 1)."""
    codes, categories = _encode(np.stack([np.asarray(a, dtype=object), np.asarray(b, dtype=object)], axis=1))
    both = (codes >= 0).all(1)
    x, y = codes[both, 0], codes[both, 1]
    if len(x) == 0:
        return float("nan")
    k = len(categories)
    confusion = np.bincount(x * k + y, minlength=k * k).reshape(k, k) / len(x)  # (K, K) joint shares
    p_o = np.trace(confusion)
    p_e = float(confusion.sum(1) @ confusion.sum(0))
    return float((p_o - p_e) / (1 - p_e)) if p_e < 1 else float("nan")


def vote_table(labels: np.ndarray) -> tuple[np.ndarray, list]:
    """(N, A) labels → (N, K) vote counts n_ij, and the K categories."""
    codes, categories = _encode(labels)
    table = np.zeros((len(codes), len(categories)), dtype=np.int64)
    for column in codes.T:
        given = column >= 0
        np.add.at(table, (np.flatnonzero(given), column[given]), 1)
    return table, categories


def fleiss_kappa(ratings: np.ndarray) -> float:
    """Fleiss' kappa of an (items, categories) table of vote counts (each row: how many annotators chose each
    category); nan when fewer than one item has two votes or chance agreement is 1."""
    table = np.asarray(ratings, dtype=np.float64)
    if table.ndim != 2:
        raise CnnkitError(f"fleiss_kappa needs an (items, categories) table of counts, got shape {table.shape}")
    n_i = table.sum(1)
    table, n_i = table[n_i >= 2], n_i[n_i >= 2]
    if len(table) == 0:
        return float("nan")
    p_item = ((table ** 2).sum(1) - n_i) / (n_i * (n_i - 1))  # (N,) P_i
    p_cat = table.sum(0) / n_i.sum()  # (K,) p_j
    p_bar, p_e = p_item.mean(), float((p_cat ** 2).sum())
    return float((p_bar - p_e) / (1 - p_e)) if p_e < 1 else float("nan")


def _entropy(table: np.ndarray) -> np.ndarray:
    """(N, K) counts → (N,) entropy of each row's vote distribution, in bits (0 for no votes)."""
    total = table.sum(1, keepdims=True)
    p = np.divide(table, total, out=np.zeros(table.shape), where=total > 0)
    return -(p * np.log2(np.where(p > 0, p, 1.0))).sum(1)


def agreement(labels: np.ndarray) -> dict:
    """The agreement of A annotators over N items, (N, A) labels (None / '' / nan: not labelled):

    {"annotators", "items", "categories", "kappa" and "kappa_kind" (Cohen's for 2 annotators, Fleiss' for 3+),
    "pairwise_kappa" (A x A Cohen's kappa), "percent_agreement" (share of items with 2+ votes on which all votes
    agree), "majority" (per item the most voted label, None for a tie or no vote), "tie" (per item),
    "soft_labels" ((N, K) vote shares), "disagreements" ([{"index", "votes": {label: n}, "entropy"}] of items
    with 2+ distinct labels, highest vote entropy first)}."""
    labels = np.asarray(labels, dtype=object)
    if labels.ndim != 2 or labels.shape[1] < 2:
        raise CnnkitError(f"agreement needs (items, annotators) labels with 2+ annotators, got shape {labels.shape}")
    table, categories = vote_table(labels)
    n_annotators = labels.shape[1]
    pairwise = np.eye(n_annotators)
    for a in range(n_annotators):
        for b in range(a + 1, n_annotators):
            pairwise[a, b] = pairwise[b, a] = cohen_kappa(labels[:, a], labels[:, b])
    votes = table.sum(1)
    rated = votes >= 2
    top = table.max(1) if table.size else np.zeros(len(table), dtype=np.int64)
    tie = (table == top[:, None]).sum(1) > 1 if table.size else np.zeros(len(table), dtype=bool)
    tie &= votes > 0
    majority = [None if votes[i] == 0 or tie[i] else categories[int(table[i].argmax())] for i in range(len(table))]
    entropy = _entropy(table)
    split = np.flatnonzero((table > 0).sum(1) >= 2)
    split = split[np.argsort(-entropy[split], kind="stable")]
    return {
        "annotators": n_annotators, "items": len(labels), "categories": categories,
        "kappa": float(pairwise[0, 1]) if n_annotators == 2 else fleiss_kappa(table),
        "kappa_kind": "cohen" if n_annotators == 2 else "fleiss", "pairwise_kappa": pairwise.tolist(),
        "percent_agreement": float((table[rated].max(1) == votes[rated]).mean()) if rated.any() else float("nan"),
        "majority": majority, "tie": tie.tolist(),
        "soft_labels": np.divide(table, np.maximum(votes, 1)[:, None]),
        "disagreements": [{"index": int(i), "entropy": round(float(entropy[i]), 4),
                           "votes": {categories[k]: int(table[i, k]) for k in np.flatnonzero(table[i])}}
                          for i in split],
    }
