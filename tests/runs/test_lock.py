"""RUN/.lock: one training process per run folder; the OS lock dies with its process (kill -9 leaves nothing)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import assert_one_line_error, run_cli

from cnnkit.errors import CnnkitError
from cnnkit.runs import lock

HOLD = """
import sys, time
from cnnkit.runs import lock
lock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def _holder(run: Path) -> subprocess.Popen:
    """Another process that holds `run`'s lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_acquire_release_and_idempotent(tmp_path: Path) -> None:
    run = tmp_path / "run"
    lock.acquire(run)
    lock.acquire(run)  # the same process again: fine
    assert lock.is_locked(run)
    assert f"pid {os.getpid()}" in (run / lock.LOCK_NAME).read_text()
    lock.release(run)
    assert not lock.is_locked(run) and not (run / lock.LOCK_NAME).exists()  # a finished run leaves no .lock
    lock.release(run)  # nothing held: nothing to do


def test_a_second_process_is_refused_and_a_killed_holder_leaves_nothing_stuck(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        with pytest.raises(CnnkitError, match=rf"in use by another training process \(pid {proc.pid} on .*\); wait"):
            lock.acquire(run)
        assert lock.is_locked(run)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (run / lock.LOCK_NAME).is_file()  # the file stays; the lock does not
    lock.acquire(run)
    lock.release(run)


TRAIN = {
    "classification": ["--data", "synthetic-shapes:n=24,size=32", "--model", "lenet5"],
    "detection": ["--task", "detect", "--data", "synthetic-shapes:count=2,n=8,size=64", "--model", "yolo",
                  "--image-size", "64", "--model-option", "grid=4"],
    "segmentation": ["--task", "segment", "--data", "synthetic-plants:size=48,count=8,seed=3", "--model", "unet",
                     "--image-size", "48", "--model-option", "base=8", "--model-option", "depth=2"],
}


@pytest.mark.parametrize("family", list(TRAIN))
def test_cli_train_into_a_folder_in_use_is_one_line(family: str, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        code, _, err = run_cli(capsys, "train", *TRAIN[family], "--epochs", "1", "--out", str(run))
    finally:
        proc.kill()
        proc.wait()
    assert_one_line_error(code, err, "in use by another training process", "--out")
    assert not (run / "split.json").exists()  # refused before writing anything


@pytest.mark.slow
def test_two_real_trainings_into_one_folder(tmp_path: Path) -> None:
    """Two `cnnkit train --out RUN` processes: the second fails in one line while the first finishes."""
    cmd = [sys.executable, "-m", "cnnkit", "-q", "train", "--data", "digits", "--model", "lenet5", "--epochs", "3",
           "--out", str(tmp_path / "run")]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not lock.is_locked(tmp_path / "run") and first.poll() is None:
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert first.wait() == 0
    assert second.returncode == 2 and second.stderr.startswith("error: ") and second.stderr.count("\n") == 1
    assert "in use by another training process" in second.stderr
