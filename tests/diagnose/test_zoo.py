"""`cnnkit models`: the zoo table (parameters, depth, size, GFLOPs) for every registered model, and --bench."""
from __future__ import annotations

import contextlib
import io
import json
import time

import pytest

from cnnkit.cli.app import main
from cnnkit.diagnose.zoo import bench_model, bench_rows, format_table, machine, num_threads
from cnnkit.models.factory import list_models

KNOWN = {  # name: (parameters, depth in weight layers), from the papers and torchvision
    "lenet5": (61_706, 5), "resnet18": (11_689_512, 18), "resnet34": (21_797_672, 34), "resnet50": (25_557_032, 50),
    "vgg16": (138_357_544, 16), "vgg19": (143_667_240, 19), "googlenet": (None, 22), "densenet121": (7_978_856, 121),
}


@pytest.fixture(scope="module")
def table() -> dict[str, dict]:
    """`cnnkit models --json`, run once for the whole zoo (capsys is per test, so stdout is redirected here)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["models", "--json"]) == 0
    return {row["name"]: row for row in json.loads(buffer.getvalue())}


def test_json_contract_covers_every_registered_model(table: dict) -> None:
    assert sorted(table) == list_models()
    for row in table.values():
        assert {"name", "task", "paper", "params", "depth", "size_mb", "gflops"} <= set(row)
        assert "error" not in row, row
        assert row["params"] > 0 and row["depth"] > 0 and row["gflops"] > 0


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_params_and_depth(table: dict, name: str) -> None:
    if name not in table:
        pytest.skip(f"{name} is not registered")
    params, depth = KNOWN[name]
    assert table[name]["depth"] == depth
    if params is not None:
        assert table[name]["params"] == params
        assert table[name]["size_mb"] == pytest.approx(params * 4 / 2**20, abs=0.01)


def test_gflops_on_meta_match_flop_counter_on_a_real_forward(table: dict) -> None:
    # the table traces on the meta device; these are FlopCounterMode's totals of real CPU forwards
    # (tests/diagnose/test_inspect.py checks them), resnet18's being torchvision's 1.81 GMACs
    assert table["resnet18"]["gflops"] == pytest.approx(3_628_146_688 / 1e9, abs=1e-4)
    assert table["lenet5"]["gflops"] == pytest.approx(833_040 / 1e9, abs=1e-4)


def test_text_table_and_task_filter(table: dict, capsys) -> None:
    text = format_table(list(table.values()))
    assert "lenet5" in text and "61,706" in text and "GFLOPs" in text and "2**20" in text
    assert "ms/img" not in text
    assert main(["models", "--task", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: no registered models for task 'nope'")


def test_named_models_and_spec_networks_get_their_own_rows(capsys) -> None:
    """`cnnkit models NAME ...` gives the rows of those names only; a spec network is counted at its default
    input, 3×32×32: the LeNet-5 spec has 61,706 parameters on one channel, 150 more weights on three."""
    lenet = "spec:conv6k5-tanh-avgpool2-conv16k5-tanh-avgpool2-fc120-tanh-fc84-tanh-fc10"
    assert main(["models", "lenet5", lenet, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["lenet5", lenet]
    assert rows[1]["params"] == 61_706 + 6 * 25 * 2 and rows[1]["input_size"] == [3, 32, 32]
    assert main(["models", "spec:conv6k5-nonsense"]) == 2  # a bad spec: one line, exit 2


def test_bench_gives_latencies_at_batch_1_and_32(table: dict) -> None:
    rows = [dict(table["lenet5"])]
    bench_rows(rows, budget_s=3.0, threads=1)
    assert rows[0]["latency_ms_b1"] > 0 and rows[0]["latency_ms_b32"] > 0 and rows[0]["threads"] == 1
    assert 1 <= rows[0]["runs_b1"] <= 5 and 1 <= rows[0]["runs_b32"] <= 5


def test_bench_stays_within_the_budget(table: dict) -> None:
    rows = [dict(table["resnet18"]), dict(table["lenet5"])]
    start = time.perf_counter()
    bench_rows(rows, budget_s=0.3, threads=1)
    assert time.perf_counter() - start < 3
    by_name = {r["name"]: r for r in rows}
    assert by_name["lenet5"]["latency_ms_b1"] > 0  # cheapest first
    assert by_name["resnet18"]["latency_ms_b1"] is None  # predicted from lenet5's pace not to fit
    text = format_table(rows, bench=True)
    assert "ms/img b32" in text and machine()["cpu"] in text and "1 threads" in text


def test_batch_32_is_skipped_when_it_does_not_fit() -> None:
    with num_threads(1):
        result = bench_model("resnet18", share_s=0.2, most=2)
    assert result["latency_ms_b1"] > 0 and result["runs_b1"] >= 1
    assert result["latency_ms_b32"] is None and result["runs_b32"] == 0
