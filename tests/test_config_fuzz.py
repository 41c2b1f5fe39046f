"""Fuzzing the configuration reader (cnnkit.config: load_config, config_from_dict): documents of the known
sections and keys with values of every wrong type (strings for numbers, lists, nested junk, huge numbers, nan),
unknown keys, YAML's tricks and !!python tags, mutations and raw bytes. Each is a validated Config or a one-line
error; a !!python tag never runs anything."""
from __future__ import annotations

import tempfile
import time
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import strategies as st
from tests.fuzzing import (
    LAUGHS,
    NASTY_TEXT,
    SIZES,
    as_bytes,
    clean,
    fuzz,
    junk,
    mix,
    mutated,
    scalars,
    yaml_tricks,
)

from cnnkit.config import Config, config_from_dict, load_config
from cnnkit.errors import CnnkitError

SECTIONS = {f.name: [g.name for g in fields(getattr(Config(), f.name))] for f in fields(Config)
            if is_dataclass(getattr(Config(), f.name))}
TOP = [f.name for f in fields(Config) if f.name not in SECTIONS]
WORDS = ["adam", "sgd", "cosine", "auto", "fp32", "bf16", "on", "off", "frozen", "epoch", "batch", "standard", "mean",
         "whiten", "tensorboard", "fine-tune", "probe", "both", "rise", "balanced", "1e-3", "3", "true", "none"]
VALID = "task: multiclass\ndata: {source: digits, val: 0.2}\ntrain: {epochs: 2, lr: 1.0e-3, log: []}\n"

value = mix((3, st.sampled_from(WORDS)), (3, st.integers(-2, 100)), (2, st.floats(-1, 2)), (2, scalars),
            (1, st.lists(st.sampled_from(["tensorboard", "mlflow"]) | scalars, max_size=3)),
            (1, st.dictionaries(st.sampled_from(["classifier.*", "fc", "hflip"]) | st.text(max_size=4),
                                st.floats(-1, 2) | scalars, max_size=3)), (1, junk))
key = st.sampled_from(sorted({k for keys in SECTIONS.values() for k in keys}))


def section(name: str) -> st.SearchStrategy:
    own = st.sampled_from(SECTIONS[name])
    return mix((8, st.dictionaries(mix((8, own), (1, key), (1, st.sampled_from(NASTY_TEXT[:12]))), value,
                                   max_size=4)), (1, junk))


known = st.fixed_dictionaries({}, optional={**{name: section(name) for name in SECTIONS},
                                            **{name: value for name in TOP}})
unknown = st.dictionaries(st.sampled_from(["extra", 7, "Train"]), junk, min_size=1, max_size=2)
configs = mix((8, known), (1, st.tuples(known, unknown).map(lambda parts: {**parts[0], **parts[1]})))
documents = mix((6, configs.map(lambda d: yaml.safe_dump(d, allow_unicode=True))), (2, mutated(VALID)),
                (1, yaml_tricks), (1, yaml_tricks.map(lambda trick: f"train: {trick}")))


def load(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_bytes(data)
        cfg = clean(load_config, path)
        assert cfg is None or isinstance(cfg, Config)


def from_dict(data: object) -> None:
    cfg = clean(config_from_dict, data)
    if cfg is not None:
        clean(cfg.validate)


@SIZES
def test_config_file_fuzz(examples: int) -> None:
    fuzz(examples, as_bytes(documents), load)


@SIZES
def test_config_dict_fuzz(examples: int) -> None:
    fuzz(examples, mix((8, configs), (1, junk)), from_dict)


def test_the_valid_config_reads(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(VALID)
    cfg = load_config(tmp_path / "config.yaml")
    assert cfg.train.lr == 1e-3 and cfg.data.val == 0.2 and cfg.task == "multiclass"


def test_a_number_written_as_yaml_1_1_reads_it_as_a_string_and_cnnkit_as_a_number(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("train: {lr: 1e-3, weight_decay: '5e-4'}\n")
    cfg = load_config(tmp_path / "config.yaml")
    assert (cfg.train.lr, cfg.train.weight_decay) == (1e-3, 5e-4)


@pytest.mark.parametrize(("text", "message"), [
    ("train: {epochs: ten}\n", "train.epochs must be an integer, got 'ten'"),
    ("train: {epochs: true}\n", "train.epochs must be an integer, got True"),
    ("train: {lr: .nan}\n", "train.lr must be a finite number, got nan"),
    ("train: {log: tensorboard}\n", "train.log must be a list, got 'tensorboard'"),
    ("data: [1, 2]\n", "data must be a mapping"),
    ("1: 2\n", "unknown config key in config.yaml 1"),
    ("task: 2001-13-45\n", "is not valid YAML: 'month must be in 1..12'"),
    ("train: {log: [3]}\n", "unknown logger 3"),
    (LAUGHS + "\ntrain: {log: *a8}\n", "a 'billion laughs'"),
    ("train: &a {log: *a}\n", "refers to the list or mapping that holds it"),
])
def test_bad_configs_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    start = time.perf_counter()
    with pytest.raises(CnnkitError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        load_config(tmp_path / "config.yaml")
    assert "\n" not in str(info.value) and time.perf_counter() - start < 5


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/apply:subprocess.call",
                                 "!!python/object/new:os.system"])
def test_a_python_tag_runs_nothing(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    (tmp_path / "config.yaml").write_text(f"train:\n  epochs: {tag} [{command!r}]\n")
    with pytest.raises(CnnkitError, match="not valid YAML at line 2: could not determine a constructor") as info:
        load_config(tmp_path / "config.yaml")
    assert "\n" not in str(info.value) and "!!python tag" in str(info.value)
    assert not marker.exists()
