"""The `cnnkit` argument parser: a train command parsed into the namespace the verbs read, typed values checked
(a bad one is one line and exit 2); `cnnkit --help` and `cnnkit VERB --help` answer without importing torch,
torchvision or numpy, in a fresh interpreter (the time it takes is measured in benchmarks, not asserted here)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnkit.cli.parser import build_parser

HEAVY = ("torch", "torchvision", "numpy", "matplotlib", "PIL")

VERBS = ["train", "lr-find", "evaluate", "test", "predict", "embed", "models", "inspect", "prune", "diagnose",
         "transfer", "transfer compare", "demo", "report", "convert", "augment-preview", "bench", "export", "serve"]

# In a fresh interpreter: main(ARGV) for each argv, each a SystemExit(0) with the help on stdout; then which heavy
# packages were imported, as JSON on the last line.
PROBE = """
import contextlib, io, json, sys
from cnnkit.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(argv)
        except SystemExit as exit_:
            codes.append([exit_.code, buf.getvalue()[:6]])
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def _probe(argvs: list[list[str]]) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_of_cnnkit_and_every_verb_imports_no_torch() -> None:
    argvs = [["--help"]] + [[*verb.split(), "--help"] for verb in VERBS]
    result = _probe(argvs)
    assert result["codes"] == [[0, "usage:"]] * len(argvs)
    assert result["heavy"] == []


def test_python_m_cnnkit_help_imports_no_torch() -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cnnkit", "train", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: cnnkit train"), done.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "cnnkit" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_import_cnnkit_cli_parser_and_version_import_no_torch() -> None:
    code = ("import sys, cnnkit, cnnkit.cli, cnnkit.cli.app, cnnkit.cli.parser, cnnkit.runs.run; "
            "print(cnnkit.__version__, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.1.0", "[]"]


def test_version_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == "cnnkit 0.1.0"


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_train_help_covers_every_task_and_says_task_not_problem(capsys) -> None:
    top = _help(capsys)
    assert "train a classifier" not in top
    for word in ("classification", "regression", "detection", "instance", "segmentation"):
        assert word in top
    for verb in [""] + VERBS:
        assert "problem" not in _help(capsys, *verb.split()).lower(), verb
    train = _help(capsys, "train")
    assert "--task TASK" in train and "binary | multiclass | multilabel | regression | detect | segment | instance" \
        in " ".join(train.split())
    assert "classify | detect | segment | instance" in " ".join(_help(capsys, "models").split())


# ---------------------------------------------------------------- parsing

def test_a_train_command_parses_into_the_namespace_the_verb_reads() -> None:
    a = build_parser().parse_args([
        "-q", "train", "--data", "digits", "--model", "lenet5", "--epochs", "3", "--batch-size", "16", "--lr", "0.01",
        "--model-option", "activation=gelu", "--model-option", "dropout=0.3", "--dropout", "classifier.*=0.5,fc6=0.3",
        "--channels", "1", "--log", "tensorboard", "--log", "mlflow", "--amp", "--strategy", "partial",
        "--keep-stages", "2"])
    assert a.verb == "train" and a.quiet
    assert (a.data, a.model, a.epochs, a.batch_size, a.lr) == ("digits", "lenet5", 3, 16, 0.01)
    assert a.model_option == ["activation=gelu", "dropout=0.3"]
    assert a.dropout == {"classifier.*": 0.5, "fc6": 0.3}
    assert a.channels == 1 and a.log == ["tensorboard", "mlflow"] and a.amp is True
    assert (a.strategy, a.keep_stages, a.resume) == ("partial", 2, None)
    assert a.patience is None and a.alarm_stop is None and a.config is None  # not given: left to the config


def test_flags_not_given_stay_none_so_the_config_file_decides() -> None:
    a = build_parser().parse_args(["train"])
    for name in ("data", "model", "epochs", "batch_size", "lr", "task", "augment", "image_size", "val", "test",
                 "amp", "seed", "out", "dropout", "strategy", "head_init", "target_error"):
        assert getattr(a, name) is None, name


def test_other_verbs_parse_their_arguments() -> None:
    parse = build_parser().parse_args
    a = parse(["prune", "runs/x", "--sparsity", "0.5,0.8, 0.9", "--scope", "layer"])
    assert (a.run, a.sparsity, a.scope, a.finetune_epochs) == ("runs/x", [0.5, 0.8, 0.9], "layer", 0)
    a = parse(["predict", "runs/x", "a.png", "b/", "--top-k", "2"])
    assert (a.run, a.inputs, a.top_k, a.threshold, a.json) == ("runs/x", ["a.png", "b/"], 2, 0.5, False)
    a = parse(["diagnose", "runs/x", "--data-curve", "10,25,100"])
    assert a.data_curve == [10.0, 25.0, 100.0] and a.budget == 60.0
    a = parse(["transfer", "compare", "--data", "digits", "--strategies", "fine-tune,partial"])
    assert (a.verb, a.transfer_verb, a.strategies) == ("transfer", "compare", "fine-tune,partial")
    assert not hasattr(a, "resume")  # compare starts new runs only
    assert parse(["lr-find", "--data", "digits"]).steps == 100
    assert parse(["evaluate", "runs/x"]).split == "val"


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--epochs", "three"], "argument --epochs: expected an integer, got 'three'"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["train", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["train", "--channels", "2"], "argument --channels: invalid choice: 2"),
    (["train", "--dropout", "half"], "expected a rate (0.3) or GLOB=RATE pairs"),
    (["prune", "r", "--sparsity", "half"], "expected fractions such as 0.5,0.8,0.9, got 'half'"),
    (["diagnose", "r", "--data-curve", "ten"], "expected percentages such as 10,25,50,100"),
    (["evaluate", "r", "--split", "test"], "argument --split: invalid choice: 'test'"),
    (["trian"], "invalid choice: 'trian'"),
    (["train", "--epochz", "3"], "unrecognized arguments: --epochz 3"),
])
def test_a_bad_value_is_one_line_and_exit_2(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "usage:" not in err, err
    assert message in err and err.rstrip().endswith("--help`)")
