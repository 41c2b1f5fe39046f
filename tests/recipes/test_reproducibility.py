"""Reproducibility (issue 20): two seeded CPU runs of one config write bit-identical history.csv rows and model.pt
weights, for classification, detection and segmentation, with augmentation on (so the random draws are covered);
a run killed with SIGKILL and resumed with `train --resume` ends with the weights of an uninterrupted run, as does a
resume from the run folder as it was after any epoch.

Equality is exact (torch.equal; the CSV's text) on the CPU for one thread count and one set of library versions:
torch's CPU kernels are deterministic for a fixed thread count, and no op of these three families needed a
tolerance. Another thread count changes the last bits (a test below bounds it). The killed run is a real
`python -m cnnkit train` process with this process's thread count; resumes run in-process through the CLI.
report.html and the curve plots are skipped in-process (matplotlib, seconds; no part of the weights or the
history)."""
from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from tests.conftest import run_cli

from cnnkit import api
from cnnkit.config import load_config, save_config

pytestmark = pytest.mark.filterwarnings("ignore:overfitting at epoch")  # the alarm fires alike in both runs

# The smallest settings of each family that still shuffle, augment and validate; every run on the CPU.
FAMILIES = {
    "classify": {  # 400 shapes (3 classes) at 32 px; dropout, standard augmentation and mixup draw from the RNG
        "data": {"source": "synthetic-shapes:n=400,size=32", "augment": "standard"},
        "model": {"name": "lenet5", "dropout": 0.3},
        "train": {"epochs": 2, "batch_size": 64, "mixup": 0.2}},
    "detect": {  # the YOLO-style detector on a CIFAR ResNet-20 backbone; IoU crops, flips and colour jitter
        "task": "detect",
        "data": {"source": "synthetic-shapes:count=2,n=16,size=48", "image_size": 48, "augment": "standard"},
        "model": {"name": "yolo", "options": {"grid": 4, "backbone": "resnet20", "width": 32}},
        "train": {"epochs": 2, "batch_size": 4}},
    "segment": {  # a two-level U-Net; flips, scale jitter and colour jitter
        "task": "segment",
        "data": {"source": "synthetic-plants:size=32,count=16,seed=1", "image_size": 32, "augment": "standard"},
        "model": {"name": "unet", "options": {"base": 8, "depth": 2}},
        "train": {"epochs": 2, "batch_size": 4, "lr": 3e-3}},
}


@pytest.fixture(autouse=True)
def no_report(monkeypatch) -> None:
    """In-process runs skip report.html and the curve plots: matplotlib time, no part of what is compared."""
    from cnnkit.diagnose import curves
    from cnnkit.recipes import runner

    monkeypatch.setattr(runner, "write_report_quietly", lambda *args: None)
    monkeypatch.setattr(curves, "plot_learning_curves", lambda *args, **kwargs: None)


def config(family: str, out: Path, **train) -> dict:
    overrides = copy.deepcopy(FAMILIES[family])
    overrides["out"] = str(out)
    overrides["train"].update({"device": "cpu", "seed": 7, **train})
    return overrides


def train(family: str, out: Path, **options) -> Path:
    api.train(load_config(overrides=config(family, out, **options)))
    return out


def history(run: Path) -> list[dict]:
    """history.csv's rows as written (text: exact), without the wall-clock time."""
    with (run / "history.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved["state_dict"] if "state_dict" in saved else saved["model"]


def same(a, b) -> bool:
    """Equal, tensors bit for bit, through dicts and lists (checkpoint states)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    differ = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"{len(differ)} of {len(a)} tensors differ; largest |a − b| per tensor: {differ}"


def assert_same_run(a: Path, b: Path) -> None:
    """history.csv (all but the time), diagnosis.json, model.pt and last.pt's model, optimiser, schedule and
    callback states."""
    assert history(a) == history(b)
    assert json.loads((a / "diagnosis.json").read_text()) == json.loads((b / "diagnosis.json").read_text())
    assert_same_weights(weights(a / "model.pt"), weights(b / "model.pt"))
    last_a, last_b = (torch.load(run / "checkpoints" / "last.pt", weights_only=True) for run in (a, b))
    assert_same_weights(last_a["model"], last_b["model"])
    for part in ("optimizer", "scheduler", "scaler", "callbacks", "epoch"):
        assert same(last_a[part], last_b[part]), f"last.pt's {part} differs"


# ---------------------------------------------------------------- two seeded runs

@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_seeded_runs_write_the_same_history_and_weights(family: str, tmp_path: Path) -> None:
    a, b = train(family, tmp_path / "a"), train(family, tmp_path / "b")
    assert len(history(a)) == 2
    assert_same_run(a, b)


def test_another_thread_count_changes_the_last_bits_only(tmp_path: Path) -> None:
    """Not bit-identical across thread counts: a CPU kernel splits its sums by thread (convolution backward, the
    batch norm statistics), so float rounding differs; measured after these 2 epochs: rel. differences up to
    ~5e-5 in the weights, equal losses to the printed digits. Exact equality needs one thread count."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = train("segment", tmp_path / "a")
        torch.set_num_threads(2)
        b = train("segment", tmp_path / "b")
    finally:
        torch.set_num_threads(before)
    wa, wb = weights(a / "model.pt"), weights(b / "model.pt")
    for k in wa:
        assert torch.allclose(wa[k].double(), wb[k].double(), rtol=1e-3, atol=1e-5), k
    for ra, rb in zip(history(a), history(b), strict=True):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-4)


def test_another_seed_gives_other_weights(tmp_path: Path) -> None:
    """The comparisons can fail: the seed reaches the history and the weights."""
    a, b = train("segment", tmp_path / "a", epochs=1), train("segment", tmp_path / "b", epochs=1, seed=8)
    assert history(a) != history(b)
    assert not same(weights(a / "model.pt"), weights(b / "model.pt"))


# ---------------------------------------------------------------- kill -9, then --resume

def start_and_kill(overrides: dict, tmp_path: Path) -> tuple[subprocess.Popen, threading.Thread]:
    """Start `python -m cnnkit train --config C --out DIR` in a child process with this process's thread count,
    and a thread that SIGKILLs it as soon as DIR/history.csv (written after checkpoints/last.pt) shows an epoch."""
    out = Path(overrides.pop("out"))
    save_config(load_config(overrides=overrides), tmp_path / "config.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "CNNKIT_PRECISION": "fp32"}
    child = subprocess.Popen([sys.executable, "-m", "cnnkit", "-q", "train", "--config", str(tmp_path / "config.yaml"),
                              "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def watch() -> None:
        deadline = time.monotonic() + 300
        while child.poll() is None and time.monotonic() < deadline and not (out / "history.csv").is_file():
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return child, watcher


def killed_and_resumed(family: str, tmp_path: Path, capsys, **options) -> Path:
    """The uninterrupted run, after checking the same run killed after its first epoch and resumed with `train
    --resume` against it. The killed child runs while this process trains the uninterrupted one."""
    child, watcher = start_and_kill(config(family, tmp_path / "killed", **options), tmp_path)
    try:
        straight = train(family, tmp_path / "straight", **options)
    finally:
        watcher.join()
        child.wait()
    stderr = child.stderr.read().decode()
    child.stderr.close()
    killed = tmp_path / "killed"
    assert child.returncode == -signal.SIGKILL, f"the run was not killed (exit {child.returncode}):\n{stderr}"
    done, epochs = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"], len(history(straight))
    assert 1 <= done < epochs, f"the kill came after epoch {done} of {epochs}: nothing was left to resume"
    assert not (killed / "model.pt").exists()
    code, _, err = run_cli(capsys, "-q", "train", "--resume", str(killed))
    assert code == 0, err
    assert_same_run(straight, killed)
    return straight


# per-batch cosine after a warm-up epoch, early stopping and the overfitting alarm, whose states come back from
# last.pt; a min_delta no epoch can beat makes early stopping count from epoch 1 and stop after epoch 5 (of 7)
SCHEDULED = {"epochs": 7, "schedule": "cosine", "schedule_interval": "batch", "warmup_epochs": 1.0, "patience": 4,
             "min_delta": 100.0}


@pytest.mark.slow  # make test kills classification runs in tests/recipes/test_runner_faults.py
def test_a_killed_classification_run_resumes_to_the_weights_of_one_run(tmp_path: Path, capsys) -> None:
    straight = killed_and_resumed("classify", tmp_path, capsys, **SCHEDULED)
    assert len(history(straight)) == 5


@pytest.mark.slow
@pytest.mark.parametrize("family,epochs", [("detect", 4), ("segment", 8)])  # epochs: time for the kill to land
def test_a_killed_run_resumes_to_the_weights_of_one_run(family: str, epochs: int, tmp_path: Path, capsys) -> None:
    killed_and_resumed(family, tmp_path, capsys, epochs=epochs)


# ---------------------------------------------------------------- a resume after each epoch

RESUMES = {
    "classify-schedule": ("classify", SCHEDULED),  # each epoch: the kill above lands after epoch 1
    # no val split, so no best.pt: model.pt holds what early stopping restored, the weights of epoch 1, which a
    # resume after epoch 2 (early stopping waiting) must still give; one_cycle steps per batch
    "classify-no-val": ("classify", {"epochs": 4, "schedule": "one_cycle", "patience": 2, "min_delta": 100.0,
                                     "monitor": "train_loss"}),
    "detect": ("detect", {"epochs": 3}),
    "segment": ("segment", {"epochs": 3}),
}


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.slow) if case in ("classify-schedule", "detect")
                                  else case for case in RESUMES])
def test_a_resume_after_any_epoch_ends_with_the_weights_of_one_run(case: str, tmp_path: Path, capsys,
                                                                   monkeypatch) -> None:
    """The run folder as it is after each epoch (what a kill between epochs leaves) is copied aside; each copy,
    resumed, must end as the uninterrupted run did."""
    from cnnkit.engine import callbacks

    family, options = RESUMES[case]
    overrides = config(family, tmp_path / "straight", **options)
    if case == "classify-no-val":
        overrides["data"]["val"] = 0.0
    original = callbacks.CSVLogger.on_epoch_end

    def copy_after(self, trainer, logs):
        original(self, trainer, logs)
        shutil.copytree(self.path.parent, tmp_path / f"after{trainer.epoch}")

    monkeypatch.setattr(callbacks.CSVLogger, "on_epoch_end", copy_after)
    straight = api.train(load_config(overrides=overrides))
    monkeypatch.setattr(callbacks.CSVLogger, "on_epoch_end", original)
    if case == "classify-no-val":  # stopped after epoch 3 with epoch 1's weights
        assert len(straight.history) == 3 and not (straight.run_dir / "checkpoints" / "best.pt").exists()
        assert not same(weights(straight.run_dir / "model.pt"), weights(straight.run_dir / "checkpoints" / "last.pt"))
    for done in range(1, len(straight.history)):
        code, _, err = run_cli(capsys, "-q", "train", "--resume", str(tmp_path / f"after{done}"))
        assert code == 0, err
        assert_same_run(straight.run_dir, tmp_path / f"after{done}")
