"""cnnkit.cli.verbs: each verb's handler. A stand-in cnnkit.api records that every api verb is called with its first
argument(s) positionally and all options by keyword (no torch needed); train_overrides maps the training flags to
config sections; then the CLI contract other checks rely on, end to end through main(), and Ctrl-C / kill -9
followed by --resume, in real processes."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.cli.app import main
from cnnkit.data.builtin import digits
from cnnkit.errors import CnnkitError

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
    # the package's own dict, not setattr: getattr(cnnkit, "api") would import cnnkit.api lazily, find the fake
    # in sys.modules and so keep it as the value to restore, leaking it into every later test
    monkeypatch.setitem(vars(cnnkit), "api", fake)
    return recorded


def test_evaluate_passes_split_and_attack_by_keyword(calls, capsys) -> None:
    assert main(["evaluate", "R", "--split", "train", "--attack", "fgsm", "--eps", "0.2", "--json"]) == 0
    assert calls == [("evaluate", ("R",), {"split": "train", "attack": "fgsm", "eps": 0.2, "target_error": None,
                                           "boundary_f1": False, "precision": "auto", "data": None})]
    assert json.loads(capsys.readouterr().out) == {"accuracy": 0.5, "loss": 1.0}


@pytest.mark.parametrize("argv", [["evaluate", "R"], ["test", "R"], ["predict", "R", "a.png"],
                                  ["embed", "R", "a.png"], ["diagnose", "R"]])
def test_inference_verbs_pass_precision_auto_by_default_and_the_flag_when_given(calls, argv) -> None:
    assert main(argv) == 0
    assert main([*argv, "--precision", "fp32"]) == 0
    assert [kwargs["precision"] for _, _, kwargs in calls] == ["auto", "fp32"]


def test_an_unknown_precision_is_refused_by_the_parser(calls, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "R", "a.png", "--precision", "fp8"])
    assert exit_.value.code == 2 and "fp8" in capsys.readouterr().err and not calls


def test_predict_embed_test_report_take_the_run_and_inputs_positionally(calls, capsys) -> None:
    assert main(["predict", "R", "a.png", "--top-k", "2"]) == 0
    assert main(["embed", "R", "a.png", "--out", "e.npz"]) == 0
    assert main(["test", "R"]) == 0
    assert main(["report", "R"]) == 0
    assert [(name, args) for name, args, _ in calls] == [("predict", ("R", ["a.png"])), ("embed", ("R", ["a.png"])),
                                                         ("test", ("R",)), ("report", ("R",))]
    assert calls[0][2] == {"top_k": 2, "threshold": 0.5, "score_threshold": None, "nms_iou": None, "out": None,
                           "precision": "auto", "runtime": None, "proposals": None}
    assert calls[1][2] == {"out": "e.npz", "batch_size": 64, "layer": None, "precision": "auto"}
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


# ---------------------------------------------------------------- train_overrides: flags → config sections

def _overrides(*argv: str) -> dict:
    from cnnkit.cli.parser import build_parser
    from cnnkit.cli.verbs import train_overrides

    return train_overrides(build_parser().parse_args(["train", *argv]))


def test_train_overrides_map_each_flag_to_its_config_section() -> None:
    got = _overrides("--data", "digits", "--image-size", "28", "--val", "0.2", "--workers", "2",
                     "--model", "resnet20", "--model-option", "activation=gelu,dropout=0.3", "--batch-norm", "off",
                     "--epochs", "4", "--lr", "0.05", "--l2", "1e-4", "--seed", "7", "--strategy", "fine-tune",
                     "--alarm-stop", "--target-error", "0.05", "--out", "runs/r", "--task", "binary")
    assert got == {
        "data": {"source": "digits", "image_size": 28, "val": 0.2, "workers": 2},
        "model": {"name": "resnet20", "options": {"activation": "gelu", "dropout": 0.3}, "batch_norm": "off"},
        "train": {"epochs": 4, "lr": 0.05, "l2": 1e-4, "seed": 7, "strategy": "fine-tune"},
        "diagnose": {"alarm_stop": True, "target_error": 0.05},
        "out": "runs/r", "task": "binary",
    }


def test_train_overrides_leave_out_what_was_not_given() -> None:
    assert _overrides() == {"data": {}, "model": {}, "train": {}, "diagnose": {}}


def test_train_overrides_reach_the_config_over_the_yaml_file(tmp_path: Path) -> None:
    from cnnkit.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("data: {source: digits, val: 0.3}\ntrain: {epochs: 9, lr: 0.1}\n")
    cfg = load_config(path, _overrides("--epochs", "2", "--dropout", "0.25"))
    assert (cfg.data.source, cfg.data.val) == ("digits", 0.3)  # the file's, where no flag is given
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.dropout) == (2, 0.1, 0.25)


def test_a_bad_model_option_is_a_one_line_error() -> None:
    from cnnkit.errors import CnnkitError

    with pytest.raises(CnnkitError, match="--model-option activation=leaky_relu") as err:
        _overrides("--model-option", "activation")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- end to end, real runs

def _sigint_default() -> None:
    """In the child: Ctrl-C as at a terminal. A test run started in the background (`make test &`) inherits
    SIGINT ignored, and then Python never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cnnkit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=_sigint_default)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["-q", "train", "--data", "digits", "--model", "lenet5", "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_train_prints_the_run_folder_last(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    code = main(["-q", "train", "--data", "synthetic-shapes:n=90,size=32", "--model", "lenet5", "--epochs", "1",
                 "--batch-size", "16", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[-1] == str(out)
    assert (out / "model.pt").is_file()


def test_evaluate_and_test_print_one_json_object(run: Path, capsys) -> None:
    for argv in (["evaluate", str(run), "--json"], ["evaluate", str(run), "--split", "train", "--json"],
                 ["test", str(run), "--json"]):
        assert main(argv) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0


def test_predict_json_format(run: Path, tmp_path: Path, capsys) -> None:
    src = digits()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(src.arrays[i, 0].numpy()).save(folder / f"{i}.png")
    assert main(["predict", str(run), str(folder), "--top-k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 3
    for r in results:
        assert set(r) == {"path", "predictions"} and len(r["predictions"]) == 2
        assert all(set(p) == {"label", "probability"} for p in r["predictions"])


def test_models_lists_the_registry(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "resnet18" in out


def test_augment_preview_writes_a_grid(tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid.png"
    assert main(["augment-preview", "synthetic-shapes:n=30", "--augment", "strong", "-n", "3", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (8 * 96 + 9 * 2, 3 * 96 + 4 * 2)  # 8 columns (original + 7 augmented), 3 rows


def _wait_for_epochs(run: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    history = run / "history.csv"
    while time.monotonic() < deadline:
        if history.is_file() and len(history.read_text().splitlines()) > n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    pytest.fail("training did not reach the epoch in time")


def _epochs_done(run: Path) -> int:
    return len(list(csv.DictReader((run / "history.csv").open())))


@pytest.mark.slow  # kill -9 and resume: tests/recipes/test_runner_faults.py in make test
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_stopped_run_resumes(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "run"
    proc = _cli("train", "--data", "digits", "--epochs", "500", "--out", str(out))
    _wait_for_epochs(out, 1, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in err
        assert (out / "model.pt").is_file()
    else:
        assert proc.returncode == -signal.SIGKILL
    done = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert done >= 1
    resumed = _cli("train", "--resume", str(out), "--epochs", str(done + 1))
    stdout, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)
    assert _epochs_done(out) == done + 1


def test_model_options_reach_the_architecture_and_bad_ones_leave_no_run_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gelu"
    assert main(["-q", "train", "--data", "synthetic-shapes:n=60", "--epochs", "1", "--model-option", "activation=gelu",
                 "--model-option", "dropout=0.25", "--out", str(out)]) == 0
    from cnnkit.runs.folder import load_model

    model, card = load_model(out)
    assert card.options == {"activation": "gelu", "dropout": 0.25}
    assert isinstance(model.act1, torch.nn.GELU) and model.dropout.p == 0.25
    bad = tmp_path / "bad"
    assert main(["-q", "train", "--data", "synthetic-shapes:n=60", "--epochs", "1", "--model-option", "activation=gelo",
                 "--out", str(bad)]) == 2
    assert "did you mean 'gelu'" in capsys.readouterr().err
    assert not bad.exists()


def test_l1_l2_and_dropout_flags_reach_the_training(tmp_path: Path, monkeypatch) -> None:
    import cnnkit.recipes.classification

    applied = []
    real_set_dropout = cnnkit.recipes.classification.set_dropout
    monkeypatch.setattr(cnnkit.recipes.classification, "set_dropout",
                        lambda m, spec: applied.append(real_set_dropout(m, spec)))
    out = tmp_path / "reg"
    assert main(["-q", "train", "--data", "synthetic-shapes:n=60", "--epochs", "1", "--l2", "1e-3", "--l1", "1e-4",
                 "--dropout", "0.3", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert float(rows[0]["train_penalty"]) > 0  # logged apart from the data loss
    from cnnkit.engine.regularizers import Penalty
    from cnnkit.runs.folder import load_model

    model, card = load_model(out)
    assert applied == [{"dropout": 0.3}]  # set on the training model; inference needs no rate, so no card entry
    assert "dropout" not in card.options
    final = Penalty(1e-4, 1e-3)(model).item()  # the trained weights' penalty is of the logged size
    assert float(rows[0]["train_penalty"]) == pytest.approx(final, rel=0.2)


def test_lr_find_prints_a_suggestion_and_writes_the_plot(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lr.png"
    assert main(["-q", "lr-find", "--data", "digits", "--steps", "40", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(out) and out.stat().st_size > 0
    suggested = float(lines[-2].split()[2])
    assert 1e-7 <= suggested <= 10  # inside the range the test swept


def test_adversarial_training_and_robust_accuracy(run: Path, tmp_path: Path, capsys) -> None:
    for eps in ("0", "0.1"):
        assert main(["evaluate", str(run), "--attack", "fgsm", "--eps", eps, "--json"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        if eps == "0":  # no budget: the attack changes nothing
            assert metrics["robust_accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
        else:
            assert metrics["robust_accuracy"] < metrics["accuracy"]
    out = tmp_path / "adv"
    assert main(["-q", "train", "--data", "synthetic-shapes:n=60", "--epochs", "1", "--adversarial", "pgd",
                 "--adv-eps", "0.05", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert float(rows[0]["train_adv_loss"]) > 0


def test_batch_norm_off_and_per_layer_dropout_give_a_run_that_evaluates_and_predicts(tmp_path: Path,
                                                                                       capsys) -> None:
    out = tmp_path / "nobn"
    assert main(["-q", "train", "--data", "synthetic-shapes:n=30", "--model", "resnet20", "--image-size", "8",
                 "--epochs", "1", "--batch-norm", "off", "--dropout", "drop*=0.2", "--out", str(out)]) == 0
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert saved["batch_norm"] == "off" and saved["dropout"] == {"drop*": 0.2}
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0  # the model is rebuilt without BN from its card
    assert json.loads(capsys.readouterr().out)["count"] > 0
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20), (200, 10, 10)).save(image)
    assert main(["predict", str(out), str(image), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["predictions"]) == 3


def test_demo_trains_tests_and_prints_the_run(tmp_path: Path, capsys, monkeypatch) -> None:
    """`cnnkit demo` (what `make demo` runs) calls the api as it is: the keyword-only demo_config, shortened here
    to one epoch, then train and the locked test split."""
    from cnnkit import api

    real = api.demo_config

    def one_epoch(*, out: str | None = None):
        cfg = real(out=out)
        cfg.train.epochs = 1
        return cfg

    monkeypatch.setattr(api, "demo_config", one_epoch)
    assert main(["-q", "demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and f"cnnkit predict {tmp_path / 'demo'} IMAGE" in out
    assert (tmp_path / "demo" / "test_log.jsonl").is_file()


def test_alarm_on_reaches_the_config_and_the_alarm_of_a_run(tmp_path: Path, tiny_folder: Path) -> None:
    assert _overrides("--alarm-on", "plateau")["diagnose"] == {"alarm_on": "plateau"}
    from cnnkit.config import load_config

    assert load_config().diagnose.alarm_on == "both"  # the default (docs/diagnosis.md says why)
    with pytest.raises(CnnkitError, match="unknown --alarm-on 'flat'"):
        load_config(overrides={"diagnose": {"alarm_on": "flat"}})
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", str(tiny_folder), "--epochs", "2", "--alarm-on", "plateau",
                 "--out", str(out)]) == 0
    alarm = json.loads((out / "diagnosis.json").read_text())["alarm"]
    assert alarm["on"] == "plateau" and alarm["fired_epoch"] is None
