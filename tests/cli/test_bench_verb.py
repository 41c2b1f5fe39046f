"""`cnnkit bench`: the flags reach cnnkit.api.bench by keyword, --json is one object whose train and infer map fp32
and auto to images/s (a real LeNet-5 measurement), the table names each row, and bad input is one line, exit 2."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from tests.conftest import assert_one_line_error, run_cli

import cnnkit

FAST = ("--batch-size", "4", "--steps", "1", "--threads", "1")


def test_the_flags_reach_api_bench_by_keyword(monkeypatch, capsys) -> None:
    calls = []
    fake = types.ModuleType("cnnkit.api")
    fake.bench = lambda *args, **kwargs: calls.append((args, kwargs)) or {"train": {}, "infer": {}}
    monkeypatch.setitem(sys.modules, "cnnkit.api", fake)
    monkeypatch.setitem(vars(cnnkit), "api", fake)
    code, out, _ = run_cli(capsys, "bench", "resnet18", "--input", "3x128x128", "--batch-size", "16", "--steps", "4",
                           "--device", "cpu", "--remeasure", "--json")
    assert code == 0 and json.loads(out) == {"train": {}, "infer": {}}
    assert calls == [(("resnet18",), {"input": "3x128x128", "batch_size": 16, "steps": 4, "device": "cpu",
                                      "threads": None, "remeasure": True})]
    run_cli(capsys, "bench", "lenet5", "--json")
    assert calls[1][1] == {"input": None, "batch_size": 32, "steps": 10, "device": "auto", "threads": None,
                           "remeasure": False}


@pytest.fixture
def cache(monkeypatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path))
    return tmp_path


def test_json_is_one_object_of_images_per_second(capsys, cache: Path) -> None:
    code, out, err = run_cli(capsys, "bench", "lenet5", "--input", "1x32x32", *FAST, "--json")
    assert code == 0, err
    result = json.loads(out)  # one object: json.loads refuses anything after it
    for mode in ("train", "infer"):
        assert set(result[mode]) == {"fp32", "auto"}
        assert all(isinstance(v, float) and v > 0 for v in result[mode].values())
    assert result["input"] == [1, 32, 32] and result["batch_size"] == 4 and result["steps"] == 1
    assert len(list(cache.glob("peak-*.json"))) == 1  # the peak, measured at the start, is cached


def test_the_table(capsys, cache: Path) -> None:
    code, out, _ = run_cli(capsys, "bench", "lenet5", *FAST)
    assert code == 0
    assert out.startswith("lenet5 at 1x32x32, batch 4, 1 timed step on cpu")
    for row in ("train fp32", "train auto", "infer fp32", "infer auto", "where a training step goes"):
        assert row in out


@pytest.mark.parametrize(("argv", "fragment"), [
    (["bench", "lenet55"], "lenet55"),
    (["bench", "lenet5", "--input", "3by32"], "CxHxW"),
    (["bench", "lenet5", "--input", "1x8x8"], "does not fit"),
    (["bench", "lenet5", "--batch-size", "0"], "--batch-size"),
    (["bench", "lenet5", "--steps", "-2"], "--steps"),
    (["bench", "faster_rcnn"], "classifiers"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv: list[str], fragment: str) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(code, err, fragment)
