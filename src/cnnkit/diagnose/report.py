"""One self-contained report.html per run. It opens with a summary (the verdict, the headline val metrics and
the next step), then the sections the run's recipe chose, e.g. data and split, learning curves, the verdict and
its remedies, the overfitting alarm, the task's own analysis (confusion matrix and Grad-CAM, IoU per class, or
precision/recall and drawn boxes), layer-1 kernels, timing, the model summary and the configuration.

    write_report("runs/shapes", sections=("summary", "data", "curves", "verdict", "classification"),
                 curve_metric="accuracy")

`sections` are keys of SECTIONS, in the order shown; without them DEFAULT_SECTIONS[problem] is used. A section
of another task (e.g. Grad-CAM for a regression run of the classification recipe) is dropped. A last line
names the known sections left out. Every picture is a PNG inlined as a base64 data URI and the CSS is
inline; the page has no script and no link, and its Content-Security-Policy forbids fetching anything, so it
opens offline in any browser and prints cleanly. The pictures are also left in RUN/plots/. Each section is one
function that returns an HTML fragment; a section that fails shows its error and the rest is still written.
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

from cnnkit.diagnose.report_page import CLASS_PROBLEMS, CSS, HELPERS, PAGE, UNAVAILABLE, RunInfo, esc, note
from cnnkit.diagnose.report_sections import (  # noqa: F401
    CURVE_METRICS,
    alarm_section,
    config_section,
    curves_section,
    data_section,
    kernels_section,
    model_section,
    summary_section,
    timing_section,
    verdict_section,
)
from cnnkit.diagnose.report_tasks import (
    classification_section,
    detection_section,
    gradcam_section,
    segmentation_section,
)
from cnnkit.errors import CnnkitError
from cnnkit.files import atomic_write
from cnnkit.runs.folder import load_model, run_file
from cnnkit.version import __version__

CLASSIFICATION, SEGMENTATION, DETECTION = "classification", "segmentation", "detection and instance segmentation"
PROBLEMS = {CLASSIFICATION: CLASS_PROBLEMS, SEGMENTATION: ("segment",), DETECTION: ("detect", "instance")}
# key → (title, section function, short name for the "left out" line, the tasks it applies to or None)
SECTIONS = {
    "summary": ("Summary", summary_section, "summary", None),
    "config": ("Configuration", config_section, "configuration", None),
    "data": ("Data and split", data_section, "data and split", None),
    "curves": ("Learning curves", curves_section, "learning curves", None),
    "verdict": ("Verdict: bias and variance", verdict_section, "verdict", None),
    "alarm": ("Overfitting alarm", alarm_section, "overfitting alarm", None),
    "classification": ("Confusion matrix and top losses", classification_section, "confusion matrix",
                       CLASSIFICATION),
    "segmentation": ("Per-class IoU and worst images", segmentation_section, "per-class IoU", SEGMENTATION),
    "detection": ("Precision/recall, errors and detections", detection_section, "precision/recall and boxes",
                  DETECTION),
    "gradcam": ("Grad-CAM", gradcam_section, "Grad-CAM", CLASSIFICATION),
    "kernels": ("Layer-1 kernels", kernels_section, "layer-1 kernels", None),
    "timing": ("Timing", timing_section, "timing", None),
    "model": ("Model summary", model_section, "model summary", None),
}
_HEAD = ("summary", "data", "curves", "verdict")
_TAIL = ("kernels", "timing", "model", "config")
DEFAULT_SECTIONS = {  # problem → section keys, for callers that pass none
    "binary": _HEAD + ("alarm", "classification", "gradcam") + _TAIL,
    "multiclass": _HEAD + ("alarm", "classification", "gradcam") + _TAIL,
    "multilabel": _HEAD + ("alarm",) + _TAIL,
    "regression": _HEAD + ("alarm",) + _TAIL,
    "segment": _HEAD + ("alarm", "segmentation") + _TAIL,
    "detect": _HEAD + ("detection",) + _TAIL,  # detectors log no val loss: no overfitting alarm
    "instance": _HEAD + ("detection",) + _TAIL,
}


def default_sections(problem: str) -> tuple[str, ...]:
    return DEFAULT_SECTIONS.get(problem, _HEAD + _TAIL)


def _render(run: RunInfo, key: str, title: str, fn) -> str:
    try:
        body = fn(run)
    except ModuleNotFoundError as err:
        if err.name not in HELPERS:
            raise
        body = note(f"{title}: {UNAVAILABLE} ({err.name} is missing)", "note unavailable")
    except Exception as err:  # noqa: BLE001 (one broken picture must not cost the whole report)
        warnings.warn(f"report: the {title.lower()} section failed: {type(err).__name__}: {err}", stacklevel=3)
        body = note(f"this section could not be built: {type(err).__name__}: {err}", "error")
    return f'<section id="{key}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def left_out_line(keys: Sequence[str]) -> str:
    """One line naming the known sections not in `keys`, those of other tasks grouped by the task they apply
    to: 'Not in this report: Grad-CAM, confusion matrix (they apply to classification); ...'."""
    groups: dict[str | None, list[str]] = {}
    for key, (_, _, name, applies) in SECTIONS.items():
        if key not in keys:
            groups.setdefault(applies, []).append(name)
    if not groups:
        return note("Every known section is in this report.", "note left-out")
    parts = [", ".join(names) + ("" if applies is None else
                                 f" ({'it applies' if len(names) == 1 else 'they apply'} to {applies})")
             for applies, names in groups.items()]
    return f'<p class="note" id="left-out">{esc("Not in this report: " + "; ".join(parts) + ".")}</p>'


def applies(key: str, problem: str) -> bool:
    """Can section `key` be built for a run of `problem`? (the task-specific ones only for their tasks)"""
    task = SECTIONS[key][3]
    return task is None or problem in PROBLEMS[task]


def _check(sections: Sequence[str], problem: str) -> tuple[str, ...]:
    """The known keys of `sections` that apply to `problem`, in the order given, repeats dropped."""
    keys = tuple(dict.fromkeys(sections))
    unknown = [k for k in keys if k not in SECTIONS]
    if unknown:
        raise CnnkitError(f"unknown report section(s) {', '.join(map(repr, unknown))}; known: {', '.join(SECTIONS)}")
    return tuple(k for k in keys if applies(k, problem))


def load_run_info(run: str | Path, curve_metric: str | None = None) -> RunInfo:
    path = Path(run)
    config = yaml.safe_load(run_file(path, "config.yaml").read_text()) or {}
    record = json.loads(run_file(path, "split.json").read_text())
    _, card = load_model(path)
    plots = path / "plots"
    plots.mkdir(exist_ok=True)
    return RunInfo(path, config, record, card, plots, curve_metric)


def write_report(run: str | Path, *, sections: Sequence[str] | None = None, curve_metric: str | None = None) -> Path:
    """Build RUN/report.html with `sections` (keys of SECTIONS, in that order; default DEFAULT_SECTIONS of the
    run's problem) and the learning curves of `curve_metric` (history.csv's train_/val_<metric>; default the
    problem's main metric), and return its path. Sections of other tasks than the run's are left out."""
    info = load_run_info(run, curve_metric)
    keys = _check(sections if sections is not None else default_sections(info.problem), info.problem)
    body = "\n".join(_render(info, key, SECTIONS[key][0], SECTIONS[key][1]) for key in keys)
    nav = "".join(f'<a href="#{key}">{esc(SECTIONS[key][0])}</a>' for key in keys)
    title = f"cnnkit report: {info.path.name}"
    kind = {"multilabel": "labels", "regression": "targets"}.get(info.problem, "classes")
    data = info.record.get("source") or info.config.get("data", {}).get("source")
    precision = info.config.get("train", {}).get("precision", "fp32")  # runs before --precision: fp32 or --amp
    meta = (f"{info.card.architecture} · {info.problem} · {len(info.card.classes)} {kind} · data {data} · "
            f"precision {precision} · written {time.strftime('%Y-%m-%d %H:%M')} by cnnkit {__version__}")
    page = PAGE.format(title=esc(title), meta=esc(meta), nav=nav, sections=body, css=CSS, footer=left_out_line(keys))
    out = info.path / "report.html"
    atomic_write(out, page)
    return out
