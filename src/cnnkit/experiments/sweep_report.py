"""What `cnnkit sweep` writes and prints: DIR/trials.csv (one row per finished trial), DIR/parallel.png (parallel
coordinates of the parameters and the metric), DIR/importance.json (Optuna's parameter importance) and the table
with the best configuration (see cnnkit.experiments.sweep)."""
from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_MINIMIZED = ("loss", "error", "mae", "mse", "rmse")


@dataclass
class SweepResult:
    """The sweep's folder, what it optimised, one row per finished trial, the best complete one (None when every
    trial was pruned), each parameter's importance (None below two complete trials) and the files written."""

    out: Path
    metric: str
    direction: str
    params: list[str]
    rows: list[dict] = field(default_factory=list)
    best: dict | None = None
    importance: dict | None = None
    files: dict[str, Path] = field(default_factory=dict)


def direction_of(metric: str) -> str:
    return "minimize" if any(word in metric for word in _MINIMIZED) else "maximize"


def trial_rows(study: Any, space: Any) -> list[dict]:
    """One dict per finished trial (complete or pruned), by trial number: trial, state, value, the parameters,
    epochs, seconds and the run folder."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    rows = []
    for t in sorted(study.get_trials(deepcopy=False, states=states), key=lambda t: t.number):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     **{p.name: t.params.get(p.name) for p in space.search},
                     "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)), "seconds": seconds,
                     "run": t.user_attrs.get("run", "")})
    return rows


def write_trials_csv(rows: list[dict], path: Path, metric: str, params: list[str]) -> Path:
    """DIR/trials.csv, written atomically; the value column is named after the metric."""
    columns = ["trial", "state", metric, *params, "epochs", "seconds", "run"]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: v for k, v in row.items() if k != "value"}, metric: row["value"]})
    tmp.replace(path)
    return path


def best_row(rows: list[dict], metric: str) -> dict | None:
    """The complete trial with the best value (lowest for a loss or an error), or None."""
    done = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    if not done:
        return None
    pick = min if direction_of(metric) == "minimize" else max
    return pick(done, key=lambda r: r["value"])


def importance(study: Any, space: Any) -> dict[str, float] | None:
    """Optuna's parameter importance (fANOVA) with at least two complete trials and a parameter; else None."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not space.search:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as err:  # e.g. every complete trial with the same parameters
        warnings.warn(f"no parameter importance: {err}", stacklevel=2)
        return None
    return {name: float(found.get(name, 0.0)) for name in sorted(found, key=found.get, reverse=True)}


def _axis(values: list, p: Any) -> tuple[list[float | None], list[str]]:
    """Each value's place on a [0, 1] axis, and the axis' tick labels (bottom, top)."""
    if p.choices is not None:
        names = [str(c) for c in p.choices]
        spread = max(len(names) - 1, 1)
        return [None if v is None else names.index(str(v)) / spread for v in values], [names[0], names[-1]]
    scale = (lambda x: math.log10(x)) if p.log else float
    lo, hi = scale(p.low), scale(p.high)
    return [None if v is None else (scale(v) - lo) / (hi - lo) for v in values], [f"{p.low:g}", f"{p.high:g}"]


def plot_parallel(rows: list[dict], space: Any, metric: str, path: Path) -> Path:
    """Parallel coordinates: one axis per parameter and one for the metric, one line per trial coloured by its
    value (pruned trials grey and dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = [_axis([r[p.name] for r in rows], p) for p in space.search]
    values = [r["value"] for r in rows if r["value"] is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    span = (hi - lo) or 1.0
    fig, ax = plt.subplots(figsize=(2.2 * (len(axes) + 1) + 1, 4.5))
    cmap = plt.get_cmap("viridis_r" if direction_of(metric) == "minimize" else "viridis")
    for i, row in enumerate(rows):
        ys = [a[0][i] for a in axes] + [None if row["value"] is None else (row["value"] - lo) / span]
        xs = [x for x, y in enumerate(ys) if y is not None]
        pruned = row["state"] != "complete"
        colour = "0.6" if pruned or row["value"] is None else cmap((row["value"] - lo) / span)
        ax.plot(xs, [y for y in ys if y is not None], "--" if pruned else "-", color=colour, alpha=0.8, marker="o")
    labels = [p.name for p in space.search] + [metric]
    ticks = [a[1] for a in axes] + [[f"{lo:.4g}", f"{hi:.4g}"]]
    for x, (bottom, top) in enumerate(ticks):
        ax.axvline(x, color="0.3", linewidth=0.8)
        ax.annotate(bottom, (x, -0.04), ha="center", va="top", fontsize=8)
        ax.annotate(top, (x, 1.04), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    ax.set_title(f"{len(rows)} trials (dashed: pruned)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(study: Any, space: Any, out: Path, metric: str) -> SweepResult:
    """trials.csv, parallel.png and importance.json of the study; the SweepResult."""
    names = [p.name for p in space.search]
    rows = trial_rows(study, space)
    result = SweepResult(out, metric, direction_of(metric), names, rows, best_row(rows, metric))
    result.files["csv"] = write_trials_csv(rows, out / "trials.csv", metric, names)
    if rows:
        result.files["png"] = plot_parallel(rows, space, metric, out / "parallel.png")
    result.importance = importance(study, space)
    if result.importance is not None:
        result.files["importance"] = out / "importance.json"
        result.files["importance"].write_text(json.dumps(result.importance, indent=2) + "\n")
    return result


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def format_sweep(result: SweepResult) -> str:
    """The table of trials, the importance of each parameter and the best configuration, as plain text."""
    columns = ["trial", "state", result.metric, *result.params, "epochs"]
    cells = [[_cell(r["trial"]), r["state"], _cell(r["value"]), *(_cell(r[p]) for p in result.params),
              _cell(r["epochs"])] for r in result.rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    if result.importance:
        lines.append("importance: " + "  ".join(f"{k} {v:.2f}" for k, v in result.importance.items()))
    if result.best is None:
        lines.append("no complete trial yet: no best configuration")
    else:
        b = result.best
        settings = "  ".join(f"{p}={_cell(b[p])}" for p in result.params)
        lines.append(f"best: trial {b['trial']} {result.metric} {b['value']:.4g}  {settings}  ({b['run']})")
    files = "  ".join(str(result.files[k]) for k in ("csv", "png", "importance") if k in result.files)
    lines.append(f"files: {files}")
    return "\n".join(lines)
