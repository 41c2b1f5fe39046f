"""Fuzzing the class-weight reader (cnnkit.recipes.classifier.read_class_weights): CSVs of class,weight rows
and JSON mappings or lists, with names and indices that exist or not and weights of every kind; mutations and
raw bytes. Each gives one weight per class or a one-line error."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st
from tests.fuzzing import SIZES, as_bytes, clean, csv_text, fuzz, junk, mix, mutated, numbers, texts

from cnnkit.errors import CnnkitError
from cnnkit.recipes.classifier import read_class_weights

CLASSES = ["cat", "dog", "bird"]
keys = mix((6, st.sampled_from([*CLASSES, "0", "1", "2", "3", " cat ", "²", "9" * 30])), (1, texts))
weights = mix((6, st.floats(0, 10)), (2, numbers), (1, st.sampled_from(["1.5", "x", "", "-1", "nan"])), (1, junk))
csv_file = mix((6, csv_text(mix((3, st.just(["class", "weight"])), (3, st.lists(keys, min_size=2, max_size=2)),
                                (1, st.lists(keys, max_size=3))),
                            lambda column: mix((3, keys), (3, weights.map(str))))),
               (1, mutated("class,weight\ncat,2\ndog,0.5\n")))
json_file = mix((4, st.dictionaries(keys, weights, max_size=4)), (2, st.lists(weights, min_size=3, max_size=3)),
                (1, st.lists(weights, max_size=5)), (1, junk)).map(json.dumps)
files = st.tuples(st.sampled_from([".csv", ".json", ".txt"]),
                  as_bytes(mix((1, csv_file), (1, json_file), (1, mutated(json_file)))))


def read_weights(case: tuple[str, bytes]) -> None:
    suffix, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"weights{suffix}"
        path.write_bytes(data)
        result = clean(read_class_weights, path, CLASSES)
        assert result is None or (len(result) == len(CLASSES) and all(w >= 0 for w in result))


@SIZES
def test_class_weight_reader_fuzz(examples: int) -> None:
    fuzz(examples, files, read_weights)


# the inputs that fuzzing found, each once an unhandled exception
FOUND = [
    (".csv", b"\xc2\xb2,2\n", "unknown class '\u00b2'"),  # ValueError: int('²'), which isdigit() lets through
    (".json", b'{"cat": ' + b"9" * 400 + b"}", "must be a number of at least 0"),  # OverflowError: float(10^400)
    (".json", b"[" * 100_000, "not a CSV of class,weight rows or a JSON mapping"),  # RecursionError
]


@pytest.mark.parametrize(("suffix", "data", "message"), FOUND)
def test_what_fuzzing_found_is_a_one_line_error(tmp_path: Path, suffix: str, data: bytes, message: str) -> None:
    (tmp_path / f"w{suffix}").write_bytes(data)
    with pytest.raises(CnnkitError, match=message) as info:
        read_class_weights(tmp_path / f"w{suffix}", CLASSES)
    assert "\n" not in str(info.value)
