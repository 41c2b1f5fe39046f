"""The run folder: the model card in model.pt, and loading a run to predict with nothing else."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from cnnkit import __version__
from cnnkit.data.transforms import build_transform
from cnnkit.engine.checkpoint import atomic_save, load_checkpoint
from cnnkit.errors import CnnkitError
from cnnkit.models.registry import create_model

RUNS_ROOT = Path("runs")


@dataclass
class ModelCard:
    """Everything `predict` needs besides the weights: the data contract travels with the model."""

    architecture: str
    task: str  # the problem type: binary | multiclass | multilabel | regression ('classify': multiclass)
    classes: list[str]  # class or label names; for regression the names of the target values
    input_size: list[int]  # [C, H, W]
    mean: list[float]
    std: list[float]
    whiten: bool = False
    resize: str = "resize"
    options: dict | None = None  # architecture options given to create_model
    cnnkit_version: str = __version__
    target_mean: list[float] | None = None  # regression: the model predicts (t − mean) / std
    target_std: list[float] | None = None
    bounded: bool = False  # regression to [0, 1]: a sigmoid output
    interpolation: str = "bilinear"  # how images are resized: pretrained weights carry the one they learnt with
    transfer: dict | None = None  # a transfer strategy's architecture change: {strategy: partial, keep_stages: 2}
    palette: list[list[int]] | None = None  # segmentation: one RGB colour per class, for masks and overlays
    ignore_index: int | None = None  # segmentation: the mask value that counts nowhere (255)

    @property
    def problem(self) -> str:
        from cnnkit.tasks import problem_name

        return problem_name(self.task)

    @property
    def outputs(self) -> int:
        """Units of the last layer: one sigmoid for binary, else one per class, label or target."""
        return 1 if self.problem == "binary" else len(self.classes)

    def make_task(self, model: nn.Module, loss: str | None = None, **options):
        """The task of this card around `model`: its activation, loss and target scaling."""
        from cnnkit.tasks import make_task

        if self.problem == "regression":
            options.update(mean=self.target_mean, std=self.target_std, bounded=self.bounded)
        if self.problem == "segment":
            options.update(num_classes=len(self.classes),
                           ignore_index=255 if self.ignore_index is None else self.ignore_index)
        return make_task(self.problem, model, loss, **options)

    def transform(self):
        c, h, _ = self.input_size
        return build_transform(h, c, self.mean, self.std, whiten=self.whiten, resize=self.resize,
                               interpolation=self.interpolation)

    def build_model(self) -> nn.Module:
        model = create_model(self.architecture, num_classes=self.outputs, in_channels=self.input_size[0],
                             **(self.options or {}))
        if self.transfer and self.transfer.get("strategy") == "partial":
            from cnnkit.models.registry import get_spec
            from cnnkit.models.stages import truncate

            model = truncate(model, get_spec(self.architecture), self.transfer["keep_stages"], tuple(self.input_size))
        return model


def new_run_dir(name: str, root: Path = RUNS_ROOT) -> Path:
    """runs/<name>, or runs/<name>-2, -3, ... when taken."""
    path, n = root / name, 1
    while path.exists():
        n += 1
        path = root / f"{name}-{n}"
    return path


def save_model(path: Path, model: nn.Module, card: ModelCard) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"state_dict": state, "card": asdict(card)}, path)


def run_file(run: str | Path, name: str) -> Path:
    run = Path(run)
    if not run.is_dir():
        raise CnnkitError(f"run folder not found: {run}")
    path = run / name
    if not path.is_file():
        raise CnnkitError(f"{run} has no {name}; is it a cnnkit run folder (from `cnnkit train`)?")
    return path


def load_model(run: str | Path) -> tuple[nn.Module, ModelCard]:
    """The trained model (eval mode, CPU) and its card, from RUN/model.pt alone."""
    saved = load_checkpoint(run_file(run, "model.pt"))
    try:
        card = ModelCard(**saved["card"])
    except (KeyError, TypeError) as err:
        raise CnnkitError(f"{run}/model.pt has no valid model card ({err})") from None
    model = card.build_model()
    model.load_state_dict(saved["state_dict"])
    return model.eval(), card


def record_test_use(run: Path, metrics: dict) -> int:
    """Append this use of the test split to test_log.jsonl; returns how many uses there were before."""
    log = run / "test_log.jsonl"
    before = len(log.read_text().splitlines()) if log.is_file() else 0
    with log.open("a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **metrics}) + "\n")
    return before


def image_batches(paths: list[Path], card: ModelCard, batch_size: int,
                  skipped: list[str]) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """(readable paths, images preprocessed as the card says (n, C, H, W)) per batch of `paths`, decoded one
    batch at a time; each unreadable file goes to `skipped` as 'PATH (reason)'. predict and embed read so."""
    from cnnkit.data.images import BadImage, read_image

    transform, channels = card.transform(), card.input_size[0]
    for start in range(0, len(paths), batch_size):
        kept, images = [], []
        for p in paths[start:start + batch_size]:
            try:
                images.append(transform(read_image(p, channels)))
                kept.append(p)
            except BadImage as err:
                skipped.append(f"{p} ({err})")
        if images:
            yield kept, torch.stack(images)  # (n, C, H, W)


def readable_images(paths: list[Path]) -> Iterator[tuple[Path, torch.Tensor]]:
    """(path, uint8 (3, H, W) image) for each readable file of `paths`, one at a time. Unreadable files are
    skipped, with one warning at the end; none readable at all is a one-line error."""
    import warnings

    from cnnkit.data.images import BadImage, read_image

    skipped, read = [], 0
    for path in paths:
        try:
            image = read_image(path, 3)
        except BadImage as err:
            skipped.append(f"{path} ({err})")
            continue
        read += 1
        yield path, image
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {'; '.join(skipped[:5])}", stacklevel=2)
    if not read:
        raise CnnkitError("no readable images to predict")


def open_run(run: str | Path) -> tuple[nn.Module, ModelCard, dict, dict]:
    """(model, card, config.yaml as a dict, split.json) of a run folder; a missing file is a one-line error."""
    import yaml

    model, card = load_model(run)
    cfg = yaml.safe_load(run_file(run, "config.yaml").read_text()) or {}
    return model, card, cfg, json.loads(run_file(run, "split.json").read_text())


def open_split(run: str | Path, split: str, open_source: Callable[[Config], object]):
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
