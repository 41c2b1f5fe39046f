"""cnnkit.cli.app.main: every bad input gets one line on stderr, `error: ...`, no traceback, and a non-zero exit
status (in-process and in a real `python -m cnnkit` process)."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import REPO_ROOT, assert_one_line_error, run_cli


def train_args(data, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", "lenet5", "--epochs", "1", "--out", str(out), *extra]


def write_pngs(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / f"{i}.png")


# ---------------------------------------------------------------- data problems

def test_missing_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, *train_args(tmp_path / "nowhere", tmp_path / "run"))
    assert_one_line_error(code, err, "data not found", "nowhere")


def test_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, *train_args(tmp_path / "empty", tmp_path / "run"))
    assert_one_line_error(code, err, "no class sub-folders in", "<class>/<image files>")


def test_class_folder_without_images(capsys, tmp_path):
    write_pngs(tmp_path / "d" / "cat", 4)
    (tmp_path / "d" / "dog").mkdir()
    (tmp_path / "d" / "dog" / "notes.txt").write_text("no images here")
    code, _, err = run_cli(capsys, *train_args(tmp_path / "d", tmp_path / "run"))
    assert_one_line_error(code, err, "class 'dog' has no images")


def test_single_class(capsys, tmp_path):
    write_pngs(tmp_path / "d" / "cat", 4)
    code, _, err = run_cli(capsys, *train_args(tmp_path / "d", tmp_path / "run"))
    assert_one_line_error(code, err, "only one class ('cat')", "at least two classes")


def test_corrupt_images_are_skipped_with_a_warning(capsys, caplog, tiny_folder, tmp_path):
    (tiny_folder / "cat" / "broken.png").write_bytes((tiny_folder / "cat" / "0.png").read_bytes()[:40])
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        code, out, err = run_cli(capsys, *train_args(tiny_folder, tmp_path / "run"))
    assert code == 0, err
    assert "Traceback" not in err
    assert out.strip().splitlines()[-1] == str(tmp_path / "run")
    warnings = [r.getMessage() for r in caplog.records if r.name == "cnnkit" and r.levelno == logging.WARNING]
    assert any("skipping 1 unreadable image(s)" in w and "cat/broken.png" in w for w in warnings), warnings
    split = (tmp_path / "run" / "split.json").read_text()
    assert "cat/broken.png" not in split and "cat/0.png" in split


def test_too_many_corrupt_images(capsys, tiny_folder, tmp_path):
    for i in range(3):
        (tiny_folder / "dog" / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    code, _, err = run_cli(capsys, *train_args(tiny_folder, tmp_path / "run"))
    assert_one_line_error(code, err, "3 of 15 images are unreadable", "max_bad_fraction", "dog/bad0.jpg")


def test_csv_with_missing_columns(capsys, tmp_path):
    (tmp_path / "list.csv").write_text("filename,class\na.png,cat\n")
    code, _, err = run_cli(capsys, *train_args(tmp_path / "list.csv", tmp_path / "run"))
    assert_one_line_error(code, err, "the header must be 'path,label'", "it has: filename,class")


def test_csv_listing_absent_files(capsys, tmp_path):
    write_pngs(tmp_path / "img", 2)
    (tmp_path / "list.csv").write_text("path,label\nimg/0.png,cat\nimg/1.png,dog\nimg/7.png,dog\nimg/8.png,cat\n")
    code, _, err = run_cli(capsys, *train_args(tmp_path / "list.csv", tmp_path / "run"))
    assert_one_line_error(code, err, "2 listed file(s) do not exist", "'img/7.png'", "relative to the CSV")


def test_missing_csv(capsys, tmp_path):
    code, _, err = run_cli(capsys, *train_args(tmp_path / "absent.csv", tmp_path / "run"))
    assert_one_line_error(code, err, "CSV file not found")


@pytest.mark.parametrize("spec, suggestion", [
    ("digit", "did you mean 'digits'?"),
    ("synthetic-shape", "did you mean 'synthetic-shapes'?"),
    ("synthetic-shapes:sise=16", "did you mean 'size'"),
])
def test_unknown_builtin(capsys, tmp_path, spec, suggestion):
    code, _, err = run_cli(capsys, *train_args(spec, tmp_path / "run"))
    assert_one_line_error(code, err, suggestion)


def test_mnist_without_files(capsys, tmp_path):
    code, _, err = run_cli(capsys, *train_args(f"mnist:{tmp_path / 'nothing'}", tmp_path / "run"))
    assert_one_line_error(code, err, "MNIST folder not found")


# ---------------------------------------------------------------- names and numbers

@pytest.mark.parametrize("flag, value, message", [
    ("--model", "lenet", "unknown model 'lenet'; did you mean 'lenet5'"),
    ("--optimizer", "adm", "unknown optimizer 'adm'; did you mean 'adam'"),
    ("--loss", "cross_entropi", "unknown loss 'cross_entropi'; did you mean 'cross_entropy'"),
    ("--schedule", "cosin", "unknown schedule 'cosin'; did you mean 'cosine'"),
    ("--augment", "strnog", "unknown augmentation preset 'strnog'; did you mean 'strong'"),
])
def test_unknown_names(capsys, tiny_folder, tmp_path, flag, value, message):
    args = train_args(tiny_folder, tmp_path / "run")
    if flag == "--model":
        args[args.index("--model") + 1] = value
    else:
        args += [flag, value]
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, message)


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--epochs", "two"], "--epochs"),
    (["--channels", "2"], "--channels"),
    (["--lr", "-0.1"], "--lr must be positive"),
    (["--image-size", "4"], "--image-size must be at least 8"),
    (["--val", "0.6", "--test", "0.6"], "sum below 1"),
])
def test_bad_numbers(capsys, tiny_folder, tmp_path, flags, message):
    code, _, err = run_cli(capsys, *train_args(tiny_folder, tmp_path / "run"), *flags)
    assert_one_line_error(code, err, message)


@pytest.mark.parametrize("flags, message", [
    (["--dropout", "1.5"], "dropout rate must be in [0, 1)"),
    (["--dropout", "f6=0.7"], "no dropout layer matches 'f6'; the dropout layers are: dropout"),
    (["--dropout", "f6=lots"], "dropout rate of 'f6' must be a number"),
    (["--dropout", "high"], "argument --dropout: expected a rate (0.3) or GLOB=RATE pairs"),
    (["--batch-norm", "of"], "argument --batch-norm: invalid choice: 'of'"),
])
def test_bad_regularisation_flags_leave_no_run_folder(capsys, tiny_folder, tmp_path, flags, message):
    code, _, err = run_cli(capsys, *train_args(tiny_folder, tmp_path / "run"), *flags)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "run").exists()


def test_missing_config_file(capsys, tiny_folder, tmp_path):
    code, _, err = run_cli(capsys, *train_args(tiny_folder, tmp_path / "run", "--config", str(tmp_path / "c.yaml")))
    assert_one_line_error(code, err, "config file not found")


# ---------------------------------------------------------------- other verbs

def test_evaluate_a_folder_that_is_no_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "no-run"))
    assert_one_line_error(code, err, "run folder not found")
    (tmp_path / "plain").mkdir()
    code, _, err = run_cli(capsys, "test", str(tmp_path / "plain"))
    assert_one_line_error(code, err, "is it a cnnkit run folder")


@pytest.mark.parametrize("args, message", [
    (["--sparsity", "0.5,1.5"], "sparsity must be in [0, 1) (the fraction of weights set to zero), got 1.5"),
    (["--sparsity", "-0.2"], "sparsity must be in [0, 1)"),
    (["--sparsity", "half"], "argument --sparsity: expected fractions such as 0.5,0.8,0.9"),
    (["--sparsity", "0.5", "--scope", "globl"], "argument --scope: invalid choice: 'globl'"),
    (["--sparsity", "0.5", "--finetune-epochs", "-1"], "--finetune-epochs must be 0 or more"),
    (["--sparsity", "0.5"], "run folder not found"),
])
def test_prune_bad_input(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, "prune", str(tmp_path / "no-run"), *args)
    assert_one_line_error(code, err, message)


def test_augment_preview_unknown_preset(capsys, tiny_folder, tmp_path):
    code, _, err = run_cli(capsys, "augment-preview", str(tiny_folder), "--augment", "lite",
                           "--out", str(tmp_path / "p.png"))
    assert_one_line_error(code, err, "unknown augmentation preset 'lite'; did you mean 'light'")


# ---------------------------------------------------------------- the real process

def run_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)


def test_process_exit_status_for_an_unknown_builtin(tmp_path):
    proc = run_process(*train_args("digit", tmp_path / "run"))
    assert proc.returncode == 2
    assert_one_line_error(proc.returncode, proc.stderr, "did you mean 'digits'?")
    assert proc.stdout == ""
    assert not (tmp_path / "run").exists()


def test_process_exit_status_for_a_negative_batch_size(tmp_path):
    proc = run_process(*train_args("digits", tmp_path / "run", "--batch-size", "-3"))
    assert proc.returncode == 2
    assert_one_line_error(proc.returncode, proc.stderr, "--batch-size")


def test_unknown_task_and_impossible_task(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--data", "digits", "--task", "multilable", "--epochs", "1",
                           "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "unknown task 'multilable'", "did you mean 'multilabel'")
    code, _, err = run_cli(capsys, "train", "--data", "digits", "--task", "binary", "--epochs", "1",
                           "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "--task binary needs exactly 2 classes", "use --task multiclass")


def test_a_loss_that_cannot_fit_the_task(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--data", "synthetic-shapes:n=30,count=2", "--loss", "cross_entropy",
                           "--epochs", "1", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "takes one class index per image", "use binary_crossentropy")


@pytest.mark.parametrize("args, message", [
    ([], "run folder not found"),
    (["--data-curve", "0,50"], "data-curve percentages must be in (0, 100] (% of the training split), got 0"),
    (["--data-curve", "10,150"], "data-curve percentages must be in (0, 100] (% of the training split), got 150"),
    (["--data-curve", "ten,20"], "argument --data-curve: expected percentages such as 10,25,50,100"),
    (["--data-curve", ","], "give at least one data-curve percentage"),
    (["--data-curve", "50", "--epochs", "0"], "argument --epochs"),
    (["--epochs", "3"], "--epochs sets the training of each --data-curve subset"),
    (["--landscape", "--budget", "0"], "the time budget must be positive seconds"),
    (["--landscape", "--budget", "soon"], "argument --budget: invalid float value"),
])
def test_diagnose_bad_input(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, "diagnose", str(tmp_path / "no-run"), *args)
    assert_one_line_error(code, err, message)
