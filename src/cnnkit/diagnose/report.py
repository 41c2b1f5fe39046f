"""One self-contained report.html per run: configuration, data and split, learning curves, the verdict and
its remedies, the overfitting alarm, confusion matrix, top losses, Grad-CAM, layer-1 kernels, timing and the
model summary.

Every picture is a PNG inlined as a base64 data URI and the CSS is inline; the page has no script and no
link, and its Content-Security-Policy forbids fetching anything, so it opens offline in any browser and
prints cleanly. The pictures are also left in RUN/plots/. Each section is one function that returns an
HTML fragment; a section that fails shows its error and the rest of the report is still written.
"""
from __future__ import annotations

import base64
import html
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from cnnkit import __version__
from cnnkit.runs.folder import ModelCard, load_model, run_file

UNAVAILABLE = "not available in this version"
CLASS_PROBLEMS = ("binary", "multiclass")
HELPERS = ("cnnkit.diagnose.verdict", "cnnkit.diagnose.classification", "cnnkit.diagnose.gradcam")

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1d1d1f; max-width: 1100px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { border-bottom: 2px solid #dde; padding-bottom: .2rem; }
.meta, .note { color: #555; } .error { color: #a00; }
nav a { margin-right: .8rem; color: #245; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ccd; padding: .2rem .55rem; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f0f2f7; }
figure { margin: .5rem 0 1.2rem; } figcaption { color: #555; font-size: .85rem; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
img.pixels { image-rendering: pixelated; min-width: min(100%, 480px); }
.verdict { font-size: 1.25rem; font-weight: 600; }
.scroll { max-height: 32rem; overflow: auto; }
.row { display: flex; flex-wrap: wrap; gap: 0 1.5rem; align-items: flex-start; }
.row > figure { flex: 1 1 0; min-width: 18rem; }
@page { margin: 14mm; }
@media print {
  body { max-width: none; font-size: 10pt; padding: 0; }
  nav { display: none; }
  .scroll { max-height: none; overflow: visible; }
  figure, tr, .verdict { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; page-break-after: avoid; }
  img { max-width: 100% !important; min-width: 0 !important; }
}
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header><h1>{title}</h1><p class="meta">{meta}</p></header>
<nav>{nav}</nav>
{sections}
</body>
</html>
"""

esc = html.escape


@dataclass
class RunInfo:
    """What every section reads once: the run folder, its config (as saved), split record and model card."""

    path: Path
    config: dict
    record: dict
    card: ModelCard
    plots: Path

    @property
    def problem(self) -> str:
        return self.card.problem


# ---------------------------------------------------------------- HTML pieces

def _png(path: str | Path) -> bytes:
    """The file's bytes as PNG (converted with PIL when it is another format)."""
    data = Path(path).read_bytes()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG")
    return buffer.getvalue()


def figure(path: str | Path, caption: str, pixels: bool = False) -> str:
    """<figure> with the picture inlined as a data URI; `pixels` enlarges small images without blurring."""
    uri = "data:image/png;base64," + base64.b64encode(_png(path)).decode("ascii")
    cls = ' class="pixels"' if pixels else ""
    return (f'<figure><img{cls} src="{uri}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def table(header: list[str], rows: list[list], html_id: str | None = None, numeric_from: int = 1) -> str:
    """A <table>; cells from column `numeric_from` on are right-aligned. Every cell is escaped."""
    def cell(tag: str, i: int, value) -> str:
        cls = ' class="num"' if i >= numeric_from else ""
        return f"<{tag}{cls}>{esc(_text(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("th" if i == 0 else "td", i, v) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    ident = f' id="{esc(html_id)}"' if html_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "×".join(str(v) for v in value) if all(isinstance(v, int) for v in value) else str(value)
    return "—" if value is None else str(value)


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


# ---------------------------------------------------------------- sections

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


def _split_size(split: dict | list) -> int:
    """Images in one split of split.json: classification records {"count", "ids", ...}; detection and
    segmentation records the list of image indices."""
    return len(split) if isinstance(split, list) else int(split["count"])


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
    kind = "labels" if run.problem == "multilabel" else "targets"
    text = note(f"{run.problem} run: {len(run.card.classes)} {kind}: {', '.join(run.card.classes)}")
    rows = [["images"] + [_split_size(splits[s]) for s in names]]
    if run.problem == "multilabel":  # labels are the 0/1 targets joined by ';'
        positives = {s: np.array([[float(v) for v in t.split(";")] for t in splits[s]["labels"]]).reshape(
            -1, len(run.card.classes)).sum(0) for s in names}
        rows += [[f"with {c}"] + [int(positives[s][i]) for s in names] for i, c in enumerate(run.card.classes)]
    return text + table(["count"] + names, rows, html_id="split-counts")


def data_section(run: RunInfo) -> str:
    """Class counts per split from split.json, and an augmentation preview (or a few training images)."""
    from torchvision.utils import save_image

    from cnnkit.api import augment_preview
    from cnnkit.data.loader import fitted_arrays
    from cnnkit.data.split import indices_from_record

    data = run.config.get("data", {})
    fractions = ", ".join(f"{k} {v:g}" for k, v in (run.record.get("fractions") or {}).items())
    out = note(f"source {data.get('source')}; split seed {run.record.get('seed')}; fractions {fractions}; counts "
               "from split.json") + _split_counts(run)
    size = max(run.card.input_size[1], 64)
    if run.problem == "segment":
        return out + figure(_label_overlays(run, size), "the first training images with their label masks "
                                                         "blended in the classes' colours", pixels=True)
    if _augment(run) is not None:
        path = augment_preview(data["source"], run.plots / "augment_preview.png", data.get("augment", "none"), n=4,
                               size=size, **(data.get("augment_options") or {}))
        return out + figure(path, f"augmentation {data.get('augment')}: each row a training image, then 7 "
                                  "augmented copies", pixels=True)
    source = _source(run)
    train = indices_from_record(source, run.record, "train")[:16]
    images = fitted_arrays(source, train, run.card.input_size[0], size, run.card.resize)
    path = run.plots / "train_images.png"
    save_image(images.float() / 255.0, path, nrow=8, padding=2)
    return out + figure(path, "the first training images, as the model sees them (no augmentation)", pixels=True)


def _label_overlays(run: RunInfo, size: int, n: int = 8) -> Path:
    """plots/train_labels.png: up to `n` training images of a segmentation run, each beside its label overlay."""
    from torchvision.utils import save_image

    from cnnkit.data.segmentation.source import open_segmentation_source
    from cnnkit.data.segmentation.loader import fit_image
    from cnnkit.recipes.segmentation import overlay, palette_of

    source = open_segmentation_source(run.config.get("data", {}).get("source", ""))
    pictures = []
    for i in run.record["splits"]["train"][:n]:
        image, mask = source.read(int(i))  # uint8 (3, H, W), int64 (H, W)
        image = fit_image(image, size)
        mask = fit_image(mask[None].to(torch.uint8), size, nearest=True)[0]
        pictures += [image, overlay(image, mask, palette_of(run.card))]
    path = run.plots / "train_labels.png"
    width = max(p.shape[-1] for p in pictures)
    height = max(p.shape[-2] for p in pictures)
    padded = torch.zeros(len(pictures), 3, height, width, dtype=torch.uint8)
    for k, p in enumerate(pictures):
        padded[k, :, :p.shape[-2], :p.shape[-1]] = p
    save_image(padded.float() / 255.0, path, nrow=4, padding=2)
    return path


def curves_section(run: RunInfo) -> str:
    from cnnkit.diagnose.curves import plot_learning_curves, read_history

    path = run.plots / "learning_curves.png"
    if not path.is_file():
        history = read_history(run_file(run.path, "history.csv"))
        plot_learning_curves(history, path)
    return figure(path, "loss and main metric per epoch, train against val")


def _diagnosis(run: RunInfo) -> dict:
    """RUN/diagnosis.json (the verdict and the alarm as `cnnkit train` recorded them), or {}."""
    path = run.path / "diagnosis.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def verdict_section(run: RunInfo) -> str:
    """The verdict recorded at the end of training, else computed now, and its remedies."""
    v = _diagnosis(run).get("verdict")
    if not v:
        from cnnkit.diagnose.verdict import run_verdict

        v = run_verdict(run.path).as_dict()
    rows = [[k, v[k]] for k in v if k not in ("label", "remedies", "note") and not isinstance(v[k], (dict, list))]
    remedies = "".join(f"<li>{esc(str(r))}</li>" for r in v.get("remedies") or [])
    return (f'<p class="verdict" id="verdict-label">{esc(str(v["label"]))}</p>'
            + table(["", "value"], rows, html_id="verdict", numeric_from=1)
            + (f"<h3>Remedies, most promising first</h3><ol>{remedies}</ol>" if remedies else "")
            + (note(str(v["note"])) if v.get("note") else ""))


def alarm_section(run: RunInfo) -> str:
    """The overfitting alarm: the epoch it fired and the best epoch, as recorded in diagnosis.json."""
    alarm = _diagnosis(run).get("alarm")
    if not alarm:
        return note("no alarm was recorded for this run")
    best = f"; the best epoch (lowest val loss) was {alarm['best_epoch']}" if alarm.get("best_epoch") else ""
    if alarm.get("fired_epoch") is None:
        return note(f"the overfitting alarm did not fire (patience {alarm.get('patience')} epochs){best}")
    stopped = "; training stopped there" if alarm.get("stop") else ""
    return (f'<p class="verdict" id="alarm-epoch">overfitting alarm at epoch {esc(str(alarm["fired_epoch"]))}</p>'
            + note(f"the val loss rose for {alarm.get('patience')} epochs in a row while the training loss fell"
                   f"{best}{stopped}"))


def classification_section(run: RunInfo) -> str:
    from cnnkit.diagnose.classification import classification_analysis

    a = classification_analysis(run.path, run.plots, split="val")
    paths = a["paths"]
    per_class = [[c, m.get("precision"), m.get("recall"), m.get("f1"), m.get("support")]
                 for c, m in a["per_class"].items()]
    top_k = ", ".join(f"top-{k} {acc:.4f}" for k, acc in a["top_k_accuracy"].items())
    return (note(f"on the val split ({a.get('count', '?')} images): {top_k}; expected calibration error "
                 f"{a['ece']:.4f}")
            + '<div class="row">'
            + figure(paths["confusion"], "confusion matrix (counts): rows true class, columns predicted")
            + figure(paths["confusion_normalized"], "confusion matrix, each row normalised to 1") + "</div>"
            + '<div class="row">'
            + table(["class", "precision", "recall", "F1", "support"], per_class, html_id="per-class")
            + figure(paths["reliability"], "reliability diagram: confidence against accuracy per bin") + "</div>"
            + "<h3>Top losses</h3>" + figure(paths["top_losses"], "the most confidently wrong val images"))


def segmentation_section(run: RunInfo) -> str:
    from cnnkit.diagnose.segmentation import segmentation_analysis

    a = segmentation_analysis(run.path, run.plots, split="val")
    s = a["scores"]
    rows = [[c, iou, dice, acc] for c, iou, dice, acc in
            zip(run.card.classes, s["per_class_iou"], s["per_class_dice"], s["per_class_accuracy"])]
    worst = "; ".join(f"{Path(w['path']).name} {w['miou']:.3f}" if w["miou"] is not None else Path(w["path"]).name
                      for w in a["worst"])
    return (note(f"on the val split ({a['count']} images, every non-ignored pixel): mIoU {s['miou']:.4f}, pixel "
                 f"accuracy {s['pixel_accuracy']:.4f}, frequency-weighted IoU {s['fw_iou']:.4f}")
            + '<div class="row">'
            + figure(a["paths"]["confusion_normalized"], "pixel confusion matrix, each row normalised to 1")
            + table(["class", "IoU", "Dice", "accuracy"], rows, html_id="per-class-iou") + "</div>"
            + "<h3>Worst images</h3>"
            + figure(a["paths"]["worst"], f"the val images of lowest mIoU ({worst}): the image, its labels, the "
                                          "prediction", pixels=True))


def gradcam_section(run: RunInfo) -> str:
    from cnnkit.diagnose.gradcam import plot_gradcam

    path = plot_gradcam(run.path, run.plots / "gradcam.png", split="val", n=8)
    return figure(path, "Grad-CAM: where the last conv layer's evidence for the predicted class lies (val images)")


def kernels_section(run: RunInfo) -> str:
    from cnnkit.diagnose.pictures import save_kernels

    path = save_kernels(run.path, run.plots / "kernels.png")
    return figure(path, "the first conv layer's kernels, each min-max scaled", pixels=True)


def timing_section(run: RunInfo) -> str:
    """Seconds per epoch (history.csv's `time` is per epoch: training and validation) and training images/s."""
    from cnnkit.diagnose.curves import read_history

    history = read_history(run_file(run.path, "history.csv"))
    n = _split_size(run.record["splits"]["train"])
    rows = [[r["epoch"], r.get("time"), n / r["time"] if r.get("time") else None] for r in history]
    total = sum(r.get("time") or 0.0 for r in history)
    return (note(f"{len(history)} epoch(s) in {total:.1f} s; {n} training images; images/s = training images / "
                 "epoch seconds (the epoch time includes validation)")
            + f'<div class="scroll">{table(["epoch", "seconds", "images/s"], rows, html_id="timing")}</div>')


def model_section(run: RunInfo) -> str:
    from cnnkit.api import inspect_model

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


def _only_for(problems: tuple[str, ...], why: str):
    """A section that applies only to `problems`: elsewhere it is one line saying `why` it is left out."""
    def decorate(fn):
        def section(run: RunInfo) -> str:
            if run.problem not in problems:
                return note(f"left out for this {run.problem} run: {why}")
            return fn(run)
        return section
    return decorate


ONE_LABEL = "applies to classes, one label per image"
SECTIONS = (
    ("config", "Configuration", config_section),
    ("data", "Data and split", data_section),
    ("curves", "Learning curves", curves_section),
    ("verdict", "Verdict: bias and variance", verdict_section),
    ("alarm", "Overfitting alarm", alarm_section),
    ("classification", "Confusion matrix and top losses",
     _only_for(CLASS_PROBLEMS, f"a confusion matrix of images {ONE_LABEL}")(classification_section)),
    ("segmentation", "Per-class IoU and worst images",
     _only_for(("segment",), "IoU per class is for segmentation, one class per pixel")(segmentation_section)),
    ("gradcam", "Grad-CAM", _only_for(CLASS_PROBLEMS, f"Grad-CAM of the predicted class {ONE_LABEL}")(gradcam_section)),
    ("kernels", "Layer-1 kernels", kernels_section),
    ("timing", "Timing", timing_section),
    ("model", "Model summary", model_section),
)


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


def load_run_info(run: str | Path) -> RunInfo:
    path = Path(run)
    config = yaml.safe_load(run_file(path, "config.yaml").read_text()) or {}
    record = json.loads(run_file(path, "split.json").read_text())
    _, card = load_model(path)
    plots = path / "plots"
    plots.mkdir(exist_ok=True)
    return RunInfo(path, config, record, card, plots)


def write_report(run: str | Path) -> Path:
    """Build RUN/report.html (see the module docstring) and return its path."""
    info = load_run_info(run)
    sections = "\n".join(_render(info, key, title, fn) for key, title, fn in SECTIONS)
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in SECTIONS)
    title = f"cnnkit report: {info.path.name}"
    meta = (f"{info.card.architecture} · {info.problem} · {len(info.card.classes)} "
            f"{'classes' if info.problem in CLASS_PROBLEMS else 'outputs'} · data {info.record.get('source')} · "
            f"written {time.strftime('%Y-%m-%d %H:%M')} by cnnkit {__version__}")
    page = PAGE.format(title=esc(title), meta=esc(meta), nav=nav, sections=sections, css=CSS)
    out = info.path / "report.html"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
