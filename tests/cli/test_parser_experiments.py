"""The `cnnkit prune` parser, with --structured, and the one-line refusals of runs it cannot prune."""
from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import assert_one_line_error, run_cli

from cnnkit.cli.parser import build_parser


def test_structured_flags_parse() -> None:
    a = build_parser().parse_args(["prune", "R", "--structured", "--sparsity", "0.25,0.5", "--criterion", "bn",
                                   "--latency-batch", "8", "--finetune-epochs", "2"])
    assert a.structured and a.sparsity == [0.25, 0.5] and a.criterion == "bn" and a.latency_batch == 8
    b = build_parser().parse_args(["prune", "R", "--sparsity", "0.5"])
    assert not b.structured and b.criterion == "l1" and b.latency_batch == 1 and b.residual is None
    c = build_parser().parse_args(["prune", "R", "--structured", "--sparsity", "0.5", "--no-residual"])
    assert c.residual is False
    assert build_parser().parse_args(["prune", "R", "--structured", "--sparsity", "0.5", "--residual"]).residual


@pytest.mark.parametrize(("args", "message"), [
    (["--criterion", "l2"], "argument --criterion: invalid choice: 'l2'"),
    (["--latency-batch", "0"], "expected a batch size of 1 or more, got '0'"),
])
def test_bad_structured_flags_are_refused(capsys, args: list[str], message: str) -> None:
    code, _, err = run_cli(capsys, "prune", "R", "--structured", "--sparsity", "0.5", *args)
    assert_one_line_error(code, err, message)


def _fake_run(folder: Path, architecture: str, task: str, size: list[int]) -> Path:
    """A run folder holding only model.pt: the refusals come before any data or config is read."""
    from cnnkit.runs.card import ModelCard
    from cnnkit.runs.folder import save_model

    folder.mkdir()
    card = ModelCard(architecture, task, ["a", "b", "c"], size, [0.5] * size[0], [0.5] * size[0])
    save_model(folder / "model.pt", card.build_model(), card)
    return folder


def test_cli_refuses_a_detection_run(capsys, tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "det", "lenet5", "detect", [1, 32, 32])
    code, _, err = run_cli(capsys, "prune", str(run), "--structured", "--sparsity", "0.5")
    assert_one_line_error(code, err, "structured pruning takes classification runs;", "is a detect run")


def test_cli_refuses_an_unsupported_layer(capsys, tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "maxout", "spec:conv8k3-maxout4k3-gap-fc3", "multiclass", [3, 16, 16])
    code, _, err = run_cli(capsys, "prune", str(run), "--structured", "--sparsity", "0.5")
    assert_one_line_error(code, err, "structured pruning takes plain conv stacks and ResNet blocks",
                          "gap1 does not simply read maxout1.affine")


def test_cli_refuses_residual_without_structured(capsys, tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "r", "resnet20", "multiclass", [3, 32, 32])
    code, _, err = run_cli(capsys, "prune", str(run), "--sparsity", "0.5", "--no-residual")
    assert_one_line_error(code, err, "residual= (--residual/--no-residual) applies to structured pruning only")
