"""K-fold cross-validation: `cnnkit train ... --folds K [--group-by COLUMN]`.

    result = cross_validate(cfg, folds=5)                 # FoldsResult: out, folds, metrics (mean ± std)
    result = cross_validate(cfg, folds=5, group_by="patient")   # a CSV source's column: a group never spans folds

The locked test split is made exactly as `cnnkit train` makes it (the recipe's `new_split`, the same seed) and
stays out of every fold: the K folds partition train + val of that split. They are stratified by class for
single-label classification (scikit-learn's StratifiedKFold), plain otherwise (KFold: detection, segmentation,
multilabel, regression); with `group_by`, GroupKFold (StratifiedGroupKFold for single labels) on a column of the
CSV data source. Fold i is the val split of run OUT/fold<i> and the other folds its train split; each run is an
ordinary run folder (split.json whose test entry is the normal split's, config.yaml, model.pt, history.csv ...;
no report.html). OUT/folds.json holds every fold's val metrics and their mean and sample standard deviation
(ddof=1) over the folds; it is rewritten after each fold, so Ctrl-C keeps the folds done so far.
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.config import Config
from cnnkit.errors import CnnkitError, brief, listed

log = logging.getLogger("cnnkit")
STD_DDOF = 1  # the sample standard deviation over the folds, as users of scikit-learn's cross_val_score compute it


@dataclass
class FoldsResult:
    """The cross-validation's folder, one row per finished fold ({fold, run, val metrics ...}), the mean and std
    of each numeric val metric over those folds, and whether Ctrl-C cut it short."""

    out: Path
    k: int
    group_by: str | None = None
    folds: list[dict] = field(default_factory=list)
    metrics: dict[str, dict] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def file(self) -> Path:
        return self.out / "folds.json"

    def as_dict(self) -> dict:
        return {"k": self.k, "group_by": self.group_by, "std_ddof": STD_DDOF, "interrupted": self.interrupted,
                "metrics": self.metrics, "folds": self.folds}


def check_folds(folds: Any, n_items: int | None = None) -> int:
    """K as an int in [2, n_items]; a one-line error otherwise."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise CnnkitError(f"--folds must be an integer of at least 2, got {folds!r}")
    if n_items is not None and folds > n_items:
        raise CnnkitError(f"--folds {folds} is more than the {n_items} train+val items to split into folds")
    return int(folds)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # as cnnkit.data.sources reads it
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:  # not UTF-8, a field over csv's 128 KiB limit, ...
        raise CnnkitError(f"{path}: not a readable CSV ({err})") from None
    return columns, rows


def group_csv(cfg: Config, column: str) -> Path:
    """The CSV data source that --group-by reads, checked to have the column; a one-line error otherwise."""
    path = Path(cfg.data.source or "")
    if path.suffix.lower() != ".csv":
        raise CnnkitError(f"--group-by {column} reads a column of a CSV data source; {cfg.data.source!r} is not a "
                          "CSV file (give --data FILE.csv with a path column and a group column)")
    if not path.is_file():
        raise CnnkitError(f"CSV file not found: {path}")
    columns, _ = _read_csv(path)
    if column not in columns:
        raise CnnkitError(f"--group-by {column}: {path} has no column {brief(column)} (its columns: {listed(columns)})")
    return path


def read_groups(cfg: Config, source: Any, column: str) -> np.ndarray:
    """The group of each item of `source` (its id is the CSV's path cell) from the CSV's column `column`."""
    path = group_csv(cfg, column)
    _, rows = _read_csv(path)
    group_of = {r["path"]: r[column] for r in rows if "path" in r}
    empty = [i for i in source.ids if not group_of.get(i)]
    if empty:
        raise CnnkitError(f"--group-by {column}: {len(empty)} row(s) of {path} have no {column}, e.g. {empty[0]!r}")
    return np.asarray([group_of[i] for i in source.ids], dtype=object)


def strata(source: Any) -> np.ndarray | None:
    """The class of each item for a single-label classification source (stratified folds), else None."""
    from cnnkit.data.sources import ImageSource

    return source.labels if isinstance(source, ImageSource) and source.targets is None else None


def _splitter(k: int, seed: int, stratified: bool, grouped: bool) -> Any:
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if grouped:
        kind = StratifiedGroupKFold if stratified else GroupKFold
        return kind(k, shuffle=True, random_state=seed)
    return (StratifiedKFold if stratified else KFold)(k, shuffle=True, random_state=seed)


def fold_parts(pool: np.ndarray, k: int, seed: int = 0, labels: np.ndarray | None = None,
               groups: np.ndarray | None = None) -> list[np.ndarray]:
    """K disjoint, sorted parts of the indices `pool` that cover it (seeded): stratified by `labels` and kept
    whole by `groups` (both indexed like the source) when given."""
    pool = np.asarray(pool, dtype=np.int64)
    k = check_folds(k, len(pool))
    y = None if labels is None else np.asarray(labels)[pool]
    g = None if groups is None else np.asarray(groups, dtype=object)[pool]
    if g is not None and len(set(g)) < k:
        raise CnnkitError(f"--folds {k} needs at least {k} groups, and train+val holds {len(set(g))}")
    g_codes = None if g is None else np.unique(g.astype(str), return_inverse=True)[1]
    try:
        held = [v for _, v in _splitter(k, seed, y is not None, g is not None).split(pool, y, g_codes)]
    except ValueError as err:
        raise CnnkitError(f"cannot make {k} folds of {len(pool)} train+val items: {err}") from None
    parts = [np.sort(pool[v]) for v in held]
    if any(len(p) == 0 for p in parts):
        raise CnnkitError(f"--folds {k}: a fold came out empty; use fewer folds")
    return parts


def numeric(metrics: dict) -> dict[str, float]:
    """The metrics that are numbers (per-class tables and names left out)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summarize(folds: list[dict]) -> dict[str, dict]:
    """{metric: {"mean", "std"}} of every numeric val metric over `folds`; std with ddof=1 (None for one fold)."""
    names = list(dict.fromkeys(k for f in folds for k in f if k not in ("fold", "run")))
    summary = {}
    for name in names:
        values = np.asarray([f[name] for f in folds if f.get(name) is not None], dtype=np.float64)
        if len(values):
            std = _finite(np.std(values, ddof=STD_DDOF)) if len(values) > STD_DDOF else None
            summary[name] = {"mean": _finite(np.mean(values)), "std": std}
    return summary


def write_folds(result: FoldsResult) -> Path:
    """OUT/folds.json, written atomically (rank 0 only)."""
    result.out.mkdir(parents=True, exist_ok=True)
    tmp = result.file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    tmp.replace(result.file)
    return result.file


def _warn_test_groups(groups: np.ndarray, pool: np.ndarray, test: np.ndarray, column: str) -> None:
    shared = set(groups[pool]) & set(groups[test])
    if shared:
        warnings.warn(f"--group-by {column}: {len(shared)} group(s) also have items in the locked test split (it is "
                      "made as `cnnkit train` makes it, not by group)", stacklevel=3)


def _train_fold(recipe: Any, cfg: Config, source: Any, split: dict[str, np.ndarray], folder: Path,
                info: dict) -> Any:
    """One fold as an ordinary run folder: the recipe's card, split.json record and fit (as runner.train)."""
    from cnnkit.recipes.base import Context
    from cnnkit.recipes.runner import fit

    fold_cfg = copy.deepcopy(cfg)
    fold_cfg.out = str(folder)
    record = {**recipe.split_record(fold_cfg, source, split), "folds": info}
    parts = {"train": split["train"], "val": split["val"]}
    card = recipe.card(fold_cfg, source, parts)
    ctx = recipe.prepare(Context(fold_cfg, source, parts, card, folder, record, report=False))
    direct = recipe.fit_directly(ctx)
    return direct if direct is not None else fit(recipe, ctx)


def _prepared(cfg: Config | None, folds: Any, group_by: str | None, train_overrides: dict) -> tuple[Any, Config]:
    """(recipe, config) with every option checked as runner.train checks it, before any data is read."""
    from cnnkit.engine import schedules
    from cnnkit.recipes import recipe_for
    from cnnkit.recipes.runner import model_train_defaults

    check_folds(folds)
    cfg = copy.deepcopy(cfg or Config())
    cfg.train = model_train_defaults(cfg.model.name, replace(cfg.train, **train_overrides))  # as runner.train
    recipe = recipe_for(cfg.task)
    cfg.validate(supported=recipe.supported, reasons=recipe.unsupported_reason)
    recipe.check(cfg)
    schedules.check_options(cfg.train.schedule, cfg.train.schedule_options)
    if group_by is not None:
        group_csv(cfg, group_by)
    return recipe, cfg


def cross_validate(cfg: Config | None, *, folds: int, group_by: str | None = None,
                   **train_overrides: Any) -> FoldsResult:
    """Train `cfg` K = `folds` times, fold i of train+val as the val split of run OUT/fold<i> (see the module
    docstring); returns the FoldsResult also written to OUT/folds.json."""
    from cnnkit.engine.distributed import broadcast_object, init_distributed
    from cnnkit.runs.folder import new_run_dir

    recipe, cfg = _prepared(cfg, folds, group_by, train_overrides)
    source = recipe.open_source(cfg)
    split, _ = recipe.new_split(cfg, source)  # the locked test split, exactly as `cnnkit train` makes it
    pool = np.sort(np.concatenate([split["train"], split["val"]]))
    k = check_folds(folds, len(pool))
    groups = read_groups(cfg, source, group_by) if group_by is not None else None
    if groups is not None:
        _warn_test_groups(groups, pool, split["test"], group_by)
    parts = fold_parts(pool, k, cfg.train.seed, strata(source), groups)
    info = init_distributed()
    name = f"{cfg.model.name}-{getattr(source, 'name', 'data')}"
    result = FoldsResult(broadcast_object(Path(cfg.out) if cfg.out else new_run_dir(name), info), k, group_by)
    for i, held in enumerate(parts, 1):
        folder = result.out / f"fold{i}"
        fold_split = {"train": np.setdiff1d(pool, held), "val": held, "test": split["test"]}
        log.info("fold %d of %d: %d train, %d val → %s", i, k, len(fold_split["train"]), len(held), folder)
        run = _train_fold(recipe, cfg, source, fold_split, folder, {"k": k, "fold": i, "group_by": group_by})
        if run.interrupted:
            result.interrupted = True
            break
        result.folds.append({"fold": i, "run": str(folder), **numeric(run.val)})
        result.metrics = summarize(result.folds)
        if info.is_main:  # after every fold: Ctrl-C or a kill keeps the folds done
            write_folds(result)
    if info.is_main:
        write_folds(result)
    return result

