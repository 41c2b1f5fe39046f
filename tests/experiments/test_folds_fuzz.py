"""Fuzzing the group column reader of cross-validation (cnnkit.experiments.folds: group_csv, read_groups):
CSVs with and without the path and group columns, empty groups, paths that the source holds or not; mutations
and raw bytes. Each gives one group per item or a one-line error."""
from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import strategies as st
from tests.fuzzing import SIZES, as_bytes, clean, csv_text, fuzz, mix, mutated, texts

from cnnkit.errors import CnnkitError
from cnnkit.experiments.folds import read_groups

IDS = ["a.png", "b.png", "c.png"]
header = mix((6, st.sampled_from([["path", "label", "site"], ["path", "site"], ["site", "path"]])),
             (1, st.lists(st.sampled_from(["path", "site", "label", ""]) | texts, max_size=4)))
cells = mix((5, st.sampled_from([*IDS, "cat", "s1", "s2", ""])), (1, texts))
files = mix((6, csv_text(header, lambda column: cells)), (1, mutated("path,site\na.png,s1\nb.png,s2\nc.png,s1\n")))


def read_site(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        path.write_bytes(data)
        cfg = SimpleNamespace(data=SimpleNamespace(source=str(path)))
        groups = clean(read_groups, cfg, SimpleNamespace(ids=IDS), "site")
        assert groups is None or len(groups) == len(IDS)


@SIZES
def test_group_column_fuzz(examples: int) -> None:
    fuzz(examples, as_bytes(files), read_site)


# the inputs that fuzzing found, each once an unhandled exception or a message of several lines
FOUND = [
    (b"path,site\na.png,\xff\n", "not a readable CSV"),  # UnicodeDecodeError
    (b"path,site\na.png," + b"x" * 200_000 + b"\n", "not a readable CSV"),  # csv.Error: field larger than limit
    (b'path,"a\nb"\na.png,s\n', "has no column 'site' \\(its columns: path,'a\\\\nb'\\)"),
]


@pytest.mark.parametrize(("data", "message"), FOUND)
def test_what_fuzzing_found_is_a_one_line_error(tmp_path: Path, data: bytes, message: str) -> None:
    (tmp_path / "data.csv").write_bytes(data)
    cfg = SimpleNamespace(data=SimpleNamespace(source=str(tmp_path / "data.csv")))
    with pytest.raises(CnnkitError, match=message) as info:
        read_groups(cfg, SimpleNamespace(ids=IDS), "site")
    assert "\n" not in str(info.value)
