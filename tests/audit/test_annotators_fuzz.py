"""Fuzzing the annotator CSV reader (cnnkit.audit.annotators): headers with a path column and annotator
columns (or none), rows of labels, empty cells, repeated paths, rows too short or too long, the columns asked
for existing or not; mutations and raw bytes. Each is a table or a one-line error."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st
from tests.fuzzing import SIZES, as_bytes, clean, csv_text, fuzz, mix, mutated, texts

from cnnkit.audit.annotators import annotator_columns, read_annotations
from cnnkit.errors import CnnkitError

NAMES = ["path", "file", "image", "ann1", "ann2", "ann3", "", "PATH"]
header = mix((6, st.sampled_from([["path", "ann1", "ann2"], ["image", "a", "b", "c"], ["path", "ann1"]])),
             (2, st.lists(st.sampled_from(NAMES) | texts, max_size=4)))
cells = mix((6, st.sampled_from(["cat", "dog", "", "a.png", "b.png"])), (1, texts))
files = mix((6, csv_text(header, lambda column: cells)), (1, mutated("path,ann1,ann2\na.png,cat,dog\nb.png,dog,\n")))
columns = st.none() | st.lists(st.sampled_from(["ann1", "ann2", "a", "b", "path", "zzz"]), max_size=3)


def read_table(case: tuple[bytes, list[str] | None]) -> None:
    data, wanted = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        path.write_bytes(data)
        clean(annotator_columns, path)
        result = clean(read_annotations, path, wanted)
        if result is not None:
            paths, labels = result
            assert labels.shape[0] == len(paths)


@SIZES
def test_annotator_csv_fuzz(examples: int) -> None:
    fuzz(examples, st.tuples(as_bytes(files), columns), read_table)


def test_a_header_cell_of_two_lines_stays_on_one_line_of_the_message(tmp_path: Path) -> None:
    """Found by fuzzing: the header was joined into the message as it was, newline and all."""
    (tmp_path / "a.csv").write_bytes(b'"fi\nle",ann1,ann2\na.png,cat,dog\n')
    with pytest.raises(CnnkitError, match="no path column .*the header is 'fi\\\\nle',ann1,ann2") as info:
        read_annotations(tmp_path / "a.csv")
    assert "\n" not in str(info.value)
