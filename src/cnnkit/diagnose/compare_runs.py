"""`cnnkit compare RUN RUN ... [--json] [--out DIR]`: runs side by side, read from their folders only.

    result = compare_runs(["runs/a", "runs/b", "runs/c"], out="compare-a")

For each run: the final epoch's metrics (history.csv), the verdict (diagnosis.json, when the run has one), and the
configuration keys whose values differ between the runs (config.yaml, flattened to dotted keys; `out` left out).
Runs of different tasks are compared on the metrics they have in common (the table), each run's own metrics stay in
the JSON. Written to OUT: compare.png (the learning curves overlaid: loss and the first metric all runs log, train
dashed, val solid), compare.html (one self-contained page, the plot embedded as base64) and compare.json.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import yaml

from cnnkit.diagnose.curves import DEFAULT_METRICS, read_history
from cnnkit.errors import CnnkitError

IGNORED_KEYS = ("out",)  # differs between any two runs and says nothing about them
_SKIP = ("epoch", "time", "lr")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else
                    {f"{prefix}{key}": value})
    return flat


def read_run(run: str | Path) -> dict:
    """{name, path, config (dotted), history, final (the last epoch's numbers), verdict} of a run folder; a folder
    that is not a run is a one-line error."""
    path = Path(run)
    if not path.is_dir():
        raise CnnkitError(f"run folder not found: {path}")
    missing = [name for name in ("config.yaml", "history.csv") if not (path / name).is_file()]
    if missing:
        raise CnnkitError(f"{path} is not a run folder (no {' and no '.join(missing)}; a run comes from "
                          "`cnnkit train`)")
    config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    history = read_history(path / "history.csv")
    final = {k: v for k, v in (history[-1] if history else {}).items()
             if k not in _SKIP and v is not None and math.isfinite(v)}
    diagnosis = path / "diagnosis.json"
    verdict = (json.loads(diagnosis.read_text()).get("verdict") if diagnosis.is_file() else None) or None
    return {"name": path.name, "path": str(path), "task": config.get("task", "auto"), "config": _flatten(config),
            "history": history, "epochs": len(history), "final": final, "verdict": verdict}


def config_differences(runs: list[dict]) -> dict[str, list]:
    """{dotted key: [each run's value]} for the keys whose values are not all equal (a missing key is None)."""
    keys = sorted({k for r in runs for k in r["config"]} - set(IGNORED_KEYS))
    return {k: [r["config"].get(k) for r in runs] for k in keys
            if len({json.dumps(r["config"].get(k), sort_keys=True, default=str) for r in runs}) > 1}


def common_metrics(runs: list[dict]) -> list[str]:
    """The final metrics every run has, in the first run's order."""
    return [k for k in runs[0]["final"] if all(k in r["final"] for r in runs[1:])]


def _curve_metric(runs: list[dict]) -> str | None:
    return next((m for m in DEFAULT_METRICS if all(any(f"val_{m}" in row for row in r["history"]) for r in runs)),
                None)


def plot_curves(runs: list[dict], path: Path) -> Path:
    """The learning curves overlaid: the loss and the first common metric; one colour per run, train dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["loss"] + [m for m in (_curve_metric(runs),) if m]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        for i, run in enumerate(runs):
            colour = f"C{i % 10}"
            for split, style in (("train", "--"), ("val", "-")):
                points = [(row["epoch"], row.get(f"{split}_{metric}")) for row in run["history"]]
                points = [(e, v) for e, v in points if v is not None and math.isfinite(v)]
                if points:
                    ax.plot(*zip(*points), style, color=colour, label=f"{run['name']} {split}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.suptitle("train dashed, val solid")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table: one column per run; rows of epochs, common metrics, verdicts, differing keys."""
    runs = result["runs"]
    rows = [["epochs", *(_cell(r["epochs"]) for r in runs)]]
    rows += [[m, *(_cell(r["final"].get(m)) for r in runs)] for m in result["common_metrics"]]
    rows.append(["verdict", *((r["verdict"] or {}).get("label", "") for r in runs)])
    rows += [[k, *(_cell(v) for v in values)] for k, values in result["config_differences"].items()]
    return ["", *(r["name"] for r in runs)], rows


def format_comparison(result: dict) -> str:
    """The comparison as a plain-text table, then the files written."""
    header, rows = _rows(result)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.append(f"files: {result['files']['png']}  {result['files']['json']}")
    return "\n".join(lines)


def page(result: dict, png: Path) -> str:
    """compare.html: the table and the overlaid curves (base64), no outside file."""
    header, rows = _rows(result)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    runs = "".join(f"<li>{html.escape(r['name'])}: {html.escape(r['path'])}</li>" for r in result["runs"])
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>cnnkit compare</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
            f"<h1>{len(result['runs'])} runs compared</h1><ul>{runs}</ul>"
            "<h2>Final metrics, verdicts and the settings that differ</h2>"
            f"<table id='comparison'><tr>{head}</tr>{body}</table>"
            f"<h2>Learning curves</h2><img alt='learning curves' src='data:image/png;base64,{image}'>"
            "</body></html>\n")


def compare_runs(runs: list[str | Path], *, out: str | Path | None = None) -> dict:
    """Compare run folders (at least two); writes OUT/compare.png, compare.html and compare.json and returns the
    comparison: runs (name, path, task, epochs, final, verdict), common_metrics, config_differences, files."""
    if len(runs) < 2:
        raise CnnkitError(f"compare needs at least two run folders, got {len(runs)}")
    read = [read_run(r) for r in runs]
    names = [r["name"] for r in read]
    for i, r in enumerate(read):
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['name']}#{i + 1}"
    folder = Path(out) if out is not None else Path(f"compare-{read[0]['name']}")
    folder.mkdir(parents=True, exist_ok=True)
    files = {"png": folder / "compare.png", "html": folder / "compare.html", "json": folder / "compare.json"}
    result = {"runs": [{k: v for k, v in r.items() if k not in ("history", "config")} for r in read],
              "common_metrics": common_metrics(read), "config_differences": config_differences(read),
              "files": {k: str(v) for k, v in files.items()}}
    plot_curves(read, files["png"])
    files["html"].write_text(page(result, files["png"]), encoding="utf-8")
    files["json"].write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
