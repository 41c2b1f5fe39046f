"""`cnnkit audit DATA|RUN`: everything the audit measures, written to OUT/audit.json, OUT/relabel.csv and
OUT/audit.html.

    out = audit("data/flowers", cfg=Config(), out="audit-flowers")      # a new seeded split, as train makes it
    out = audit("runs/flowers", cfg=None)                                # the run's own split and config

What runs for which task family (the recipe's name):
- every task: exact and near-duplicate groups (pixel hashes, perceptual hashes, and embedding cosine where the
  probe computed embeddings) within and across splits, image quality, the annotation effort;
- classification: the label audit (confident learning, `cnnkit.audit.labels`), class balance, embedding outliers;
- detection and instance segmentation: boxes contradicted by an out-of-fold detector, likely missing boxes and
  boxes of an odd size for their class (`cnnkit.audit.boxes`);
- semantic segmentation: masks that disagree with out-of-fold predictions, classes absent from a split
  (`cnnkit.audit.masks`);
- `annotators=CSV` (any task): agreement between label columns (`cnnkit.audit.annotators`).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.config import Config, load_config
from cnnkit.errors import CnnkitError

log = logging.getLogger("cnnkit")
RELABEL_HEADER = ("path", "given_label", "suggested_label", "score")


@dataclass
class Target:
    """What is audited: the recipe, config, data and split (new, or a run's own)."""

    recipe: Any
    cfg: Config
    source: Any
    split: dict[str, np.ndarray]
    name: str
    run: Path | None = None


@dataclass
class Findings:
    """The audit's results, gathered section by section before they are written."""

    target: Target
    relabel: list[dict] = field(default_factory=list)  # rows of relabel.csv (+ "issue"), most suspicious first
    sections: dict[str, Any] = field(default_factory=dict)  # audit.json's keys beside label_issues, ...
    features: np.ndarray | None = None  # (N, F) embeddings of every item, where computed


def is_run(path: str | Path) -> bool:
    return (Path(path) / "split.json").is_file() and (Path(path) / "config.yaml").is_file()


def open_target(target: str | Path, cfg: Config | None, overrides: dict | None = None) -> Target:
    """A run folder (its config with `overrides` on top, its recipe and recorded split) or a data source (a new
    split from `cfg`, or from the defaults with `overrides`)."""
    from cnnkit.recipes import recipe_for

    if is_run(target):
        run = Path(target)
        if cfg is not None:
            raise CnnkitError(f"{run} is a run folder: the audit reads its own config; give overrides instead of "
                              "a config (e.g. --epochs 2)")
        cfg = load_config(run / "config.yaml", overrides)
        if "data" in (overrides or {}) and "source" in overrides["data"]:
            raise CnnkitError(f"{run} is a run folder: its data is its own; audit the data source instead")
        record = json.loads((run / "split.json").read_text())
        task = cfg.task if cfg.task != "auto" else _card_problem(run)
        recipe = recipe_for(task)
        source = recipe.open_source(cfg)
        split = {name: recipe.read_split(source, record, name) for name in ("train", "val", "test")}
        return Target(recipe, cfg, source, split, run.name, run)
    cfg = cfg or load_config(None, overrides)
    cfg.data.source = str(target)
    recipe = recipe_for(cfg.task)
    cfg.validate(supported=recipe.supported, reasons=recipe.unsupported_reason)
    source = recipe.open_source(cfg)
    split, _ = recipe.new_split(cfg, source)
    return Target(recipe, cfg, source, split, Path(str(target).rstrip("/")).name.replace(":", "-") or "data")


def _card_problem(run: Path) -> str:
    from cnnkit.runs.folder import load_model

    return load_model(run)[1].problem


def _write_atomically(path: Path, text: str) -> None:
    """`text` to `path` through a temporary file beside it: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def write_relabel(path: Path, rows: list[dict]) -> None:
    """relabel.csv, atomically: RELABEL_HEADER, most suspicious first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(RELABEL_HEADER)
    writer.writerows([row["path"], row["given_label"], row["suggested_label"], f"{row['score']:.6f}"] for row in rows)
    _write_atomically(path, buffer.getvalue())


def write_json(path: Path, data: dict) -> None:
    _write_atomically(path, json.dumps(data, indent=1, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def default_out(target: Target) -> Path:
    return Path(f"audit-{target.name}")


def audit(target: str | Path, *, cfg: Config | None = None, out: str | Path | None = None, folds: int = 5,
          method: str = "auto", embedder: str | None = None, annotators: str | Path | None = None,
          seconds_per_item: float | None = None, overrides: dict | None = None) -> Path:
    """Audit a data source or a run (see the module docstring); returns the output folder OUT holding
    audit.json, relabel.csv and audit.html. Out-of-fold models train in OUT/work. `overrides` ({'train':
    {'epochs': 2}, ...}) go over a run's own config, or over the defaults when no `cfg` is given."""
    from cnnkit.audit.sections import common_sections, family_sections, pixels_of

    if int(folds) != folds or folds < 2:
        raise CnnkitError(f"--folds must be an integer of at least 2, got {folds}")
    if seconds_per_item is not None and not seconds_per_item > 0:
        raise CnnkitError(f"--seconds-per-item must be above 0, got {seconds_per_item}")
    found = Findings(open_target(target, cfg, overrides))
    out = Path(out) if out else default_out(found.target)
    out.mkdir(parents=True, exist_ok=True)
    family_sections(found, folds=int(folds), method=method, embedder=embedder, work=out / "work")
    common_sections(found, annotators=annotators, seconds_per_item=seconds_per_item,
                    images=pixels_of(found.target.source))
    write_relabel(out / "relabel.csv", found.relabel)
    write_json(out / "audit.json", audit_json(found))
    from cnnkit.audit.page import write_page

    write_page(out / "audit.html", found)
    return out


def audit_json(found: Findings) -> dict:
    """audit.json: the target, the label issues (flagged relabel rows), duplicates, outliers and the rest."""
    t = found.target
    head = {"target": str(t.run or t.cfg.data.source), "task": t.recipe.name,
            "counts": {name: int(len(idx)) for name, idx in t.split.items()}}
    issues = [{k: v for k, v in row.items() if k != "issue"} for row in found.relabel if row.get("issue")]
    return {**head, "label_issues": issues, "duplicates": [], "outliers": [], **found.sections}
