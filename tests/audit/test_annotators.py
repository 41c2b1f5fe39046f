"""Annotator agreement: the CSV reader and its errors, Cohen's kappa against sklearn, Fleiss' kappa against the
worked example of Wikipedia's "Fleiss' kappa" page, and the agreement summary."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from cnnkit.audit.annotators import (
    agreement,
    annotator_columns,
    cohen_kappa,
    fleiss_kappa,
    read_annotations,
    vote_table,
)
from cnnkit.errors import CnnkitError

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters each, 5 categories (n_ij), with its P_i.
WIKI_TABLE = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])
WIKI_P_I = [1.000, 0.253, 0.308, 0.440, 0.330, 0.462, 0.242, 0.176, 0.286, 0.286]
WIKI_P_J = [0.143, 0.200, 0.279, 0.150, 0.229]


def test_fleiss_kappa_reproduces_the_wikipedia_example() -> None:
    assert WIKI_TABLE.sum(1).tolist() == [14] * 10 and WIKI_TABLE.sum(0).tolist() == [20, 28, 39, 21, 32]
    n = 14
    p_i = ((WIKI_TABLE ** 2).sum(1) - n) / (n * (n - 1))
    np.testing.assert_allclose(p_i, WIKI_P_I, atol=5e-4)
    np.testing.assert_allclose(WIKI_TABLE.sum(0) / WIKI_TABLE.sum(), WIKI_P_J, atol=5e-4)
    assert fleiss_kappa(WIKI_TABLE) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_from_a_label_matrix_matches_the_table() -> None:
    """14 raters' labels whose vote table is Wikipedia's: the same kappa through `vote_table`."""
    labels = np.array([[c for c, k in enumerate(row) for _ in range(k)] for row in WIKI_TABLE], dtype=object)
    table, categories = vote_table(labels)
    assert categories == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(table, WIKI_TABLE)
    result = agreement(labels)
    assert result["kappa_kind"] == "fleiss" and result["kappa"] == pytest.approx(fleiss_kappa(WIKI_TABLE))


def test_fleiss_kappa_edges() -> None:
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)
    assert np.isnan(fleiss_kappa(np.array([[3, 0], [3, 0]])))  # one category only: chance agreement is 1
    assert np.isnan(fleiss_kappa(np.array([[1, 0], [0, 1]])))  # no item with two votes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cohen_kappa_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.choice(["ant", "bee", "wasp"], 200)
    b = np.where(rng.random(200) < 0.7, a, rng.choice(["ant", "bee", "wasp"], 200))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_cohen_kappa_skips_missing_pairs() -> None:
    a = np.array(["x", "y", None, "x", "y", "x"], dtype=object)
    b = np.array(["x", "x", "y", "", "y", "x"], dtype=object)
    both = [0, 1, 4, 5]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a[both].astype(str), b[both].astype(str)))


def _write(tmp_path: Path, text: str, name: str = "ann.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_annotations(tmp_path: Path) -> None:
    path = _write(tmp_path, "path,alice,bob,carol\na.jpg,ant,ant,bee\nb.jpg,bee,,bee\nc.jpg,ant,bee,\n")
    assert annotator_columns(path) == ["alice", "bob", "carol"]
    paths, labels = read_annotations(path)
    assert paths == ["a.jpg", "b.jpg", "c.jpg"]
    assert labels.shape == (3, 3)
    assert labels.tolist() == [["ant", "ant", "bee"], ["bee", None, "bee"], ["ant", "bee", None]]
    _, two = read_annotations(path, ["carol", "alice"])
    assert two.tolist() == [["bee", "ant"], ["bee", "bee"], [None, "ant"]]


@pytest.mark.parametrize("text, columns, fragment", [
    ("", None, "empty"),
    ("name,alice,bob\na.jpg,x,y\n", None, "no path column"),
    ("path,alice\na.jpg,x\n", None, "at least two annotators"),
    ("path,alice,bob\n", None, "no rows"),
    ("path,alice,bob\na.jpg,x\n", None, "row 2 has 2 cells, the header has 3"),
    ("path,alice,bob\n,x,y\n", None, "empty 'path' cell"),
    ("path,alice,bob\na.jpg,x,y\na.jpg,y,y\n", None, "listed twice"),
    ("path,alice,bob\na.jpg,x,y\n", ["alice", "dave"], "no column 'dave'"),
])
def test_bad_csvs_are_one_line_errors(tmp_path: Path, text: str, columns: list[str] | None, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CnnkitError) as err:
        read_annotations(path, columns)
    message = str(err.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="not found"):
        read_annotations(tmp_path / "nope.csv")


def test_agreement_of_two_annotators() -> None:
    a = np.array(["ant", "bee", "ant", "bee", "ant", None], dtype=object)
    b = np.array(["ant", "bee", "bee", "bee", "ant", "ant"], dtype=object)
    result = agreement(np.stack([a, b], axis=1))
    assert result["kappa_kind"] == "cohen"
    assert result["kappa"] == pytest.approx(cohen_kappa_score(a[:5].astype(str), b[:5].astype(str)))
    assert result["percent_agreement"] == pytest.approx(4 / 5)
    assert result["majority"] == ["ant", "bee", None, "bee", "ant", "ant"]
    assert result["tie"] == [False, False, True, False, False, False]
    np.testing.assert_allclose(result["soft_labels"][2], [0.5, 0.5])
    np.testing.assert_allclose(result["soft_labels"][5], [1.0, 0.0])
    assert [d["index"] for d in result["disagreements"]] == [2]


def test_agreement_ranks_disagreements_by_vote_entropy() -> None:
    labels = np.array([
        ["a", "a", "a", "a"],  # unanimous
        ["a", "a", "a", "b"],  # 3:1, entropy 0.811 bits
        ["a", "b", "c", "d"],  # all differ, 2 bits
        ["a", "a", "b", "b"],  # 2:2, 1 bit, a tie
    ], dtype=object)
    result = agreement(labels)
    order = [d["index"] for d in result["disagreements"]]
    assert order == [2, 3, 1]
    for d in result["disagreements"]:
        p = np.array(list(d["votes"].values())) / 4
        assert d["entropy"] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-4)
    assert result["majority"] == ["a", "a", None, None]
    assert result["percent_agreement"] == pytest.approx(1 / 4)
    table, _ = vote_table(labels)
    assert result["kappa"] == pytest.approx(fleiss_kappa(table))
    pairwise = np.array(result["pairwise_kappa"])
    assert pairwise[0, 3] == pytest.approx(cohen_kappa_score(labels[:, 0].astype(str), labels[:, 3].astype(str)))
    np.testing.assert_allclose(pairwise, pairwise.T)
