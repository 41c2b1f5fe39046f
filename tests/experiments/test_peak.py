"""cnnkit.experiments.peak: the FLOP formulas against torch's FLOP counter, the fastest-call timing on a fake clock,
the peak as FLOPs over that time, and the cache (one measurement per machine, thread count and precision)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.experiments import peak


def _counted(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def test_gemm_and_conv_flops_match_torchs_flop_counter() -> None:
    a, b = torch.randn(48, 48), torch.randn(48, 48)
    assert peak.gemm_flops(48) == _counted(lambda: torch.mm(a, b)) == 2 * 48 ** 3
    x, w = torch.randn(2, 5, 7, 7), torch.randn(5, 5, 3, 3)
    assert peak.conv_flops(2, 5, 7) == _counted(lambda: F.conv2d(x, w, padding=1)) == 2 * 2 * 5 * 7 * 7 * 5 * 9


def test_best_seconds_is_the_fastest_call_after_a_warm_up() -> None:
    durations = iter([0.125, 0.5, 0.25, 0.75, 0.375])  # the warm-up call (0.125 s) does not count
    now = [0.0]
    calls = []

    def fn() -> None:
        calls.append(1)
        now[0] += next(durations)

    assert peak.best_seconds(fn, seconds=0.0, clock=lambda: now[0], least=4) == 0.25
    assert len(calls) == 5


def test_the_peak_is_the_flops_over_the_fastest_call(monkeypatch) -> None:
    monkeypatch.setattr(peak, "best_seconds", lambda fn, seconds: (fn(), 0.5)[1])
    assert peak.measure_gemm("fp32", torch.device("cpu"), n=64) == peak.gemm_flops(64) / 0.5
    assert peak.measure_conv("fp32", torch.device("cpu"), shape=(1, 4, 8)) == peak.conv_flops(1, 4, 8) / 0.5


def test_real_kernels_give_a_positive_rate_in_bf16_too() -> None:
    cpu = torch.device("cpu")
    assert peak.measure_gemm("fp32", cpu, seconds=0.0, n=64) > 0
    assert peak.measure_conv("bf16", cpu, seconds=0.0, shape=(1, 8, 8)) > 0


def test_peaks_are_measured_once_then_read_from_the_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path))
    measured = []
    monkeypatch.setattr(peak, "measure_gemm", lambda p, d, s: measured.append(("gemm", p)) or 2e9)
    monkeypatch.setattr(peak, "measure_conv", lambda p, d, s: measured.append(("conv", p)) or 3e9)
    cpu = torch.device("cpu")
    first = peak.measured_peaks(["fp32", "fp32"], cpu)
    assert first == {"fp32": {"gemm": 2.0, "conv": 3.0}} and measured == [("gemm", "fp32"), ("conv", "fp32")]
    path = peak.cache_path(cpu)
    assert path.parent == tmp_path and path.name.startswith("peak-") and path.suffix == ".json"
    saved = json.loads(path.read_text())
    assert saved["fp32"] == {"gemm": 2.0, "conv": 3.0} and saved["threads"] == torch.get_num_threads()
    assert peak.measured_peaks(["fp32"], cpu) == first and len(measured) == 2  # read back, not measured
    assert peak.measured_peaks(["fp32", "bf16"], cpu)["bf16"] == {"gemm": 2.0, "conv": 3.0}
    assert measured[2:] == [("gemm", "bf16"), ("conv", "bf16")]  # only the precision not cached yet
    peak.measured_peaks(["fp32"], cpu, remeasure=True)
    assert measured[4:] == [("gemm", "fp32"), ("conv", "fp32")]
    assert set(json.loads(path.read_text())) >= {"fp32", "bf16", "machine", "threads", "torch"}


def test_another_thread_count_is_another_cache_file(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path))
    before = torch.get_num_threads()
    one = peak.cache_path(torch.device("cpu"))
    try:
        torch.set_num_threads(before + 1)
        other = peak.cache_path(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    assert one != other


def test_a_broken_cache_file_is_measured_again(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "measure_gemm", lambda p, d, s: 1e9)
    monkeypatch.setattr(peak, "measure_conv", lambda p, d, s: 4e9)
    peak.cache_path(torch.device("cpu")).write_text("{not json")
    assert peak.measured_peaks(["fp32"], torch.device("cpu")) == {"fp32": {"gemm": 1.0, "conv": 4.0}}


@pytest.mark.parametrize(("gemm", "conv"), [(3.0, 2.0), (1.0, 5.0)])
def test_the_mfu_peak_is_the_faster_kernel(gemm: float, conv: float) -> None:
    assert peak.peak_gflops({"gemm": gemm, "conv": conv}) == max(gemm, conv)
