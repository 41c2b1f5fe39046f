"""`cnnkit sweep`: SPACE.yaml checked in one line, trials as ordinary run folders, trials.csv, the SQLite study that
resumes without repeating finished trials, and a trial killed with -9 marked failed and retried."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import run_cli

from cnnkit.errors import CnnkitError
from cnnkit.experiments.sweep import config_key, load_space, read_trials, trial_config

pytest.importorskip("optuna")


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _tiny_space(tmp_path: Path, folder: Path, search: str = "lr: {low: 1.0e-3, high: 1.0e-1, log: true}\n"
                "  optimizer: [sgd, adam]") -> Path:
    return _space(tmp_path, f"base: {{data: {folder}, model: lenet5, epochs: 2, batch-size: 8}}\n"
                            f"search:\n  {search}\n")


def test_names_are_config_keys_or_flags() -> None:
    assert [config_key(n) for n in ("lr", "--lr", "train.lr", "batch-size", "batch_size", "data", "model",
                                    "weight_decay", "model.options.activation", "alarm-on")] == [
        "train.lr", "train.lr", "train.lr", "train.batch_size", "train.batch_size", "data.source", "model.name",
        "train.weight_decay", "model.options.activation", "diagnose.alarm_on"]


@pytest.mark.parametrize(("text", "message"), [
    ("base: {data: digits}\nsearch: {lr: [0.1]}\nextra: 1\n", "unknown key of space.yaml 'extra'"),
    ("search: {lrr: [0.1, 0.2]}\n", "unknown setting in SPACE.yaml"),
    ("search: {lr: {low: 0.1, high: 0.01}}\n", "low < high"),
    ("search: {lr: {low: 0, high: 0.1, log: true}}\n", "a log range needs low > 0"),
    ("search: {lr: {low: 0.001, hi: 0.1}}\n", "unknown key in SPACE.yaml search.lr"),
    ("search: {optimizer: []}\n", "the list of choices is empty"),
    ("search: {lr: 0.1}\n", "must be a list (categorical) or {low, high, log}"),
    ("base: {lr: 0.1}\nsearch: {train.lr: [0.1, 0.2]}\n", "train.lr is both fixed"),
    ("base: {out: x}\nsearch: {lr: [0.1]}\n", "leave out `out`"),
    ("base: {epochs: 0}\nsearch: {lr: [0.1]}\n", "--epochs must be at least 1"),
    ("base: {data: digits}\n", "search: a non-empty mapping"),
])
def test_a_bad_space_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CnnkitError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
                       .replace("}", r"\}")) as err:
        load_space(_space(tmp_path, text))
    assert "\n" not in str(err.value)


def test_base_and_params_make_the_trial_config(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, "base: {data: digits, train: {epochs: 3}, model-option: activation=relu}\n"
                                        "search:\n  lr: {low: 1, high: 4}\n  model.options.width: [8, 16]\n"))
    assert space.search[0].is_int and not space.search[1].is_int
    cfg = trial_config(space, {"lr": 2, "model.options.width": 16}, out=tmp_path / "t")
    assert (cfg.data.source, cfg.train.epochs, cfg.train.lr) == ("digits", 3, 2)
    assert cfg.model.options == {"activation": "relu", "width": 16} and cfg.out == str(tmp_path / "t")


def test_grid_takes_lists_only(tmp_path: Path, capsys) -> None:
    space = _space(tmp_path, "search: {lr: {low: 0.01, high: 0.1}}\n")
    code, _, err = run_cli(capsys, "sweep", str(space), "--trials", "2", "--out", str(tmp_path / "s"),
                           "--sampler", "grid")
    assert code == 2 and err.strip().startswith("error: --sampler grid takes lists only")


def test_a_sweep_resumes_without_repeating_finished_trials(tmp_path: Path, tiny_folder: Path, capsys) -> None:
    space, out = _tiny_space(tmp_path, tiny_folder), tmp_path / "sweep"
    code, printed, _ = run_cli(capsys, "-q", "sweep", str(space), "--trials", "2", "--out", str(out), "--seed", "0")
    assert code == 0 and printed.splitlines()[-1] == str(out)
    assert len(read_trials(out / "trials.csv")) == 2
    before = {name: (out / name / "model.pt").stat().st_mtime_ns for name in ("trial-0000", "trial-0001")}
    code, printed, _ = run_cli(capsys, "-q", "sweep", str(space), "--trials", "3", "--out", str(out))
    assert code == 0
    rows = read_trials(out / "trials.csv")
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and set(rows[0]) >= {"val_loss", "lr", "optimizer", "run"}
    assert {name: (out / name / "model.pt").stat().st_mtime_ns for name in before} == before  # untouched
    for name in ("trial-0002/model.pt", "trial-0002/config.yaml", "trial-0002/history.csv", "parallel.png",
                 "importance.json", "study.db"):
        assert (out / name).is_file(), name
    assert "best: trial " in printed and "importance: " in printed
    code, _, _ = run_cli(capsys, "-q", "sweep", str(space), "--trials", "3", "--out", str(out))
    assert code == 0 and not (out / "trial-0003").exists()  # nothing left to run


def test_a_grid_sweep_runs_each_combination_once(tmp_path: Path, tiny_folder: Path, capsys) -> None:
    space = _tiny_space(tmp_path, tiny_folder, search="optimizer: [sgd, adam]")
    out = tmp_path / "grid"
    code, printed, _ = run_cli(capsys, "-q", "sweep", str(space), "--trials", "5", "--out", str(out),
                               "--sampler", "grid", "--pruner", "none", "--json")
    assert code == 0
    assert sorted(r["optimizer"] for r in read_trials(out / "trials.csv")) == ["adam", "sgd"]


@pytest.mark.slow  # two CLI processes, one killed with -9 in its second trial: ~30 s on 2 cores
def test_a_sweep_killed_with_minus_9_resumes_and_retries_the_running_trial(tmp_path: Path, tiny_folder: Path) -> None:
    space = _tiny_space(tmp_path, tiny_folder).read_text().replace("epochs: 2", "epochs: 30")
    space_file, out = _space(tmp_path, space), tmp_path / "killed"
    argv = [sys.executable, "-m", "cnnkit", "-q", "sweep", str(space_file), "--trials", "3", "--out", str(out),
            "--pruner", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "trial-0001" / "history.csv").is_file() and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = (out / "trial-0000" / "model.pt").stat().st_mtime_ns
    assert subprocess.run(argv, env=env, capture_output=True, timeout=300).returncode == 0
    rows = read_trials(out / "trials.csv")
    assert len(rows) == 3 and "1" not in [r["trial"] for r in rows]  # the killed trial is not a finished one
    assert (out / "trial-0000" / "model.pt").stat().st_mtime_ns == first
    with sqlite3.connect(out / "study.db") as db:
        states = dict(db.execute("SELECT number, state FROM trials").fetchall())
    assert states[1] == "FAIL"
