"""The recipe protocol: what one task family answers, so that one runner (cnnkit.recipes.runner) can do the rest.

A recipe answers a handful of questions: open the data, split it, write the model card, build the model, the
loaders and the task, measure a whole split, predict, and which report sections and curve metric its runs
have. Everything around those answers is done once, in the runner, for every task: start or resume, the rank-0
guards and the barrier, fitting, choosing the best checkpoint, the verdict, saving the run and the report.

A recipe also declares the options it reads (`options`, dotted config keys beyond COMMON_OPTIONS);
`Config.validate(supported=...)` refuses any other option that is set, in one line.

    recipe = recipe_for(cfg.task)                       # cnnkit.recipes
    source = recipe.open_source(cfg)
    split, record = recipe.new_split(cfg, source)
    card = recipe.card(cfg, source, split)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.diagnose.verdict import Verdict
from cnnkit.engine.callbacks import Callback
from cnnkit.errors import CnnkitError
from cnnkit.runs.card import ModelCard
from cnnkit.tasks.base import Task

# options every recipe reads: the data's place and split, the model's name and weights, the optimisation, the
# run's bookkeeping and the verdict's thresholds
COMMON_OPTIONS = frozenset({
    "task", "out",
    "data.source", "data.image_size", "data.val", "data.test", "data.augment", "data.workers",
    "model.name", "model.options", "model.weights",
    "train.epochs", "train.batch_size", "train.optimizer", "train.optimizer_options", "train.lr",
    "train.weight_decay", "train.schedule", "train.schedule_options", "train.warmup_epochs", "train.loss",
    "train.patience", "train.monitor", "train.min_delta", "train.restore_best", "train.grad_clip", "train.amp",
    "train.precision", "train.schedule_interval", "train.accumulate",
    "train.device", "train.seed", "train.log", "train.on_nan", "train.save_format",
    "diagnose.target_error", "diagnose.bias_threshold", "diagnose.variance_threshold",
})


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    val: dict  # metrics of the saved model on the val split
    interrupted: bool = False
    verdict: Verdict | None = None  # bias/variance of the saved model (None without a val split or when interrupted)
    trainable: int | None = None  # parameters with requires_grad at the end of training (linear-probe: its layer's)


@dataclass
class Build:
    """What a recipe's `build` gives the runner: the task around the model, the optimiser's parameter groups
    (None: every trainable parameter) and the callbacks the recipe adds (e.g. gradual unfreezing)."""

    task: Task
    param_groups: list[dict] | None = None
    callbacks: list[Callback] = field(default_factory=list)
    monitor: str | None = None  # what early stopping watches, when the recipe knows better than --monitor


@dataclass
class Context:
    """One run being assembled: its config, data, split, card and folder."""

    cfg: Config
    source: Any
    split: dict[str, np.ndarray]
    card: ModelCard
    run_dir: Path
    record: dict
    state: dict | None = None  # checkpoints/last.pt of a run being resumed
    report: bool = True  # write report.html at the end (the data curve's subset runs do not)
    callbacks: list[Callback] = field(default_factory=list)  # the caller's own, e.g. a sweep's pruning reporter


class Recipe:
    """One task family. Subclasses set the class attributes and implement the hooks below."""

    name: str = ""
    tasks: tuple[str, ...] = ()  # the --task values this recipe trains
    options: frozenset[str] = frozenset()  # config keys read beyond COMMON_OPTIONS
    excluded: frozenset[str] = frozenset()  # common options this task family does not read
    report_sections: tuple[str, ...] = ()  # cnnkit.diagnose.report section keys, in order
    curve_metric: str | None = None  # the learning curves' metric panel (history column without train_/val_)
    unsupported_reason: dict[str, str] = {}  # option → why it does not apply (said in the refusal)
    eval_batch_size: int | None = None  # evaluate/test batch size (None: the run's own)
    embeds: bool = False  # `cnnkit embed` reads its runs (a classifier's pooled features)
    diagnoses: tuple[str, ...] = ()  # `cnnkit diagnose` flags beyond the learning curves (--data-curve, ...)

    @property
    def supported(self) -> frozenset[str]:
        return (COMMON_OPTIONS | self.options) - self.excluded

    def check(self, cfg: Config) -> None:
        """Refuse, in one line, option values that contradict each other for this task (after the options the
        recipe does not read have been refused)."""

    # -- data ---------------------------------------------------------------------------------------------
    def open_source(self, cfg: Config) -> Any:
        """The data `cfg.data.source` names, with the targets of the task (may resolve cfg.task)."""
        raise NotImplementedError

    def new_split(self, cfg: Config, source: Any) -> tuple[dict[str, np.ndarray], dict]:
        """(indices per split, the split.json record) of a new run; the test split is locked."""
        raise NotImplementedError

    def split_record(self, cfg: Config, source: Any, split: dict[str, np.ndarray]) -> dict:
        """What split.json holds for `split` (indices per split name) of `source`."""
        raise NotImplementedError

    def read_split(self, source: Any, record: dict, name: str) -> np.ndarray:
        """The indices of split `name` from a run's split.json record."""
        raise NotImplementedError

    def loader(self, cfg: Config, source: Any, indices: np.ndarray, card: ModelCard, *, train: bool,
               dist: Any = None) -> Any:
        """Batches of `indices`: augmented and shuffled (this rank's shard under DDP) when `train`."""
        raise NotImplementedError

    # -- model --------------------------------------------------------------------------------------------
    def card(self, cfg: Config, source: Any, split: dict) -> ModelCard:
        raise NotImplementedError

    def model(self, cfg: Config, card: ModelCard, *, fresh: bool) -> torch.nn.Module:
        """The network the card describes; with `fresh`, starting from the configured weights."""
        raise NotImplementedError

    def build(self, ctx: Context, model: torch.nn.Module) -> Build:
        """The task (loss, metrics, regularisers) around `model`, its parameter groups and extra callbacks."""
        raise NotImplementedError

    def prepare(self, ctx: Context) -> Context:
        """Before the model is built: settle choices made from the data (e.g. an automatic strategy)."""
        return ctx

    def start_model(self, ctx: Context, model: torch.nn.Module) -> None:
        """A new run's model before its first step (e.g. a head fitted as a linear probe)."""

    def fit_directly(self, ctx: Context) -> TrainResult | None:
        """A run that needs no gradient steps (e.g. a linear probe), or None to train."""
        return None

    # -- measuring and using ------------------------------------------------------------------------------
    def metrics(self, model: torch.nn.Module, card: ModelCard, cfg: Config, loader: Any, **options: Any) -> dict:
        """Whole-split metrics: the loss and what the task family reports (accuracy, mAP, mIoU ...). Every recipe
        takes `precision` ('auto', 'fp32', 'bf16', 'fp16'; cnnkit.engine.inference) and computes the metrics from
        fp32 outputs."""
        raise NotImplementedError

    def measure_options(self, run: Path, split: str) -> dict:
        """Options `metrics` gets when a saved run is measured (e.g. where to draw the PR curves)."""
        return {}

    def predict(self, model: torch.nn.Module, card: ModelCard, paths: list[Path], **options: Any) -> list[dict]:
        """One dict per image (or per box); takes `precision` as `metrics` does, and `batch_size`."""
        raise NotImplementedError

    def augment_preview(self, source: str, out: str | Path, **options: Any) -> Path:
        """`cnnkit augment-preview`: a grid PNG of training images and augmented copies."""
        raise CnnkitError(f"augment-preview is not supported for a {self.name} run (--task {'|'.join(self.tasks)}); "
                          "`cnnkit report RUN` shows its training images")

    def verdict_problem(self, card: ModelCard) -> str:
        """The problem type whose main metric the verdict reads (cnnkit.diagnose.verdict)."""
        return card.problem
