"""Fuzzing the palette.yaml reader (cnnkit.data.segmentation.masks.read_palette): documents of the palette's own
keys (classes as names or {name, color}, ignore_index, ignore_color) with values of every wrong type, unknown
keys, YAML's tricks (billion laughs, recursive aliases, !!python tags, impossible dates, deep nesting),
mutations and raw bytes. Each is a Palette or a one-line error."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import strategies as st
from tests.fuzzing import LAUGHS, SIZES, as_bytes, clean, fuzz, junk, maybe, mix, mutated, texts, yaml_tricks

from cnnkit.data.segmentation.masks import read_palette
from cnnkit.errors import CnnkitError

VALID = "classes:\n  - {name: road, color: [128, 64, 128]}\n  - {name: sky, color: [70, 130, 180]}\nignore_index: 255\n"
byte = mix((8, st.integers(0, 255)), (1, st.integers(-1, 300)), (1, junk))
colour = mix((6, st.lists(byte, min_size=3, max_size=3)), (1, st.lists(byte, max_size=5)), (1, junk))
name = mix((6, st.sampled_from(["road", "sky", "car"])), (1, st.integers()), (1, texts), (1, junk))
entry = mix((4, st.fixed_dictionaries({"name": name}, optional={"color": colour, "colour": colour, "x": junk})),
            (2, name), (1, junk))
palette = st.fixed_dictionaries({}, optional={
    "classes": maybe(st.lists(entry, min_size=1, max_size=4)), "ignore_index": maybe(st.integers(0, 300)),
    "ignore_color": colour, "ignore_colour": colour, "extra": junk, 1: junk})
documents = mix((6, palette.map(lambda d: yaml.safe_dump(d, allow_unicode=True))), (2, mutated(VALID)),
                (1, yaml_tricks), (1, yaml_tricks.map(lambda trick: f"classes: {trick}")))


def read(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "palette.yaml"
        path.write_bytes(data)
        clean(read_palette, path)


@SIZES
def test_palette_reader_fuzz(examples: int) -> None:
    fuzz(examples, as_bytes(documents), read)


def test_the_valid_palette_reads(tmp_path: Path) -> None:
    (tmp_path / "palette.yaml").write_text(VALID)
    assert read_palette(tmp_path / "palette.yaml").classes == ["road", "sky"]


@pytest.mark.parametrize("text", [LAUGHS + "\nclasses: [*a8]\n", "classes: &a [*a]\n", "classes: [a, b]\n1: x\nz: y\n"],
                         ids=["billion-laughs", "recursive-alias", "mixed-key-types"])
def test_hostile_palettes_are_one_line_errors(tmp_path: Path, text: str) -> None:
    (tmp_path / "palette.yaml").write_text(text)
    start = time.perf_counter()
    with pytest.raises(CnnkitError) as info:
        read_palette(tmp_path / "palette.yaml")
    assert "\n" not in str(info.value) and "palette.yaml" in str(info.value)
    assert time.perf_counter() - start < 5
