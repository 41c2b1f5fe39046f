"""cnnkit.experiments.bench: the op → category table, the profile breakdown, LeNet-5's FLOPs against a count by
hand, the models it opens (zoo name, run folder) and refuses, and one real measurement of LeNet-5 at 32×32: the
keys, MFU = FLOPs × images/s ÷ the cached peak, the breakdown within the step; `auto` as bf16 where the CPU has
it."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cnnkit.engine.precision import cpu_bf16
from cnnkit.errors import CnnkitError
from cnnkit.experiments.bench import (
    CATEGORIES,
    DATA_WAIT,
    bench,
    breakdown,
    event_category,
    format_bench,
    op_category,
    open_subject,
    probe,
)
from cnnkit.experiments.peak import peak_gflops
from cnnkit.models.factory import create_model

FAST = {"batch_size": 8, "steps": 2, "threads": 1, "peak_seconds": 0.0, "profile_steps": 1}
# LeNet-5 on 1×32×32, multiply-adds × 2: C1 6·28·28·(1·5·5), C3 16·10·10·(6·5·5), C5 120·(16·5·5), F6 120·84,
# output 84·10
LENET5_FLOPS = 2 * (6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 120 * 400 + 120 * 84 + 84 * 10)
KEYS = {"model", "input", "batch_size", "steps", "device", "threads", "precision", "train", "infer", "flops", "peak",
        "mfu", "breakdown", "bn_folded"}


@pytest.mark.parametrize(("name", "category"), [
    ("aten::conv2d", "conv"), ("aten::mkldnn_convolution", "conv"), ("aten::convolution_backward", "conv"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", "conv"), ("aten::_slow_conv2d_forward", "conv"),
    ("aten::addmm", "gemm"), ("aten::mm", "gemm"), ("AddmmBackward0", "gemm"), ("aten::linear", "gemm"),
    ("aten::native_batch_norm", "norm"), ("aten::native_batch_norm_backward", "norm"),
    ("NativeBatchNormBackward0", "norm"), ("aten::native_layer_norm", "norm"), ("aten::group_norm", "norm"),
    ("aten::add_", "elementwise"), ("aten::relu_", "elementwise"), ("aten::silu", "elementwise"),
    ("aten::threshold_backward", "elementwise"), ("aten::_foreach_addcdiv_", "elementwise"),
    ("aten::_to_copy", "elementwise"), ("aten::max_pool2d_with_indices", "other"),
    ("aten::nll_loss_forward", "other"), ("aten::empty", "other"), ("aten::expand", "other"),
    ("aten::linalg_vector_norm", "other"), (DATA_WAIT, "data_wait"),
])
def test_op_category(name: str, category: str) -> None:
    assert op_category(name) == category


def _event(name: str, parent=None, us: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(name=name, cpu_parent=parent, self_cpu_time_total=us)


def test_an_op_of_no_category_takes_its_callers_and_the_loaders_mark_wins() -> None:
    conv = _event("aten::mkldnn_convolution", _event("aten::conv2d"))
    assert event_category(_event("aten::empty", conv)) == "conv"
    assert event_category(_event("aten::empty")) == "other"
    assert event_category(_event("aten::add", _event(DATA_WAIT))) == "data_wait"


def test_breakdown_is_self_time_per_category_per_step() -> None:
    conv = _event("aten::mkldnn_convolution", us=3000)
    events = [conv, _event("aten::empty", conv, 1000), _event("aten::add_", us=2000), _event(DATA_WAIT, us=500),
              _event("aten::max_pool2d_with_indices", us=1000)]
    got = breakdown(events, wall_s=0.02, steps=2)
    assert got == {"step_ms": 10.0, "conv": 2.0, "gemm": 0.0, "norm": 0.0, "elementwise": 1.0, "other": 0.5,
                   "data_wait": 0.25}


def test_forward_flops_of_lenet5_match_the_count_by_hand() -> None:
    assert probe(create_model("lenet5", num_classes=10), (1, 32, 32), "lenet5") == (10, LENET5_FLOPS)


def test_a_run_folder_gives_its_model_and_the_cards_input_size(tmp_path: Path) -> None:
    from cnnkit.runs.card import ModelCard
    from cnnkit.runs.folder import save_model

    card = ModelCard(architecture="lenet5", task="multiclass", classes=["a", "b"], input_size=[3, 32, 32],
                     mean=[0.5] * 3, std=[0.5] * 3)
    save_model(tmp_path / "model.pt", card.build_model(), card)
    model, label, size = open_subject(tmp_path)
    assert size == (3, 32, 32) and label == f"lenet5 ({tmp_path})"
    rgb = LENET5_FLOPS + 2 * 6 * 28 * 28 * 25 * 2 - 2 * 84 * 8  # 3 input channels, 2 classes instead of 10
    assert probe(model, size, label) == (2, rgb)
    assert open_subject(tmp_path, "3x36x36")[2] == (3, 36, 36)  # --input wins over the card


@pytest.mark.parametrize(("target", "options", "fragment"), [
    ("lenet55", {}, "lenet55"),
    ("lenet5", {"input_size": "3x32"}, "CxHxW"),
    ("lenet5", {"input_size": "1x8x8"}, "does not fit lenet5"),
    ("lenet5", {"batch_size": 0}, "batch size"),
    ("lenet5", {"steps": -1}, "steps"),
    ("lenet5", {"device": "nonsense"}, "device"),
    ("yolo", {}, "classifiers"),
])
def test_bad_input_is_a_one_line_error(target: str, options: dict, fragment: str) -> None:
    with pytest.raises(CnnkitError, match=fragment) as err:
        bench(target, **{**FAST, **options})
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def lenet5(tmp_path_factory) -> tuple[dict, Path]:
    """One measurement of LeNet-5 (auto = fp32 in the suite), its peak cached in a folder of its own."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(cache))
        yield bench("lenet5", **FAST), cache


def test_the_result_has_images_per_second_for_fp32_and_auto(lenet5) -> None:
    result, _ = lenet5
    assert set(result) == KEYS
    assert result["model"] == "lenet5" and result["input"] == [1, 32, 32] and result["threads"] == 1
    assert result["device"] == "cpu" and result["precision"] == "fp32" and result["batch_size"] == 8
    for mode in ("train", "infer"):
        assert set(result[mode]) == {"fp32", "auto"} and result[mode]["fp32"] > 0
        assert result[mode]["auto"] == result[mode]["fp32"]  # auto is fp32 here: measured once
    assert result["flops"] == {"forward_per_image": LENET5_FLOPS, "train_per_image": 3 * LENET5_FLOPS}
    assert json.loads(json.dumps(result)) == result
    assert result["bn_folded"] is (importlib.util.find_spec("cnnkit.engine.inference") is not None)


def test_mfu_is_the_achieved_flops_over_the_cached_peak(lenet5) -> None:
    result, cache = lenet5
    files = list(cache.glob("peak-*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert result["peak"] == {"fp32": stored["fp32"]} and stored["threads"] == 1
    peak = peak_gflops(stored["fp32"]) * 1e9
    assert result["mfu"]["train"]["fp32"] == pytest.approx(3 * LENET5_FLOPS * result["train"]["fp32"] / peak)
    assert result["mfu"]["infer"]["fp32"] == pytest.approx(LENET5_FLOPS * result["infer"]["fp32"] / peak)
    assert 0 < result["mfu"]["train"]["fp32"] < 1


def test_the_breakdown_fits_in_the_step(lenet5) -> None:
    result, _ = lenet5
    for row in result["breakdown"].values():
        assert set(row) == {"step_ms", *CATEGORIES}
        assert min(row.values()) >= 0 and row["conv"] > 0 and row["gemm"] > 0
        assert sum(row[c] for c in CATEGORIES) <= row["step_ms"]


def test_the_table_names_every_row(lenet5) -> None:
    text = format_bench(lenet5[0])
    assert text.startswith("lenet5 at 1x32x32, batch 8, 2 timed steps on cpu, 1 thread (auto = fp32)")
    for row in ("train fp32", "train auto", "infer fp32", "infer auto", "peak GFLOP/s: fp32", "data_wait"):
        assert row in text


@pytest.mark.skipif(not cpu_bf16(), reason="auto is bf16 only on a CPU with AMX or AVX512-BF16")
def test_auto_is_bf16_on_a_cpu_that_has_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CNNKIT_PRECISION")
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path))
    result = bench("lenet5", **FAST)
    assert result["precision"] == "bf16" and set(result["peak"]) == {"fp32", "bf16"}
    assert set(result["breakdown"]) == {"fp32", "auto"} and result["train"]["auto"] > 0
    peak = peak_gflops(result["peak"]["bf16"]) * 1e9
    assert result["mfu"]["train"]["auto"] == pytest.approx(3 * LENET5_FLOPS * result["train"]["auto"] / peak)
