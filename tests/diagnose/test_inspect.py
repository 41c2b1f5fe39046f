"""`cnnkit inspect`: per-layer shapes, FLOPs, receptive fields and connection counts, checked by hand and
against torch; one-line errors. (The kernel and feature-map pictures: tests/diagnose/test_pictures.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.cli.app import main
from cnnkit.diagnose.inspect import connection_params, conv_output_size, inspect_model, parse_input_size
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec, list_models


def _layers(report: dict) -> dict[str, dict]:
    return {r["name"]: r for r in report["layers"]}


@pytest.fixture(scope="module")
def lenet() -> dict:
    return inspect_model("lenet5")


@pytest.fixture(scope="module")
def resnet18_model() -> nn.Module:
    return create_model("resnet18").eval()


@pytest.fixture(scope="module")
def resnet18(resnet18_model: nn.Module) -> dict:
    return inspect_model(resnet18_model, (3, 224, 224))


def _flop_counter_total(model: nn.Module, size: tuple[int, ...]) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, *size))
    return counter.get_total_flops()


# ---------------------------------------------------------------- numbers known by hand or from the papers

def test_lenet5_params_depth_and_flops_by_hand(lenet: dict) -> None:
    assert lenet["total_params"] == 61_706 and lenet["depth"] == 5 and lenet["input_size"] == [1, 32, 32]
    # 2·k²·Cin·Cout·H'·W' per convolution, 2·in·out per linear layer
    convs = 2 * 25 * 1 * 6 * 28 * 28 + 2 * 25 * 6 * 16 * 10 * 10 + 2 * 25 * 16 * 120 * 1 * 1
    linears = 2 * 120 * 84 + 2 * 84 * 10
    assert lenet["total_flops"] == convs + linears == 833_040
    assert sum(r["flops"] for r in lenet["layers"]) == lenet["total_flops"]
    assert _layers(lenet)["c3"]["flops"] == 2 * 25 * 6 * 16 * 10 * 10


def test_lenet5_receptive_field_by_hand(lenet: dict) -> None:
    # c1 5 → s2 6 (jump 2) → c3 6 + 4·2 = 14 → s4 16 (jump 4) → c5 16 + 4·4 = 32: the whole 32×32 input
    rows = _layers(lenet)
    assert [rows[n]["receptive_field"] for n in ("c1", "s2", "c3", "s4", "c5")] == [[5, 5], [6, 6], [14, 14],
                                                                                  [16, 16], [32, 32]]
    assert rows["c5"]["jump"] == [4, 4] and lenet["receptive_field"] == [32, 32]
    assert rows["f6"]["receptive_field"] is None  # not a spatial output
    assert lenet["notes"] == []  # a chain: no branch caveat


def test_lenet5_rows_in_forward_order_with_shapes(lenet: dict) -> None:
    names = [r["name"] for r in lenet["layers"]]
    assert names[:3] == ["c1", "act1", "s2"] and names[-1] == "output"
    assert _layers(lenet)["s4"]["output_shape"] == [1, 16, 5, 5]
    assert lenet["top_params"][0]["name"] == "c5" and lenet["top_params"][0]["share"] == pytest.approx(48_120 / 61_706)


def test_resnet18_depth_params_and_receptive_field(resnet18: dict) -> None:
    assert resnet18["total_params"] == 11_689_512
    assert resnet18["depth"] == 18  # the projection shortcuts are not on the longest path
    assert resnet18["receptive_field"] == [435, 435] and resnet18["jump"] == [32, 32]
    assert any("residual" in n for n in resnet18["notes"])


def test_sizes_agree_with_the_forward_pass(lenet: dict, resnet18: dict) -> None:
    for report in (lenet, resnet18):
        checked = [r for r in report["layers"] if "size_ok" in r]
        assert checked and all(r["size_ok"] for r in checked) and report["size_mismatches"] == []


def test_flops_match_flop_counter(resnet18_model: nn.Module, resnet18: dict) -> None:
    reference = _flop_counter_total(resnet18_model, (3, 224, 224))
    assert reference == 3_628_146_688  # torchvision's 1.81 GMACs
    assert sum(r["flops"] for r in resnet18["layers"]) == pytest.approx(reference, rel=0.01)


@pytest.mark.skipif("vgg16" not in list_models(), reason="vgg16 is not registered")
def test_vgg16_acceptance() -> None:
    model = create_model("vgg16").eval()
    report = inspect_model(model, "3x224x224")
    convs_pools = [r for r in report["layers"] if "size_ok" in r]
    assert len(convs_pools) >= 18 and all(r["size_ok"] for r in convs_pools)
    reference = _flop_counter_total(model, (3, 224, 224))
    assert report["total_flops"] == pytest.approx(reference, rel=0.01)
    assert sum(r["flops"] for r in report["layers"]) == pytest.approx(reference, rel=0.01)
    assert report["total_params"] == 138_357_544 and report["depth"] == 16
    fc = sum(t["params"] for t in report["top_params"][:3])
    assert fc == pytest.approx(123.6e6, rel=0.01)  # the three FC layers hold ~124M of 138M
    assert report["receptive_field"] == [212, 212]


# ---------------------------------------------------------------- formulas

@pytest.mark.parametrize("size,k,s,p,d,ceil", [
    (224, 7, 2, 3, 1, False), (112, 3, 2, 1, 1, False), (32, 5, 1, 0, 1, False), (13, 3, 2, 0, 1, True),
    (14, 3, 2, 0, 1, True), (10, 3, 1, 1, 2, False), (7, 2, 2, 1, 1, True), (55, 3, 2, 0, 1, False),
])
def test_output_size_formula_matches_torch(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> None:
    x = torch.zeros(1, 1, size, size)
    conv = F.conv2d(x, torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
    pool = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
    assert conv_output_size(size, k, s, p, d) == conv.shape[-1]
    assert conv_output_size(size, k, s, p, d, ceil_mode=ceil) == pool.shape[-1]


class _PaddedConv(nn.Conv2d):
    """A convolution that pads its input itself: the formula on its own attributes must disagree."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (1, 1, 1, 1)))


def test_a_size_mismatch_is_flagged() -> None:
    report = inspect_model(nn.Sequential(nn.Conv2d(1, 2, 3), _PaddedConv(2, 2, 3)), (1, 8, 8))
    rows = report["layers"]
    assert rows[0]["size_ok"] and not rows[1]["size_ok"] and report["size_mismatches"] == ["1"]
    assert rows[1]["formula_size"] == [4, 4] and rows[1]["output_shape"] == [1, 2, 6, 6]


def test_connection_counts_by_hand() -> None:
    # one 4×4 image, 4×4 units, 3×3 windows ('same'): M²(M²+1), (N²+1)M², N²+1
    assert connection_params(1, 4, 4, 1, 4, 4, 3, 3) == {
        "fully_connected": 16 * 17, "locally_connected": 10 * 16, "convolution": 10}
    # 2 channels of 3×3 → 4 units of 1×1 with a 3×3 window: all three are the same layer
    assert set(connection_params(2, 3, 3, 4, 1, 1, 3, 3).values()) == {(2 * 9 + 1) * 4}
    # groups: each unit sees c_in / groups channels
    assert connection_params(4, 5, 5, 4, 5, 5, 3, 3, groups=4)["convolution"] == (9 + 1) * 4


def test_connection_counts_in_the_report(lenet: dict) -> None:
    c1 = _layers(lenet)["c1"]["connections"]
    assert c1 == {"fully_connected": (32 * 32 + 1) * 6 * 28 * 28, "locally_connected": (25 + 1) * 6 * 28 * 28,
                  "convolution": 156}


def test_parse_input_size() -> None:
    assert parse_input_size("3x224x224") == (3, 224, 224) == parse_input_size((3, 224, 224))
    for bad in ("3x224", "axbxc", "3x0x4", "", "3x224x224x2"):
        with pytest.raises(CnnkitError, match="expected CxHxW like 3x224x224"):
            parse_input_size(bad)


# ---------------------------------------------------------------- CLI: JSON contract and errors

def test_inspect_json_contract(capsys) -> None:
    assert main(["inspect", "lenet5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"layers", "total_params", "total_flops"} <= set(report)
    assert report["total_params"] == 61_706 and report["total_flops"] == 833_040
    for row in report["layers"]:
        assert {"name", "type", "output_shape", "params", "flops", "receptive_field"} <= set(row)


def test_inspect_text_and_input_option(capsys) -> None:
    assert main(["inspect", "lenet5", "--input", "3x32x32"]) == 0  # the model is built for 3 channels
    out = capsys.readouterr().out
    assert "c5" in out and "120x1x1" in out and "62,006 parameters" in out and "MISMATCH" not in out
    assert "fully connected" in out and "4,821,600" not in out  # c1 now reads 3 channels


def _one_line_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_errors_are_one_line(capsys, tmp_path: Path) -> None:
    assert "did you mean 'lenet5'" in _one_line_error(capsys, "inspect", "lenet4")
    assert "expected CxHxW like 3x224x224" in _one_line_error(capsys, "inspect", "lenet5", "--input", "32x32")
    assert "input 1x8x8 is too small for lenet5" in _one_line_error(capsys, "inspect", "lenet5", "--input", "1x8x8")
    assert "input 1x36x36 does not fit lenet5" in _one_line_error(capsys, "inspect", "lenet5", "--input", "1x36x36")
    assert "needs --layer" in _one_line_error(capsys, "inspect", "lenet5", "--feature-maps", str(tmp_path / "x.png"))


def test_torchvision_names_work_too() -> None:
    try:
        get_spec("tv/squeezenet1_1")
    except CnnkitError:
        pytest.skip("tv/ names are not available")
    report = inspect_model("tv/squeezenet1_1")  # max pooling with ceil_mode=True
    assert report["total_params"] == 1_235_496 and report["size_mismatches"] == []
    assert any(r["type"] == "MaxPool2d" and r["size_ok"] for r in report["layers"])
