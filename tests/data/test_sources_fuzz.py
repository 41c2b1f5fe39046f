"""Fuzzing the CSV reader of labelled images (cnnkit.data.sources.from_csv): headers of the known columns and of
junk, rows of paths that exist or not, labels, 'a;b' label sets and numbers of every kind, quoted or not, rows
too short or too long; mutations of a valid file and raw bytes. Each is a source or a one-line error."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import strategies as st
from tests.fuzzing import SIZES, as_bytes, clean, csv_text, fuzz, mix, mutated, numbers, texts

from cnnkit.data.sources import from_csv
from cnnkit.errors import CnnkitError

COLUMNS = ["path", "label", "x", "y", " path ", "", "PATH", "label "]
HEADERS = [["path", "label"], ["path", "x"], ["path", "x", "y"], ["label", "path"]]
PATHS = ["a.png", "b.png", "sub/c.png", "missing.png", "", "/etc/passwd", "x" * 300, "../a.png", "sub", "a.png\x00"]
VALID = "path,label\na.png,cat\nb.png,dog\nsub/c.png,cat;dog\n"

header = mix((8, st.sampled_from(HEADERS)), (1, st.lists(st.sampled_from(COLUMNS) | texts, max_size=4)))
paths = mix((6, st.sampled_from(PATHS[:3])), (2, st.sampled_from(PATHS)), (1, texts))
labels = mix((6, st.sampled_from(["cat", "dog", "cat;dog", ";", "cat; ;dog", ""])), (1, numbers.map(str)), (1, texts))
values = mix((6, st.floats(-5, 5).map(str)), (2, numbers.map(str)), (1, texts))


def cell(column: str) -> st.SearchStrategy:
    """A cell of the column: paths under 'path', label sets under 'label', numbers elsewhere, junk now and then."""
    own = {"path": paths, "label": labels}.get(column.strip().lower(), values)
    return mix((8, own), (1, paths | labels | values))


files = mix((6, csv_text(header, cell)), (2, mutated(VALID)), (1, mutated(csv_text(header, cell))))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csv")
    (root / "sub").mkdir()
    for name in ("a.png", "b.png", "sub/c.png"):
        (root / name).write_bytes(b"")  # from_csv checks that the files exist; it reads none
    return root


def read_csv_file(data: bytes, folder: Path) -> None:
    path = folder / "labels.csv"
    path.write_bytes(data)
    clean(from_csv, path)


@SIZES
def test_csv_source_fuzz(examples: int, folder: Path) -> None:
    fuzz(examples, as_bytes(files), lambda data: read_csv_file(data, folder))


def test_the_valid_csv_reads(folder: Path) -> None:
    (folder / "valid.csv").write_text(VALID)
    source = from_csv(folder / "valid.csv")
    assert source.problem == "multilabel" and source.classes == ["cat", "dog"]


# the inputs that fuzzing found, each once an unhandled exception, a message of several lines or a source of no
# classes
FOUND = [
    (b"path,,x\na.png,1,2\nb.png,3,4\n", "column 2 of the header has no name"),  # KeyError: ''
    (b"path,label\n" + b"x" * 300 + b",cat\nb.png,dog\n", "1 listed file.* do not exist"),  # OSError: name too long
    (b"path,label\na.png,\xff\n", "not a readable CSV \\('utf-8' codec can't decode"),  # UnicodeDecodeError
    (b"path,label\na.png," + b"x" * 200_000 + b"\n", "not a readable CSV \\(field larger than field limit"),
    (b'"pa\nth",label\na.png,cat\n', "it has: 'pa\\\\nth',label"),  # a header of two lines, in the message
    (b"path,label\na.png,;\nb.png, ; \n", "every 'label' cell is empty"),  # a multilabel source of no labels
]


@pytest.mark.parametrize(("data", "message"), FOUND)
def test_what_fuzzing_found_is_a_one_line_error(folder: Path, data: bytes, message: str) -> None:
    (folder / "found.csv").write_bytes(data)
    with pytest.raises(CnnkitError, match=message) as info:
        from_csv(folder / "found.csv")
    assert "\n" not in str(info.value)
