"""Fault injection: `cnnkit train` killed with SIGKILL at seeded points (an optimiser step, a file write between
fsync and rename, a validation pass, the report), for classification, detection and segmentation runs. After each
kill best.pt, last.pt, history.csv and split.json are readable and agree, at most one epoch is lost, and
`cnnkit train --resume RUN` finishes the run with the weights of an uninterrupted one.

5 trials of a classification run in `make test`; 20 trials over the three families under `make test-slow`.
"""
from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest
import torch
from tests.conftest import run_cli

from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.runs.folder import read_model_file

EPOCHS = 3
FAMILIES = {
    "classification": ["--data", "synthetic-shapes:n=48,size=32", "--model", "lenet5", "--batch-size", "16"],
    "detection": ["--task", "detect", "--data", "synthetic-shapes:count=2,n=16,size=64", "--model", "yolo",
                  "--image-size", "64", "--batch-size", "8", "--model-option", "grid=4"],
    "segmentation": ["--task", "segment", "--data", "synthetic-plants:size=48,count=16,seed=3", "--model", "unet",
                     "--image-size", "48", "--batch-size", "4", "--model-option", "base=8", "--model-option",
                     "depth=2"],
}
PHASES = ("step", "write", "validation", "report")

def _killed_run(phase: str, n: int, progress: str, log: str, args: list[str], threads: int) -> None:
    """In a child of the fork server: `cnnkit train ARGS` with a SIGKILL at the n-th occurrence of `phase` (an
    optimiser step, an fsync of cnnkit.files just before its rename, a validation pass, the report); each epoch
    started is appended to `progress`."""
    import signal

    import cnnkit.files as files
    import cnnkit.recipes.runner as runner
    from cnnkit.cli.app import main
    from cnnkit.engine.trainer import Trainer

    torch.set_num_threads(threads)  # torch sets a forked child to 1 thread; the reference ran with the parent's
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    calls = [0]

    def tick() -> None:
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    def before(fn):
        return lambda *a, **k: (tick(), fn(*a, **k))[1]

    def after(fn):
        return lambda *a, **k: (fn(*a, **k), tick())[0]

    run_epoch = Trainer._run_epoch

    def epoch(self, *a):
        with open(progress, "a") as f:
            f.write(f"{self.epoch + 1}\n")
        return run_epoch(self, *a)

    Trainer._run_epoch = epoch
    if phase == "step":
        Trainer._optimizer_step = after(Trainer._optimizer_step)
    elif phase == "validation":
        Trainer.evaluate = before(Trainer.evaluate)
    elif phase == "write":
        files.os.fsync = after(files.os.fsync)
    else:
        runner.write_report_quietly = before(runner.write_report_quietly)
    os._exit(main(args))


def _fork_server():
    """multiprocessing's fork server with torch and cnnkit imported once: a child starts in milliseconds, not the
    seconds of a fresh interpreter. (The server imports only; no torch op has run, so forking is safe.)"""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "torchvision", "matplotlib.pyplot", "cnnkit.api", "cnnkit.cli.app",
                                    "cnnkit.diagnose.report", "cnnkit.diagnose.curves", __name__])
    return context


def _count_calls(monkeypatch, counts: dict[str, int]) -> None:
    """Count, in this process, the occurrences of each phase in a reference run."""
    import cnnkit.files as files
    import cnnkit.recipes.runner as runner
    from cnnkit.engine.trainer import Trainer

    def counting(name, fn, before=False):
        def wrapper(*a, **k):
            counts[name] = counts.get(name, 0) + 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(Trainer, "_optimizer_step", counting("step", Trainer._optimizer_step))
    monkeypatch.setattr(Trainer, "evaluate", counting("validation", Trainer.evaluate))
    monkeypatch.setattr(files.os, "fsync", counting("write", files.os.fsync))
    monkeypatch.setattr(runner, "write_report_quietly", counting("report", runner.write_report_quietly))


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict:
    """Per family (made on first use): the uninterrupted run's folder and how often each phase occurs."""
    made: dict = {}

    def get(family: str, capsys) -> tuple[Path, dict[str, int]]:
        if family not in made:
            out, counts = tmp_path_factory.mktemp(family) / "reference", {}
            with pytest.MonkeyPatch.context() as mp:
                _count_calls(mp, counts)
                code, _, err = run_cli(capsys, "-q", "train", *FAMILIES[family], "--epochs", str(EPOCHS),
                                       "--out", str(out))
            assert code == 0, err
            made[family] = (out, counts)
        return made[family]

    return get


def _history(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _check_after_kill(run: Path, started: int, reference: Path) -> None:
    """Every file there is readable, the files agree, and at most one epoch is lost."""
    assert json.loads((run / "split.json").read_text()) == json.loads((reference / "split.json").read_text())
    last_path, best_path = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    done = load_checkpoint(last_path)["epoch"] if last_path.is_file() else 0
    assert done >= started - 1, f"{started} epochs started, but the last checkpoint is after epoch {done}"
    if best_path.is_file():
        assert load_checkpoint(best_path)["epoch"] <= done + 1  # best.pt is written just before last.pt
    rows = _history(run / "history.csv") if (run / "history.csv").is_file() else []
    assert abs(len(rows) - done) <= 1  # history.csv is written just after last.pt
    if last_path.is_file():
        saved = load_checkpoint(last_path)["history"]
        for row, kept in zip(rows, saved, strict=False):
            assert float(row["train_loss"]) == kept["train_loss"]


def _trial(seed: int, family: str, references, capsys, tmp_path: Path, n: int | None = None) -> None:
    phase = PHASES[seed % len(PHASES)]
    reference, counts = references(family, capsys)
    n = n or random.Random(seed).randint(1, counts[phase])
    run, progress, log = tmp_path / "run", tmp_path / "progress.txt", tmp_path / "killed.log"
    args = ["-q", "train", *FAMILIES[family], "--epochs", str(EPOCHS), "--out", str(run)]
    threads = torch.get_num_threads()
    child = _fork_server().Process(target=_killed_run, args=(phase, n, str(progress), str(log), args, threads))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -9, (family, phase, n, child.exitcode, log.read_text()[-2000:])
    started = len(progress.read_text().split()) if progress.is_file() else 0
    _check_after_kill(run, started, reference)
    code, _, err = run_cli(capsys, "-q", "train", "--resume", str(run))
    assert code == 0, (family, phase, n, err)
    assert len(_history(run / "history.csv")) == EPOCHS and (run / "report.html").is_file()
    assert not list(run.glob("**/.*.tmp"))
    _, mine = read_model_file(run)
    _, theirs = read_model_file(reference)
    for key, value in theirs["state_dict"].items():
        assert torch.equal(mine["state_dict"][key], value), (family, phase, n, key)


@pytest.mark.parametrize("seed", range(5))
def test_a_killed_run_resumes(seed: int, references, capsys, tmp_path: Path) -> None:
    """make test: 5 trials of a classification run, one per phase and one more."""
    _trial(seed, "classification", references, capsys, tmp_path)


def test_a_run_killed_before_its_first_checkpoint_resumes(references, capsys, tmp_path: Path) -> None:
    """Killed after its first optimiser step: no last.pt yet; --resume starts again from config.yaml and split.json."""
    _trial(0, "classification", references, capsys, tmp_path, n=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5, 25))
def test_a_killed_run_resumes_20_trials(seed: int, references, capsys, tmp_path: Path) -> None:
    """make test-slow: 20 trials, the three families in turn (7, 7, 6), the four phases in turn."""
    _trial(seed, list(FAMILIES)[seed % len(FAMILIES)], references, capsys, tmp_path)


@pytest.mark.parametrize("family", ["classification", "segmentation",
                                    pytest.param("detection", marks=pytest.mark.slow)])
def test_a_full_disk_stops_in_one_line_and_keeps_the_last_checkpoint(family: str, capsys, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """ENOSPC while epoch 2's last.pt is written (after its bytes, at the fsync): one line naming the file and the
    way on, exit 2; epoch 1's last.pt intact, no temporary file left; `--resume` then finishes the run."""
    import errno

    import cnnkit.files as files

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file a descriptor writes")
    real, seen = files.os.fsync, []

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        seen.append(name)
        if ".last.pt." in name and sum(".last.pt." in s for s in seen) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    run = tmp_path / "run"
    monkeypatch.setattr(files.os, "fsync", fsync)
    code, _, err = run_cli(capsys, "-q", "train", *FAMILIES[family], "--epochs", str(EPOCHS), "--out", str(run))
    monkeypatch.setattr(files.os, "fsync", real)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: no space left on the device to write {run / 'checkpoints' / 'last.pt'} (No space "
                          "left on device); the previous version of the file is intact: free some space, then "
                          f"`cnnkit train --resume {run}` goes on from the last checkpoint"), err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list(run.glob("**/.*.tmp"))
    code, _, err = run_cli(capsys, "-q", "train", "--resume", str(run))
    assert code == 0, err
    assert len(_history(run / "history.csv")) == EPOCHS
