"""docs/reliability.md stays true: every test its table of hostile inputs names exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(\w+)")


def _references() -> list[tuple[str, str]]:
    """(test file, test name) of every `file::name` and `::name` (the row's previous file) in the table."""
    found = []
    for line in (ROOT / "docs" / "reliability.md").read_text().splitlines():
        if not line.startswith("| "):
            continue
        current = None
        for file, name in REFERENCE.findall(line):
            current = file or current
            assert current, f"a test named without its file: {line}"
            found.append((current, name))
    return found


def test_every_test_the_table_names_exists() -> None:
    refs = _references()
    assert len(refs) > 50
    missing = [f"{file}::{name}" for file, name in refs
               if not (ROOT / file).is_file() or not re.search(rf"^def {name}\(", (ROOT / file).read_text(), re.M)]
    assert not missing, missing
