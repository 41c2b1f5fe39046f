"""audit.html: one self-contained page (pictures inlined, no request but the page itself), built with the
report's template and HTML helpers (`cnnkit.diagnose.report_page`). Each section renders one key of the
audit's findings and is left out when the audit did not measure it."""
from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnkit.diagnose.report_page import CSS, PAGE, esc, figure, note, table
from cnnkit.version import __version__

SHOW = 50  # table rows per section
PICTURES = 16  # the most suspicious labels drawn


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{esc(key)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def _summary(found: Any) -> str:
    s, t = found.sections, found.target
    flagged = sum(1 for r in found.relabel if r.get("issue"))
    dups = s.get("duplicates", [])
    leaks = sum(1 for g in dups if g["crosses_splits"])
    counts = Counter(r["kind"] for r in s.get("boxes", []))
    lines = [f"{t.recipe.name}: " + ", ".join(f"{n} {name}" for name, n in
                                               ((k, len(v)) for k, v in t.split.items())),
             f"{flagged} label issue(s) flagged of {len(found.relabel)} items audited" if "label_audit" in s else "",
             f"{len(s['boxes'])} box(es) to check: " + ", ".join(f"{n} {k}" for k, n in counts.items())
             if "boxes" in s else "",
             f"{len(s['masks'])} image(s) ranked by how little their mask agrees with the model" if "masks" in s
             else "",
             f"{len(dups)} duplicate group(s), {leaks} crossing splits (a leak into val or the locked test split)",
             f"{len(s.get('quality', []))} image-quality flag(s), {len(s.get('outliers', []))} embedding outlier(s)"]
    if "effort" in s:
        e = s["effort"]
        lines.append(f"annotation effort: {e['items']} items × {e['seconds_per_item']:g} s = {e['hours']:.1f} h "
                     f"({e['weeks']:.2f} weeks of 40 h)")
    return "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines if line) + "</ul>"


def _labels(found: Any) -> str:
    rows = [r for r in found.relabel if r.get("issue")][:SHOW]
    s = found.sections.get("label_audit", {})
    head = note(f"Out-of-fold probabilities from {s.get('method', '?')} over {s.get('folds', '?')} folds, then "
                "confident learning (Northcutt et al. 2021). Estimated share of wrong labels: "
                f"{s.get('noise', {}).get('estimated_rate', 0):.2%}. All rows are in relabel.csv.")
    body = head + _grid(found, found.relabel)
    body += table(["path", "given", "suggested", "score"],
                  [[r["path"], r["given_label"], r["suggested_label"], r["score"]] for r in rows], numeric_from=3)
    pairs = s.get("noise", {}).get("pairs", [])
    if pairs:
        body += "<h3>Estimated label noise: given → true</h3>" + table(
            ["given", "true", "share of all items"], [[p["given"], p["true"], p["share"]] for p in pairs],
            numeric_from=2)
    return body


def _grid(found: Any, rows: list[dict]) -> str:
    """The most suspicious items drawn with 'given → suggested' captions."""
    rows = [r for r in rows if "index" in r][:PICTURES]
    if not rows:
        return ""
    import torch

    from cnnkit.diagnose.classification import captioned_grid

    source = found.target.source
    images = [torch.nn.functional.interpolate(source.load(r["index"], 3)[None].float(), size=(96, 96),
                                              mode="bilinear", antialias=True)[0] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = captioned_grid(torch.stack(images).round().clamp(0, 255).to(torch.uint8),
                              [f"{r['given_label']} → {r['suggested_label']}"[:28] for r in rows],
                              Path(tmp) / "labels.png", columns=8)
        return figure(path, "the most suspicious labels: given → suggested")


def _duplicates(found: Any) -> str:
    groups = found.sections.get("duplicates", [])
    if not groups:
        return note("No exact or near-duplicate images.")
    rows = [["yes" if g["crosses_splits"] else "no", g["kind"], ", ".join(g["splits"]), len(g["paths"]),
             " | ".join(g["paths"][:4]) + (" …" if len(g["paths"]) > 4 else "")] for g in groups[:SHOW]]
    return (note("Groups that cross splits come first: the same picture in train and test makes the test score "
                 "partly a memory test.")
            + table(["crosses splits", "kind", "splits", "images", "paths"], rows, numeric_from=3))


def _rows_table(key: str, columns: list[str]) -> Callable[[Any], str]:
    def render(found: Any) -> str:
        rows = found.sections.get(key, [])
        if not rows:
            return note("Nothing flagged.")
        return table(columns, [[r.get(c) for c in columns] for r in rows[:SHOW]], numeric_from=len(columns) - 1)
    return render


def _quality(found: Any) -> str:
    shared = found.sections.get("quality_of_the_set", [])
    body = "".join(note(f"{q['share']:.0%} of the images are {q['issue'].replace('_', ' ')}: a property of the set, "
                        "not listed image by image.") for q in shared)
    return body + _rows_table("quality", ["path", "split", "issue", "value", "score"])(found)


def _masks(found: Any) -> str:
    absent = {split: names for split, names in found.sections.get("absent_classes", {}).items() if names}
    body = "".join(note(f"Never in the {split} split: {', '.join(names)}.") for split, names in absent.items())
    body += note("Agreement: the mean IoU of the given mask and the out-of-fold prediction over the classes in "
                 "either; the most frequent disagreement as given → predicted.")
    return body + _rows_table("masks", ["path", "agreement", "label", "suggested", "pixels", "score"])(found)


def _balance(found: Any) -> str:
    b = found.sections["balance"]
    splits = [k for k in b["counts"] if k != "all"] + ["all"]
    rows = [[c] + [b["counts"][s][k] for s in splits] + [b["weights"][k]] for k, c in enumerate(b["classes"])]
    return (note(f"Imbalance (largest / smallest class): {b['imbalance_ratio']:.3g}. The weights n / (K · n_c) over "
                 f"the {b['weights_from']} split would balance the loss (`class_weight: balanced`).")
            + table(["class", *splits, "balanced weight"], rows))


def _annotators(found: Any) -> str:
    a = found.sections["annotators"]
    kind = "Cohen's" if a["kappa_kind"] == "cohen" else "Fleiss'"
    body = table(["measure", "value"], [["annotators", a["annotators"]], ["items", a["items"]],
                                        [f"{kind} kappa", a["kappa"]], ["percent agreement", a["percent_agreement"]]])
    rows = a.get("disagreements", [])[:SHOW]
    if rows:
        body += "<h3>Items the annotators disagree on</h3>" + table(
            ["path", "votes", "vote entropy"], [[r["path"], r["votes"], r["entropy"]] for r in rows], numeric_from=2)
    return body


def _effort(found: Any) -> str:
    e = found.sections["effort"]
    return (note("The notes' estimate: items × seconds per item, in hours and in weeks of 40 efficient hours.")
            + table(["items", "seconds per item", "hours", "weeks"],
                    [[e["items"], e["seconds_per_item"], e["hours"], e["weeks"]]], numeric_from=0))


SECTIONS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("summary", "Summary", _summary),
    ("label_audit", "Label issues", _labels),
    ("boxes", "Boxes to check", _rows_table("boxes", ["path", "kind", "label", "suggested", "box", "score"])),
    ("masks", "Masks to check", _masks),
    ("duplicates", "Duplicates and leaks", _duplicates),
    ("quality", "Image quality", _quality),
    ("outliers", "Embedding outliers", _rows_table("outliers", ["path", "split", "score"])),
    ("balance", "Class balance", _balance),
    ("annotators", "Annotator agreement", _annotators),
    ("effort", "Annotation effort", _effort),
]


def write_page(path: Path, found: Any) -> Path:
    """OUT/audit.html with the sections the findings hold (written atomically)."""
    shown = [(k, title, render) for k, title, render in SECTIONS if k == "summary" or k in found.sections]
    body = "\n".join(_section(k, title, render(found)) for k, title, render in shown)
    nav = "".join(f'<a href="#{k}">{esc(title)}</a>' for k, title, _ in shown)
    t = found.target
    meta = (f"{t.recipe.name} · data {t.cfg.data.source} · {len(t.source)} items · written "
            f"{time.strftime('%Y-%m-%d %H:%M')} by cnnkit {__version__}")
    left = [title for k, title, _ in SECTIONS if (k, title) not in {(s[0], s[1]) for s in shown}]
    footer = note("Not measured for this data: " + ", ".join(left) + ".") if left else ""
    page = PAGE.format(title=esc(f"cnnkit audit: {t.name}"), meta=esc(meta), nav=nav, sections=body, css=CSS,
                       footer=footer)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["SECTIONS", "write_page"]
