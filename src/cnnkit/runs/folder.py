"""The run folder: the only code that writes one (model.pt with its card, the test log) and reads one back.

A run's model is RUN/model.pt (torch.save of {"state_dict", "card"}, read back with weights_only=True) or, with
`--save-format safetensors`, RUN/model.safetensors (the state dict, the card as JSON in the header's metadata
under "cnnkit.card"); readers prefer model.safetensors where both are present. Checkpoints stay .pt."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from torch import nn

from cnnkit.config import SAVE_FORMATS
from cnnkit.engine.checkpoint import atomic_save
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.files import atomic_write
from cnnkit.models.factory import create_model
from cnnkit.models.weights_file import load_safetensors_file, load_torch_file, safetensors_bytes
from cnnkit.runs.card import ModelCard

RUNS_ROOT = Path("runs")
CARD_KEY = "cnnkit.card"  # model.safetensors: the card, as JSON, in the header's metadata


def new_run_dir(name: str, root: Path = RUNS_ROOT) -> Path:
    """runs/<name>, or runs/<name>-2, -3, ... when taken."""
    path, n = root / name, 1
    while path.exists():
        n += 1
        path = root / f"{name}-{n}"
    return path


def save_model(path: Path, model: nn.Module, card: ModelCard, save_format: str | None = None) -> Path:
    """The weights and card of `model` at `path`, atomically; its suffix says the format (.safetensors, else a
    torch file) unless `save_format` (pt | safetensors) sets it, which gives `path` that suffix. In a run folder
    the other format's model file goes, so that no reader finds a stale one. Returns the path written."""
    path = Path(path)
    if save_format is not None:
        if save_format not in SAVE_FORMATS:
            raise unknown_name("--save-format", save_format, SAVE_FORMATS)
        path = path.with_suffix(f".{save_format}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        atomic_write(path, safetensors_bytes(state, {"format": "pt", CARD_KEY: json.dumps(asdict(card))}))
    else:
        atomic_save({"state_dict": state, "card": asdict(card)}, path)
    if path.stem == "model":
        other = path.with_suffix(".pt" if path.suffix == ".safetensors" else ".safetensors")
        other.unlink(missing_ok=True)
    return path


def run_file(run: str | Path, name: str) -> Path:
    run = Path(run)
    if not run.is_dir():
        raise CnnkitError(f"run folder not found: {run}")
    path = run / name
    if not path.is_file():
        raise CnnkitError(f"{run} has no {name}; is it a cnnkit run folder (from `cnnkit train`)?")
    return path


def find_model_file(run: str | Path) -> Path | None:
    """RUN/model.safetensors, else RUN/model.pt, else None."""
    return next((p for p in (Path(run) / "model.safetensors", Path(run) / "model.pt") if p.is_file()), None)


def model_file(run: str | Path) -> Path:
    """The model file of a run folder (model.safetensors where present, else model.pt); none is a one-line error."""
    if not Path(run).is_dir():
        raise CnnkitError(f"run folder not found: {run}")
    found = find_model_file(run)
    if found is None:
        raise CnnkitError(f"{run} has no model.pt (nor model.safetensors); is it a cnnkit run folder (from "
                          "`cnnkit train`)?")
    return found


def read_model_file(run: str | Path) -> tuple[ModelCard, dict]:
    """(card, {"state_dict", "card"}) of RUN's model file, without building the model; a file that is not plain
    weights, is corrupt, or has no valid card is a one-line error."""
    path = model_file(run)
    if path.suffix == ".safetensors":
        tensors, metadata = load_safetensors_file(path)
        try:
            saved = {"state_dict": tensors, "card": json.loads(metadata[CARD_KEY])}
        except (KeyError, ValueError) as err:
            raise CnnkitError(f"{path} has no valid model card (no JSON {CARD_KEY} in its metadata: {err})") from None
    else:
        saved = load_torch_file(path, "model file")
        if not isinstance(saved, dict):
            raise CnnkitError(f"{path} holds a {type(saved).__name__}, not a cnnkit model file (a dict of the "
                              "state_dict and the card)")
    try:
        card = ModelCard(**saved["card"])
    except (KeyError, TypeError) as err:
        raise CnnkitError(f"{path} has no valid model card ({err})") from None
    if not isinstance(saved.get("state_dict"), dict):
        raise CnnkitError(f"{path} holds no state_dict (a dict of tensors) beside its card; save the model again")
    return card, saved


def load_model(run: str | Path) -> tuple[nn.Module, ModelCard]:
    """The trained model (eval mode, CPU) and its card, from RUN's model file alone."""
    card, saved = read_model_file(run)
    model = card.build_model()
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as err:  # the card's architecture has changed since the file was written
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise CnnkitError(f"{model_file(run)} does not fit the {card.architecture} that its card describes ({first}); "
                          "it was saved by an older version of that model: train it again") from None
    return model.eval(), card


def record_test_use(run: Path, metrics: dict) -> int:
    """Append this use of the test split to test_log.jsonl; returns how many uses there were before."""
    log = run / "test_log.jsonl"
    before = len(log.read_text().splitlines()) if log.is_file() else 0
    with log.open("a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **metrics}) + "\n")
    return before


def open_run(run: str | Path) -> tuple[nn.Module, ModelCard, dict, dict]:
    """(model, card, config.yaml as a dict, split.json) of a run folder; a missing file is a one-line error."""
    import yaml

    model, card = load_model(run)
    cfg = yaml.safe_load(run_file(run, "config.yaml").read_text()) or {}
    return model, card, cfg, json.loads(run_file(run, "split.json").read_text())


def open_split(run: str | Path, split: str, open_source: Callable[[object], object]):
    """(model, card, config, source, indices) of RUN's `split`; a missing split, an empty one or data that changed
    since training is a one-line error."""
    from cnnkit.config import config_from_dict

    model, card, cfg, record = open_run(run)
    cfg = config_from_dict(cfg)
    if split not in record["splits"]:
        raise CnnkitError(f"unknown split {split!r}; choose train, val or test")
    indices = np.asarray(record["splits"][split], dtype=np.int64)
    if len(indices) == 0:
        raise CnnkitError(f"the {split} split of {run} is empty")
    source = open_source(cfg)
    if len(source) != record["count"]:
        raise CnnkitError(f"{cfg.data.source} holds {len(source)} images, but {run} was split on {record['count']}; "
                          "the data changed since training")
    return model, card, cfg, source, indices


def pretrained_model(name: str) -> tuple[nn.Module, ModelCard]:
    """(model in eval mode, ModelCard) of the weights called `name`, to predict with as they are; a name that
    is neither weights nor an existing run folder is a one-line error."""
    from cnnkit.errors import did_you_mean
    from cnnkit.models.pretrained import list_pretrained, lookup

    try:
        weights = lookup(name)
    except CnnkitError:
        weights = None
    if weights is None:
        raise CnnkitError(f"no run folder or pretrained weights called {name!r}{did_you_mean(name, list_pretrained())}")
    card = ModelCard(task="multiclass", options=dict(weights.options), **weights.card_fields())
    return create_model(name, num_classes=len(card.classes)).eval(), card


def open_model(run_or_weights: str | Path) -> tuple[nn.Module, ModelCard]:
    """(model, card) of a run folder, or of named pretrained weights such as efficientnet_lite0.imagenet."""
    if Path(run_or_weights).exists():
        return load_model(run_or_weights)
    return pretrained_model(str(run_or_weights))
