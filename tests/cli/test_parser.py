"""`cnnkit --help` and `cnnkit VERB --help` answer without importing torch, torchvision or numpy, in a fresh
interpreter (the time it takes is measured in benchmarks, not asserted here)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnkit.cli.parser import build_parser

HEAVY = ("torch", "torchvision", "numpy", "matplotlib", "PIL")

VERBS = ["train", "lr-find", "evaluate", "test", "predict", "embed", "models", "inspect", "prune", "diagnose",
         "transfer", "transfer compare", "demo", "report", "convert", "augment-preview"]

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
