"""Every option is used or refused, for every task.

The table: every `cnnkit train` flag × every task family either is one the task's recipe supports, or the run
fails at once with one line saying "--flag is not supported for --task T". Then "used": for each task a tiny
real training runs with a configuration that records which options the code reads (not counting validation,
saving config.yaml or copying the config); every option the recipe declares must have been read. Options read
only when another one is set (e.g. --keep-stages with --strategy partial) get a run with that option set.
"""
from __future__ import annotations

import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from cnnkit.cli import main
from cnnkit.cli.parser import build_parser
from cnnkit.cli.verbs import train_overrides
from cnnkit.config import Config, load_config, option_keys, option_value
from cnnkit.errors import CnnkitError
from cnnkit.recipes import recipe_for, runner

DETECT = "synthetic-shapes:count=2,n=16,size=64"
SEGMENT = "synthetic-plants:count=8,size=48"
TASKS = {  # task → the flags of a tiny run of it
    "multiclass": ["--data", "digits", "--model", "lenet5", "--batch-size", "64"],
    "detect": ["--data", DETECT, "--model", "yolo", "--image-size", "64", "--batch-size", "8",
               "--model-option", "grid=4"],
    "instance": ["--data", DETECT, "--model", "mask_rcnn", "--image-size", "64", "--batch-size", "4",
                 "--model-option", "out_channels=32", "--model-option", "representation_size=64",
                 "--model-option", "mask_channels=16", "--model-option", "mask_layers=2"],
    "segment": ["--data", SEGMENT, "--model", "unet", "--image-size", "48", "--batch-size", "4",
                "--model-option", "base=8", "--model-option", "depth=2"],
}
# every training flag with a value that differs from the default (the flags that name the run's data and model
# are in TASKS: every recipe reads them)
FLAGS = [
    ["--epochs", "2"], ["--lr", "0.01"], ["--optimizer", "sgd"], ["--schedule", "constant"], ["--augment", "light"],
    ["--image-size", "40"], ["--channels", "1"], ["--resize", "pad"], ["--images", "somewhere"], ["--val", "0.2"],
    ["--test", "0.2"], ["--patience", "2"], ["--monitor", "train_loss"], ["--min-delta", "0.01"], ["--l1", "0.001"],
    ["--l2", "0.001"], ["--dropout", "0.3"], ["--batch-norm", "frozen"], ["--mixup", "0.2"], ["--cutmix", "0.2"],
    ["--adversarial", "fgsm"], ["--adv-eps", "0.2"], ["--strategy", "fine-tune"], ["--keep-stages", "2"],
    ["--unfreeze-every", "1"], ["--probe", "svm"], ["--head-init", "probe"], ["--workers", "1"],
    ["--device", "cpu"], ["--amp"], ["--seed", "3"], ["--alarm-stop"], ["--target-error", "0.1"],
    ["--log", "tensorboard"], ["--loss", "focal"], ["--weights", "w.pt"], ["--on-nan", "skip"],
    ["--save-format", "safetensors"],
]


def _config(task: str, extra: list[str]) -> Config:
    args = build_parser().parse_args(["train", "--task", task, *TASKS[task], *extra])
    return load_config(None, train_overrides(args))


def _changed(cfg: Config, base: Config) -> set[str]:
    return {k for k in option_keys() if option_value(cfg, k) != option_value(base, k)}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f[0])
def test_every_flag_is_supported_or_refused_in_one_line(task: str, flag: list[str]) -> None:
    recipe = recipe_for(task)
    try:
        cfg = _config(task, flag)
    except CnnkitError as err:  # a value check of its own (e.g. --head-init probe without a strategy)
        pytest.skip(f"{flag[0]} is refused before any task is known: {err}")
    (key,) = _changed(cfg, _config(task, []))  # the flag sets exactly one option
    if key in recipe.supported:
        try:
            cfg.validate(supported=recipe.supported, reasons=recipe.unsupported_reason)
        except CnnkitError as err:
            assert "not supported" not in str(err)
        return
    with pytest.raises(CnnkitError, match=rf"^{flag[0]} is not supported for --task {task}\b") as caught:
        cfg.validate(supported=recipe.supported, reasons=recipe.unsupported_reason)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("task,flag", [("detect", ["--head-init", "probe"]), ("segment", ["--probe", "svm"]),
                                       ("detect", ["--dropout", "0.5"]), ("instance", ["--strategy", "fine-tune"]),
                                       ("segment", ["--batch-norm", "frozen"])])
def test_cli_refuses_an_unsupported_option_in_one_line(tmp_path: Path, capsys, task: str, flag: list[str]) -> None:
    assert main(["-q", "train", "--task", task, *TASKS[task], "--epochs", "1", "--out", str(tmp_path / "r"),
                 *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not supported" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- used: which options a real run reads

# code that reads every field without using it: validation, config.yaml, dataclasses' copy and comparison
_BOOKKEEPING = {"validate", "refuse_unsupported", "option_value", "_asdict_inner", "asdict", "replace",
                "_replace", "__eq__", "__repr__", "save_config", "_merge", "option_keys", "check_dropout_spec"}


def _tracked(cfg: Config, reads: set[str]) -> Config:
    """`cfg` whose sections record every attribute read (as "section.name") into `reads`."""
    def recording(section: str):
        def __getattribute__(self, name: str):
            if not name.startswith("_") and sys._getframe(1).f_code.co_name not in _BOOKKEEPING:
                reads.add(f"{section}.{name}" if section else name)
            return object.__getattribute__(self, name)
        return __getattribute__

    def wrap(obj, section: str):
        cls = type(obj)
        tracked_cls = type(f"Tracked{cls.__name__}", (cls,), {"__getattribute__": recording(section)})
        copy = object.__new__(tracked_cls)
        for f in fields(obj):
            value = getattr(obj, f.name)
            object.__setattr__(copy, f.name, wrap(value, f.name) if is_dataclass(value) else value)
        return copy

    return wrap(cfg, "")


def _reads(task: str, extra: list[str], tmp_path: Path) -> set[str]:
    recipe = recipe_for(task)
    cfg = _config(task, ["--epochs", "1", "--out", str(tmp_path / "run"), *extra])
    cfg.validate(supported=recipe.supported, reasons=recipe.unsupported_reason)
    reads: set[str] = set()
    ctx = runner.start(recipe, _tracked(cfg, reads))
    result = recipe.fit_directly(ctx) or runner.fit(recipe, ctx)
    assert result.run_dir == tmp_path / "run"
    return reads


# options a run reads only when another is set: the flags of a run that sets them (per task family)
CONDITIONAL = {
    "multiclass": [["--strategy", "partial", "--keep-stages", "2"],
                   ["--strategy", "fine-tune", "--unfreeze-every", "1", "--patience", "1", "--l2", "0.001",
                    "--adversarial", "fgsm"],
                   ["--strategy", "linear-probe", "--probe", "svm"]],
    "detect": [["--patience", "1"]],
    "instance": [["--patience", "1"]],
    "segment": [["--patience", "1"]],
}
# read by code outside a training run: evaluate and test read the split fractions and the verdict thresholds
# from config.yaml; adv_steps and penalty_layers have no flag but are read with --adversarial and --l1/--l2
NOT_IN_A_RUN = {"diagnose.bias_threshold", "diagnose.variance_threshold"}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_supported_option_is_read_by_a_run(task: str, tmp_path: Path) -> None:
    recipe = recipe_for(task)
    reads = _reads(task, [], tmp_path / "default")
    for k, extra in enumerate(CONDITIONAL[task]):
        reads |= _reads(task, extra, tmp_path / f"conditional{k}")
    unread = sorted(recipe.supported - reads - NOT_IN_A_RUN)
    assert not unread, f"--task {task} declares options that no run reads: {unread}"


def test_every_flag_an_error_names_is_a_real_train_flag() -> None:
    import argparse

    from cnnkit.config import FLAGS, flag_of

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train_flags = set(subparsers.choices["train"]._option_string_actions)
    assert set(FLAGS.values()) <= train_flags
    assert flag_of("train.weight_decay") == "--weight-decay"
    assert flag_of("train.penalty_layers") == "train.penalty_layers"  # a config-file key keeps its name
