"""A run folder as one object: `load_run(path) -> Run` (also `cnnkit.load_run`).

    run = cnnkit.load_run("runs/lenet5-digits")
    run.task, run.card.classes, run.config.train.epochs, run.history[-1]["val_loss"]
    run.model(images)            # the trained model, loaded on first use (eval mode, CPU)

Importing this module loads no torch; `load_run` does (the model card lives in model.pt).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.errors import CnnkitError

if TYPE_CHECKING:
    from torch import nn

    from cnnkit.config import Config
    from cnnkit.runs.card import ModelCard


@dataclass(frozen=True, eq=False)
class Run:
    """A trained run folder: its model card, config (config.yaml), split record (split.json) and, on demand, the
    model, the history (history.csv) and the recorded diagnosis (diagnosis.json)."""

    path: Path
    card: ModelCard = field(repr=False)
    config: Config = field(repr=False)
    split: dict = field(repr=False)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, task={self.task!r}, architecture={self.card.architecture!r})"

    @property
    def task(self) -> str:
        """binary | multiclass | multilabel | regression | detect | segment | instance."""
        return self.card.problem

    @cached_property
    def model(self) -> nn.Module:
        """The trained model (eval mode, CPU), loaded from model.pt on first use and kept."""
        from cnnkit.runs.folder import load_model

        return load_model(self.path)[0]

    @property
    def history(self) -> list[dict]:
        """One dict per epoch from history.csv (`epoch` an int, the other columns floats or None); [] without it."""
        path = self.path / "history.csv"
        if not path.is_file():
            return []
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: _history_value(k, v) for k, v in row.items()} for row in rows]

    @property
    def diagnosis(self) -> dict:
        """diagnosis.json (the verdict and the overfitting alarm as training recorded them), or {}."""
        path = self.path / "diagnosis.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise CnnkitError(f"{path} is not valid JSON ({err})") from None


def _history_value(key: str, value: str | None) -> int | float | None:
    if value in ("", None):
        return None
    try:
        return int(float(value)) if key == "epoch" else float(value)
    except ValueError:
        raise CnnkitError(f"history.csv: {key} holds {value!r}, not a number") from None


def load_run(path: str | Path) -> Run:
    """The run folder `path` (from `cnnkit train` / `cnnkit.train`) as a Run; a missing folder or file is a
    one-line CnnkitError."""
    import yaml

    from cnnkit.config import config_from_dict
    from cnnkit.runs.folder import read_model_file, run_file

    path = Path(path)
    card, _ = read_model_file(path)
    config_file = run_file(path, "config.yaml")
    split_file = run_file(path, "split.json")
    try:
        config = config_from_dict(yaml.safe_load(config_file.read_text()) or {})
    except yaml.YAMLError as err:
        raise CnnkitError(f"{config_file} is not valid YAML ({str(err).splitlines()[0]})") from None
    try:
        split = json.loads(split_file.read_text())
    except json.JSONDecodeError as err:
        raise CnnkitError(f"{split_file} is not valid JSON ({err})") from None
    return Run(path=path, card=card, config=config, split=split)
