"""The CLI calls every cnnkit.api verb with its first argument(s) positionally and all options by keyword, so it
works whether the api takes them keyword-only or not. A stand-in cnnkit.api whose verbs refuse extra positional
arguments records each call; no torch is needed."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

import cnnkit
from cnnkit.cli import main

# verb → (how many positional arguments it accepts, what it returns)
FAKES = {
    "load_config": (2, "CFG"),
    "train": (1, types.SimpleNamespace(val={"accuracy": 0.5}, verdict=None, interrupted=False, run_dir=Path("R"))),
    "evaluate": (1, {"accuracy": 0.5, "loss": 1.0}),
    "test": (1, {"accuracy": 0.5, "loss": 1.0, "count": 3}),
    "predict": (2, [{"path": "a.png", "predictions": [{"label": "cat", "probability": 0.9}]}]),
    "embed": (2, Path("e.npz")),
    "report": (1, Path("R/report.html")),
    "prune": (1, [{"sparsity_target": 0.5, "sparsity": 0.5, "val_accuracy": 0.4, "val_loss": 1.0, "run": "R/p/s50"}]),
    "diagnose": (1, {"plots": {}, "run": "R"}),
    "convert": (1, Path("out.json")),
    "augment_preview": (1, Path("grid.png")),
    "inspect_kernels": (1, Path("k.png")),
    "inspect_feature_maps": (1, Path("f.png")),
    "inspect_model": (1, {"fake": True}),
    "lr_find": (1, types.SimpleNamespace(suggestion=0.01)),
    "models_table": (0, [{"name": "lenet5"}]),
}


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, tuple, dict]]:
    recorded: list[tuple[str, tuple, dict]] = []
    fake = types.ModuleType("cnnkit.api")

    def verb(name: str, positional: int, result):
        def call(*args, **kwargs):
            assert len(args) <= positional, f"api.{name} got options positionally: {args}"
            recorded.append((name, args, kwargs))
            return result
        return call

    for name, (positional, result) in FAKES.items():
        setattr(fake, name, verb(name, positional, result))
    monkeypatch.setitem(sys.modules, "cnnkit.api", fake)
    monkeypatch.setattr(cnnkit, "api", fake, raising=False)
    return recorded


def test_evaluate_passes_split_and_attack_by_keyword(calls, capsys) -> None:
    assert main(["evaluate", "R", "--split", "train", "--attack", "fgsm", "--eps", "0.2", "--json"]) == 0
    assert calls == [("evaluate", ("R",), {"split": "train", "attack": "fgsm", "eps": 0.2, "target_error": None,
                                           "boundary_f1": False})]
    assert json.loads(capsys.readouterr().out) == {"accuracy": 0.5, "loss": 1.0}


def test_predict_embed_test_report_take_the_run_and_inputs_positionally(calls, capsys) -> None:
    assert main(["predict", "R", "a.png", "--top-k", "2"]) == 0
    assert main(["embed", "R", "a.png", "--out", "e.npz"]) == 0
    assert main(["test", "R"]) == 0
    assert main(["report", "R"]) == 0
    assert [(name, args) for name, args, _ in calls] == [("predict", ("R", ["a.png"])), ("embed", ("R", ["a.png"])),
                                                         ("test", ("R",)), ("report", ("R",))]
    assert calls[0][2] == {"top_k": 2, "threshold": 0.5, "score_threshold": None, "nms_iou": None, "out": None}
    assert calls[1][2] == {"out": "e.npz", "batch_size": 64, "layer": None}
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "a.png  cat 0.900" and out[1] == "e.npz" and out[-1] == str(Path("R/report.html"))


def test_train_and_resume_pass_options_by_keyword(calls, capsys) -> None:
    assert main(["-q", "train", "--data", "digits", "--epochs", "1"]) == 0
    assert calls[0][0] == "load_config" and calls[1] == ("train", ("CFG",), {})
    assert main(["-q", "train", "--resume", "R", "--epochs", "3"]) == 0
    assert calls[2] == ("train", (), {"resume": "R", "epochs": 3})
    assert capsys.readouterr().out.splitlines()[-1] == "R"


@pytest.mark.parametrize(("argv", "name"), [
    (["prune", "R", "--sparsity", "0.5"], "prune"),
    (["diagnose", "R"], "diagnose"),
    (["convert", "SRC", "--to", "coco", "--out", "out.json"], "convert"),
    (["augment-preview", "digits"], "augment_preview"),
    (["inspect", "lenet5", "--kernels"], "inspect_kernels"),
    (["inspect", "lenet5", "--feature-maps", "a.png", "--layer", "c1"], "inspect_feature_maps"),
    (["inspect", "lenet5", "--json"], "inspect_model"),
    (["lr-find", "--data", "digits", "--out", "lr.png"], "lr_find"),
])
def test_other_verbs_take_one_positional_argument(calls, argv, name) -> None:
    assert main(argv) == 0
    assert [c[0] for c in calls if c[0] != "load_config"] == [name]
