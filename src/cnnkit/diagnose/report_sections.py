"""The sections of report.html that every kind of run can have: summary, configuration, data and split,
learning curves, verdict, overfitting alarm, layer-1 kernels, timing and the model summary. Each is a function
of the RunInfo returning an HTML fragment; the task-specific sections are in report_tasks.py."""
from __future__ import annotations

import json
import math

import numpy as np

from cnnkit.diagnose.report_page import (
    CLASS_PROBLEMS,
    RunInfo,
    diagnosis,
    esc,
    figure,
    history,
    note,
    split_size,
    table,
)

# problem → the metric of its learning curves and headline, when the caller names none
CURVE_METRICS = {"binary": "accuracy", "multiclass": "accuracy", "multilabel": "binary_accuracy",
                 "regression": "mae", "segment": "miou", "detect": "map", "instance": "mask_map"}
LOWER_IS_BETTER = ("loss", "mae")


def curve_metric(run: RunInfo, rows: list[dict]) -> str | None:
    """The metric the caller named; else the problem's own when the history logs it, else the first logged."""
    from cnnkit.diagnose.curves import default_metric, metric_columns

    if run.curve_metric:
        return run.curve_metric
    metric = CURVE_METRICS.get(run.problem)
    return metric if metric and metric_columns(rows, metric) else default_metric(rows)


# ---------------------------------------------------------------- summary

def _best_row(rows: list[dict], metric: str | None) -> dict | None:
    """The epoch of the lowest val loss; without a val loss, the best val value of `metric`."""
    from cnnkit.diagnose.curves import best_epoch

    finite = lambda v: v is not None and math.isfinite(v)  # noqa: E731
    best = best_epoch(rows)
    if best is not None:
        return next(r for r in rows if r["epoch"] == best)
    scored = [r for r in rows if metric and finite(r.get(f"val_{metric}"))]
    if not scored:
        return None
    lower = any(metric.endswith(k) for k in LOWER_IS_BETTER)
    return (min if lower else max)(scored, key=lambda r: r[f"val_{metric}"])


def _headline(rows: list[dict], metric: str | None) -> str:
    """The val metrics of history.csv at the last epoch and at the best one."""
    columns = [k for k in rows[-1] if k.startswith("val_") and any(r.get(k) is not None for r in rows)]
    if not columns:
        return note("history.csv records no val metric (the run had no val split)")
    last, best = rows[-1], _best_row(rows, metric)
    header = ["val metric", f"last epoch ({last['epoch']})"]
    if best is not None and best is not last:
        header.append(f"best epoch ({best['epoch']})")
    shown = [[k[4:]] + [r.get(k) for r in ([last, best] if len(header) == 3 else [last])] for k in columns]
    return table(header, shown, html_id="summary-metrics")


def summary_section(run: RunInfo) -> str:
    """The verdict label, the headline val metrics (history.csv) with the verdict's errors, the next step."""
    v, rows = diagnosis(run).get("verdict"), history(run)
    metric = curve_metric(run, rows)
    label = str(v["label"]) if v else "no verdict recorded"
    out = f'<p class="verdict" id="summary-label">{esc(label)}</p>'
    if v:
        out += note(f"error = {v['metric']}: train {v['train_error']:.4f} (eval mode), val {v['val_error']:.4f}; "
                    f"bias {v['bias']:.4f}, variance {v['variance']:.4f}")
    out += _headline(rows, metric) if rows else note("no history.csv: no metrics were recorded per epoch")
    remedies = (v or {}).get("remedies") or []
    if remedies:
        out += f'<p id="next-step"><strong>Next step:</strong> {esc(str(remedies[0]))}</p>'
    elif not v:
        out += note("`cnnkit evaluate RUN` measures the train and val splits and gives the verdict and its remedies")
    return out


# ---------------------------------------------------------------- configuration, data, curves

def config_section(run: RunInfo) -> str:
    """config.yaml as one table per top-level section (data, model, train, the rest)."""
    shown = lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v  # noqa: E731
    groups = {k: v for k, v in run.config.items() if isinstance(v, dict)}
    groups["run"] = {k: v for k, v in run.config.items() if not isinstance(v, dict)}
    tables = [table([name, ""], [[k, shown(v)] for k, v in items.items()], html_id=f"config-{name}", numeric_from=99)
              for name, items in groups.items() if items]
    return '<div class="row">' + "".join(tables) + "</div>"


def _source(run: RunInfo):
    """The run's data with the targets of its problem type (as split.json recorded them)."""
    from cnnkit.data.builtin import open_source
    from cnnkit.data.sources import as_problem

    data = run.config.get("data", {})
    return as_problem(open_source(data.get("source", ""), data.get("max_bad_fraction", 0.1)), run.problem)


def _augment(run: RunInfo):
    """The run's augmentation, or None when it used none."""
    from cnnkit.data.transforms import make_augment

    data = run.config.get("data", {})
    aug = make_augment(data.get("augment", "none"), **(data.get("augment_options") or {}))
    return None if aug == make_augment("none") else aug


def _split_counts(run: RunInfo) -> str:
    splits = run.record["splits"]
    names = list(splits)
    if run.problem in CLASS_PROBLEMS:
        classes = run.record["classes"]
        counts = {s: np.bincount(np.asarray(splits[s]["labels"], dtype=np.int64), minlength=len(classes))
                  for s in names}
        rows = [[c] + [int(counts[s][i]) for s in names] for i, c in enumerate(classes)]
        rows.append(["total"] + [splits[s]["count"] for s in names])
        return table(["class"] + names, rows, html_id="class-counts")
    kind = {"multilabel": "labels", "regression": "targets"}.get(run.problem, "classes")
    text = note(f"{run.problem} run: {len(run.card.classes)} {kind}: {', '.join(run.card.classes)}")
    rows = [["images"] + [split_size(splits[s]) for s in names]]
    if run.problem == "multilabel":  # labels are the 0/1 targets joined by ';'
        positives = {s: np.array([[float(v) for v in t.split(";")] for t in splits[s]["labels"]]).reshape(
            -1, len(run.card.classes)).sum(0) for s in names}
        rows += [[f"with {c}"] + [int(positives[s][i]) for s in names] for i, c in enumerate(run.card.classes)]
    return text + table(["count"] + names, rows, html_id="split-counts")


def _pictures(run: RunInfo, size: int) -> str:
    """A figure of training images as the task sees them: boxes, label masks, or augmented copies."""
    from torchvision.utils import save_image

    from cnnkit.data.loader import fitted_arrays
    from cnnkit.data.preview import augment_preview
    from cnnkit.data.split import indices_from_record

    data = run.config.get("data", {})
    if run.problem in ("detect", "instance"):
        from cnnkit.config import config_from_dict
        from cnnkit.diagnose.detection import ground_truth_grid

        path = ground_truth_grid(config_from_dict(run.config), run.card, run.record["splits"]["train"],
                                 run.plots / "train_boxes.png")
        return figure(path, "the first training images as the detector sees them, their true boxes in green",
                      pixels=True)
    if run.problem == "segment":
        from cnnkit.diagnose.report_tasks import label_overlays

        return figure(label_overlays(run, size), "the first training images with their label masks blended in the "
                                                 "classes' colours", pixels=True)
    if _augment(run) is not None:
        path = augment_preview(data["source"], run.plots / "augment_preview.png", data.get("augment", "none"), n=4,
                               size=size, **(data.get("augment_options") or {}))
        return figure(path, f"augmentation {data.get('augment')}: each row a training image, then 7 augmented "
                            "copies", pixels=True)
    source = _source(run)
    train = indices_from_record(source, run.record, "train")[:16]
    images = fitted_arrays(source, train, run.card.input_size[0], size, run.card.resize)
    path = run.plots / "train_images.png"
    save_image(images.float() / 255.0, path, nrow=8, padding=2)
    return figure(path, "the first training images, as the model sees them (no augmentation)", pixels=True)


def data_section(run: RunInfo) -> str:
    """Counts per split from split.json, and a few training images as the task sees them."""
    data = run.config.get("data", {})
    fractions = ", ".join(f"{k} {v:g}" for k, v in (run.record.get("fractions") or {}).items())
    out = note(f"source {data.get('source')}; split seed {run.record.get('seed')}; fractions {fractions}; counts "
               "from split.json") + _split_counts(run)
    return out + _pictures(run, max(run.card.input_size[1], 64))


def curves_section(run: RunInfo) -> str:
    """The learning curves redrawn from history.csv with the recipe's metric (the loss alone without it)."""
    from cnnkit.diagnose.curves import metric_columns, plot_learning_curves

    path, rows = run.plots / "learning_curves.png", history(run)
    if not rows:
        return figure(path, "loss and main metric per epoch") if path.is_file() else note("no history.csv")
    metric = curve_metric(run, rows)
    plot_learning_curves(rows, path, metric)
    if metric and metric_columns(rows, metric):
        splits = " and ".join(c.split("_", 1)[0] for c in metric_columns(rows, metric))
        return figure(path, f"loss and {metric} per epoch ({metric}: {splits})")
    return figure(path, "loss per epoch" + (f" (history.csv has no {metric})" if metric else ""))


# ---------------------------------------------------------------- verdict and alarm

def verdict_section(run: RunInfo) -> str:
    """The verdict recorded in diagnosis.json at the end of training, and its remedies."""
    v = diagnosis(run).get("verdict")
    if not v:
        return note("no verdict was recorded for this run (diagnosis.json has none); `cnnkit evaluate RUN` "
                    "measures one")
    rows = [[k, v[k]] for k in v if k not in ("label", "remedies", "note") and not isinstance(v[k], (dict, list))]
    remedies = "".join(f"<li>{esc(str(r))}</li>" for r in v.get("remedies") or [])
    return (f'<p class="verdict" id="verdict-label">{esc(str(v["label"]))}</p>'
            + table(["", "value"], rows, html_id="verdict", numeric_from=1)
            + (f"<h3>Remedies, most promising first</h3><ol>{remedies}</ol>" if remedies else "")
            + (note(str(v["note"])) if v.get("note") else ""))


def alarm_section(run: RunInfo) -> str:
    """The overfitting alarm: the epoch it fired and the best epoch, as recorded in diagnosis.json."""
    alarm = diagnosis(run).get("alarm")
    if not alarm:
        return note("no alarm was recorded for this run")
    best = f"; the best epoch (lowest val loss) was {alarm['best_epoch']}" if alarm.get("best_epoch") else ""
    if alarm.get("fired_epoch") is None:
        return note(f"the overfitting alarm did not fire (patience {alarm.get('patience')} epochs){best}")
    stopped = "; training stopped there" if alarm.get("stop") else ""
    return (f'<p class="verdict" id="alarm-epoch">overfitting alarm at epoch {esc(str(alarm["fired_epoch"]))}</p>'
            + note(f"the val loss rose for {alarm.get('patience')} epochs in a row while the training loss fell"
                   f"{best}{stopped}"))


# ---------------------------------------------------------------- kernels, timing, model

def kernels_section(run: RunInfo) -> str:
    from cnnkit.diagnose.pictures import save_kernels

    path = save_kernels(run.path, run.plots / "kernels.png")
    return figure(path, "the first conv layer's kernels, each min-max scaled", pixels=True)


def timing_section(run: RunInfo) -> str:
    """Seconds per epoch (history.csv's `time` is per epoch: training and validation) and training images/s."""
    rows = history(run)
    n = split_size(run.record["splits"]["train"])
    shown = [[r["epoch"], r.get("time"), n / r["time"] if r.get("time") else None] for r in rows]
    total = sum(r.get("time") or 0.0 for r in rows)
    return (note(f"{len(rows)} epoch(s) in {total:.1f} s; {n} training images; images/s = training images / "
                 "epoch seconds (the epoch time includes validation)")
            + f'<div class="scroll">{table(["epoch", "seconds", "images/s"], shown, html_id="timing")}</div>')


def model_section(run: RunInfo) -> str:
    from cnnkit.diagnose.inspect import inspect_model

    r = inspect_model(run.path)
    summary = [["architecture", run.card.architecture], ["input (C×H×W)", r["input_size"]],
               ["parameters", f"{r['total_params']:,}"], ["FLOPs per image", f"{r['total_flops']:,}"],
               ["depth (weight layers)", r["depth"]], ["size (MB, float32)", r["size_mb"]],
               ["receptive field", r["receptive_field"]]]
    layers = [[x["name"], x["type"], x["output_shape"][1:] if x.get("output_shape") else None, x["params"],
               x["flops"], x.get("receptive_field")] for x in r["layers"]]
    return (table(["", "value"], summary, html_id="model-summary", numeric_from=99)
            + '<div class="scroll">' + table(["layer", "type", "output", "params", "FLOPs", "receptive field"],
                                             layers, html_id="layers", numeric_from=2) + "</div>")
