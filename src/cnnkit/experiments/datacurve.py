"""The learning curve by data size: train RUN's config on growing, seeded, stratified subsets of RUN's training
split, evaluate each on RUN's val split, and read whether more data would help."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from cnnkit.errors import CnnkitError

MAIN_METRIC = {"binary": "accuracy", "multiclass": "accuracy", "multilabel": "map", "regression": "r2"}
FALLING_ABS = 0.01  # the val error "still falls" when it drops by at least this much per doubling of the data,
FALLING_REL = 0.10  # or by this fraction of its value, whichever is smaller (a low error's small drops count)


def check_percents(percents) -> list[float]:
    """Distinct percentages in (0, 100], ascending; a one-line error otherwise."""
    try:
        values = sorted({float(p) for p in percents})
    except (TypeError, ValueError):
        raise CnnkitError(f"data-curve percentages must be numbers such as 10,25,50,100, got {percents!r}") from None
    if not values:
        raise CnnkitError("give at least one data-curve percentage, e.g. --data-curve 10,25,50,100")
    for p in values:
        if not 0 < p <= 100 or not math.isfinite(p):
            raise CnnkitError(f"data-curve percentages must be in (0, 100] (% of the training split), got {p:g}")
    return values


def subset(train: np.ndarray, labels: np.ndarray | None, percent: float, seed: int = 0) -> np.ndarray:
    """`percent`% of the indices `train`, sorted: per class (when `labels` are given) the first share of one
    seeded permutation, at least one item each. The same seed gives nested subsets: 10% ⊂ 25% ⊂ 50%."""
    rng = np.random.default_rng(seed)
    groups = [train] if labels is None else [train[labels[train] == c] for c in np.unique(labels[train])]
    keep = [rng.permutation(g)[:max(1, round(len(g) * percent / 100))] for g in groups]
    return np.sort(np.concatenate(keep))


def error_of(problem: str, metrics: dict) -> float:
    """1 − accuracy (classes), 1 − mAP (labels), 1 − R² (values)."""
    return 1.0 - float(metrics[MAIN_METRIC[problem]])


def read_data_curve(rows: list[dict]) -> str:
    """One line from the two largest subsets: the val error "still falls" when it drops per doubling of the
    training set by at least min(FALLING_ABS, FALLING_REL × its previous value); else it is flat."""
    if len(rows) < 2:
        return "one training-set size only: no trend to read (give two or more percentages)"
    a, b = sorted(rows, key=lambda r: r["n_train"])[-2:]
    doublings = math.log2(b["n_train"] / a["n_train"]) if b["n_train"] > a["n_train"] else 0.0
    drop = (a["val_error"] - b["val_error"]) / doublings if doublings else 0.0
    numbers = (f"(val error {a['val_error']:.3f} → {b['val_error']:.3f}, "
               f"{a['n_train']} → {b['n_train']} training images)")
    if a["val_error"] > 0 and drop >= min(FALLING_ABS, FALLING_REL * a["val_error"]):
        return f"val error still falling: more data would help {numbers}"
    return f"flat: more data unlikely to help {numbers}"


def plot_data_curve(rows: list[dict], reading: str, path: Path) -> Path:
    """Train and val error against the training-set size (log scale), the reading as the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n_train"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    ax.plot(n, [r["train_error"] for r in rows], "-o", label="train error (eval mode)")
    ax.plot(n, [r["val_error"] for r in rows], "-s", label="val error")
    ax.set_xscale("log")
    ax.set_xticks(n, [f"{v}\n({r['percent']:g}%)" for v, r in zip(n, rows)])
    ax.minorticks_off()
    ax.set(xlabel="training images", ylabel="error", title=reading.split(" (")[0])
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _train_subset(cfg, source, part: np.ndarray, val: np.ndarray, card, folder: Path,
                  record: dict) -> tuple[dict, dict]:
    """Train `cfg` on the indices `part` into the run folder `folder` (split.json, config.yaml, checkpoints,
    model.pt of the best val epoch as `cnnkit train` selects it, history.csv, diagnosis.json; no report) and
    return the model's metrics on `part` (eval mode, no augmentation) and on `val`."""
    from cnnkit.recipes import recipe_for
    from cnnkit.recipes.base import Context
    from cnnkit.recipes.runner import fit
    from cnnkit.runs.folder import load_model

    recipe = recipe_for(card.problem)
    ctx = Context(cfg, source, {"train": part, "val": val}, card, folder, record, report=False)
    result = fit(recipe, ctx)
    if result.interrupted:
        raise KeyboardInterrupt
    model, _ = load_model(folder)
    train_metrics = recipe.metrics(model, card, cfg, recipe.loader(cfg, source, part, card, train=False))
    return train_metrics, result.val


def data_curve(run: str | Path, percents=(10, 25, 50, 100), epochs: int | None = None,
               out: str | Path | None = None) -> list[dict]:
    """Train RUN's config (for `epochs`, default RUN's) from scratch on each `percent`% of RUN's training split
    (seeded, stratified, nested; val and test are never drawn from), each into the run folder OUT/p<percent>
    (OUT defaults to RUN/data_curve; RUN's own files are not touched), and evaluate it on RUN's val split.
    Rows {percent, n_train, train_error, val_error, val_metric, metric, run}, ascending; the plot goes to
    RUN/plots/data_curve.png and rows plus reading to OUT/data_curve.json."""
    from cnnkit.config import config_from_dict
    from cnnkit.data.split import indices_from_record, split_record
    from cnnkit.recipes import recipe_for
    from cnnkit.runs.folder import load_model, run_file

    values = check_percents(percents)
    if epochs is not None and (int(epochs) != epochs or epochs < 1):
        raise CnnkitError(f"--epochs must be a positive integer, got {epochs}")
    run = Path(run)
    _, card = load_model(run)
    cfg = config_from_dict(yaml.safe_load(run_file(run, "config.yaml").read_text()))
    record = json.loads(run_file(run, "split.json").read_text())
    if card.problem not in MAIN_METRIC:
        raise CnnkitError(f"the data curve retrains classifiers; {run} is a {card.problem} run")
    source = recipe_for(card.problem).open_source(cfg)
    train, val = (indices_from_record(source, record, name) for name in ("train", "val"))
    if len(val) == 0:
        raise CnnkitError(f"the data curve is measured on the val split, and {run}'s is empty")
    labels = source.labels if source.targets is None else None  # stratify single-label classes only
    out = Path(out) if out else run / "data_curve"
    rows = []
    for percent in values:
        folder = out / f"p{percent:g}"
        part = subset(train, labels, percent, seed=cfg.train.seed)
        entry = split_record(source, {"train": part}, cfg.train.seed, {})["splits"]["train"]
        sub_record = {**record, "splits": {**record["splits"], "train": entry},
                      "data_curve": {"of": str(run), "percent": percent}}
        sub_cfg = replace(cfg, out=str(folder), train=replace(cfg.train, epochs=epochs or cfg.train.epochs))
        train_metrics, val_metrics = _train_subset(sub_cfg, source, part, val, card, folder, sub_record)
        metric = MAIN_METRIC[card.problem]
        rows.append({"percent": percent, "n_train": int(len(part)),
                     "train_error": error_of(card.problem, train_metrics),
                     "val_error": error_of(card.problem, val_metrics), "val_metric": float(val_metrics[metric]),
                     "metric": metric, "run": str(folder)})
    reading = read_data_curve(rows)
    plot_data_curve(rows, reading, run / "plots" / "data_curve.png")
    (out / "data_curve.json").write_text(json.dumps({"run": str(run), "rows": rows, "reading": reading}, indent=2)
                                         + "\n")
    return rows


def format_data_curve(rows: list[dict], reading: str) -> str:
    """The rows as a table, then the reading."""
    metric = rows[0]["metric"] if rows else "metric"
    lines = [f"data curve  percent  n_train  train error  val error  val {metric}"]
    lines += [f"            {r['percent']:7g}  {r['n_train']:7d}  {r['train_error']:11.4f}  {r['val_error']:9.4f}  "
              f"{r['val_metric']:{4 + len(metric)}.4f}" for r in rows]
    return "\n".join(lines + [reading])
