"""cnnkit.config: defaults < YAML < flags, one-line refusals with suggestions, option keys and their flags."""
from __future__ import annotations

from dataclasses import asdict, fields

import pytest
import yaml

from cnnkit.config import (
    FLAGS,
    Config,
    check_dropout_spec,
    config_from_dict,
    flag_of,
    load_config,
    option_keys,
    option_value,
    parse_key_values,
    save_config,
)
from cnnkit.errors import CnnkitError

SECTIONS = ("data", "model", "train", "diagnose")


def one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_then_yaml_then_overrides(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: 5\n  lr: 0.01\nmodel:\n  name: resnet18\n")
    cfg = load_config(path, {"train": {"epochs": 3}})
    assert cfg.train.epochs == 3  # the flag wins over the file
    assert cfg.train.lr == 0.01 and cfg.model.name == "resnet18"  # the file wins over the defaults
    assert cfg.train.batch_size == Config().train.batch_size == 64 and cfg.data == Config().data
    assert load_config() == Config()  # nothing given: the defaults


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(CnnkitError) as info:
        load_config(path)
    assert one_line(info).startswith("unknown config key in cfg.yaml.train 'epoch'; did you mean 'epochs'")
    with pytest.raises(CnnkitError, match="unknown config key in flags 'trian'; did you mean 'train'"):
        load_config(None, {"trian": {}})
    with pytest.raises(CnnkitError, match="config key flags.train must be a mapping, got 3"):
        load_config(None, {"train": 3})


def test_bad_files_are_refused_in_one_line(tmp_path) -> None:
    with pytest.raises(CnnkitError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("train: [1, 2\nmodel: x\n")
    with pytest.raises(CnnkitError, match="broken.yaml is not valid YAML") as info:
        load_config(tmp_path / "broken.yaml")
    one_line(info)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(CnnkitError, match="must hold a mapping of sections"):
        load_config(tmp_path / "list.yaml")


def test_option_keys_list_every_field_of_every_section() -> None:
    cfg = Config()
    expected = {f"{s}.{k}" for s in SECTIONS for k in asdict(getattr(cfg, s))}
    expected |= {f.name for f in fields(Config) if f.name not in SECTIONS}
    assert option_keys() == expected and {"task", "out", "train.lr", "model.dropout"} <= expected
    assert option_value(cfg, "train.batch_size") == 64 and option_value(cfg, "task") == "auto"


def test_flag_of_names_the_command_line_flag() -> None:
    assert flag_of("train.head_init") == "--head-init"
    assert flag_of("train.batch_size") == "--batch-size"
    assert flag_of("model.name") == "--model" and flag_of("model.options") == "--model-option"
    assert flag_of("task") == "--task"
    assert set(FLAGS) <= option_keys()  # every flag names a real option
    assert all(flag.startswith("--") and " " not in flag for flag in FLAGS.values())


def test_validate_refuses_set_options_the_task_does_not_read() -> None:
    cfg = Config(task="detect")
    cfg.model.dropout = 0.5
    supported = frozenset({"task", "out", "train.epochs", "train.lr"})
    with pytest.raises(CnnkitError) as info:
        cfg.validate(supported=supported)
    assert one_line(info) == ("--dropout is not supported for --task detect (config key model.dropout; "
                              "supported: --epochs, --lr)")
    with pytest.raises(CnnkitError, match=r"--dropout is not supported for --task detect: the detector has its own"):
        cfg.validate(supported=supported, reasons={"model.dropout": "the detector has its own"})
    cfg.model.dropout = None  # back at its default: not "set", so not refused
    cfg.train.epochs = 2  # a supported option may be set
    cfg.validate(supported=supported)


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "epochs", 0, "--epochs must be at least 1, got 0"),
    ("train", "batch_size", -1, "--batch-size must be a positive integer, got -1"),
    ("train", "lr", 0.0, "--lr must be positive, got 0.0"),
    ("data", "channels", 2, "--channels must be 1 or 3, got 2"),
    ("model", "batch_norm", "frozn", "unknown --batch-norm mode 'frozn'; did you mean 'frozen'"),
    ("train", "log", ["tensorbord"], "unknown logger 'tensorbord'; did you mean 'tensorboard'"),
])
def test_validate_refuses_bad_values_in_one_line(section, key, value, message) -> None:
    cfg = Config()
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(CnnkitError) as info:
        cfg.validate()
    assert one_line(info).startswith(message)  # suggestions may name more than one close choice


def test_check_dropout_spec() -> None:
    assert check_dropout_spec(0.5) == 0.5 and check_dropout_spec(0) == 0.0
    assert check_dropout_spec({"classifier.*": 0.5, "fc6": 0.25}) == {"classifier.*": 0.5, "fc6": 0.25}
    for bad, message in [(1.0, r"must be in \[0, 1\)"), (True, "must be a number"), ({}, "mapping is empty"),
                         ({"fc": "high"}, "dropout rate of 'fc' must be a number")]:
        with pytest.raises(CnnkitError, match=message):
            check_dropout_spec(bad)


def test_saved_config_reads_back_equal(tmp_path) -> None:
    cfg = load_config(None, {"train": {"epochs": 2, "optimizer_options": {"momentum": 0.9}}, "task": "multilabel"})
    save_config(cfg, tmp_path / "config.yaml")
    assert config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_parse_key_values_reads_literals_and_bare_words() -> None:
    assert parse_key_values("n=600, size=32,name=a,r=0.5,on=True,") == {
        "n": 600, "size": 32, "name": "a", "r": 0.5, "on": True}
    with pytest.raises(CnnkitError, match="bad option 'size'; write key=value"):
        parse_key_values("n=1,size")


# ---------------------------------------------------------------- the optimisation knobs (issue 19)

def test_parse_key_value_keeps_commas_inside_a_value() -> None:
    from cnnkit.config import parse_key_value

    assert parse_key_value("betas=(0.9, 0.99)") == {"betas": (0.9, 0.99)}
    assert parse_key_value("milestones=[3,6]") == {"milestones": [3, 6]}
    assert parse_key_value("nesterov=true") == {"nesterov": True}
    assert parse_key_value("mode=max") == {"mode": "max"}
    with pytest.raises(CnnkitError, match="write key=value"):
        parse_key_value("gamma")


@pytest.mark.parametrize("overrides,message", [
    ({"train": {"accumulate": 0}}, "--accumulate"),
    ({"train": {"schedule_interval": "epochs"}}, "did you mean 'epoch'"),
    ({"data": {"normalize": "meen"}}, "did you mean 'mean'"),
    ({"train": {"grad_clip": 0}}, "--grad-clip"),
    ({"train": {"label_smoothing": 1.0}}, "--label-smoothing"),
    ({"train": {"warmup_epochs": -1}}, "--warmup-epochs"),
    ({"train": {"weight_decay": -0.1}}, "--weight-decay"),
    ({"model": {"insert_dropout": {"c1": 2}}}, "dropout rate"),
    ({"model": {"insert_dropout": 0.3}}, "GLOB=RATE"),
])
def test_bad_knob_values_are_one_line(overrides, message) -> None:
    with pytest.raises(CnnkitError, match=message) as err:
        load_config(None, overrides)
    assert "\n" not in str(err.value)


def test_flags_add_to_the_files_options(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train: {optimizer: sgd, optimizer_options: {momentum: 0.9}, schedule_options: {gamma: 0.5}}\n")
    cfg = load_config(path, {"train": {"optimizer_options": {"nesterov": True}}})
    assert cfg.train.optimizer_options == {"momentum": 0.9, "nesterov": True}
    assert cfg.train.schedule_options == {"gamma": 0.5}


def test_save_format_is_pt_or_safetensors(tmp_path) -> None:
    """train.save_format (--save-format): pt by default, safetensors from a flag or the file; anything else is one
    line that lists the choices."""
    assert Config().train.save_format == "pt" and flag_of("train.save_format") == "--save-format"
    assert load_config(None, {"train": {"save_format": "safetensors"}}).train.save_format == "safetensors"
    (tmp_path / "c.yaml").write_text("train:\n  save_format: safetensors\n")
    assert load_config(tmp_path / "c.yaml").train.save_format == "safetensors"
    for value, message in (("safetensor", "unknown --save-format 'safetensor'; did you mean 'safetensors'?"),
                           ("onnx", "unknown --save-format 'onnx'; choose one of: pt, safetensors")):
        with pytest.raises(CnnkitError) as info:
            load_config(None, {"train": {"save_format": value}})
        assert one_line(info) == message
