"""The pieces of report.html: the page template and its CSS, what every section reads (RunInfo), and the HTML
helpers (an inlined PNG figure, an escaped table, a note). No section lives here; see report_sections.py."""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

from cnnkit.runs.card import ModelCard

UNAVAILABLE = "not available in this version"
CLASS_PROBLEMS = ("binary", "multiclass")
HELPERS = ("cnnkit.diagnose.verdict", "cnnkit.diagnose.classification", "cnnkit.diagnose.gradcam",
           "cnnkit.diagnose.segmentation", "cnnkit.diagnose.detection")

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
footer { margin-top: 2rem; border-top: 1px solid #dde; padding-top: .5rem; }
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
<footer>{footer}</footer>
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
    curve_metric: str | None = None  # the metric of the learning curves, as the recipe names it

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


def split_size(split: dict | list) -> int:
    """Images in one split of split.json: classification records {"count", "ids", ...}; detection and
    segmentation records the list of image indices."""
    return len(split) if isinstance(split, list) else int(split["count"])


def diagnosis(run: RunInfo) -> dict:
    """RUN/diagnosis.json (the verdict and the alarm as `cnnkit train` recorded them), or {}."""
    path = run.path / "diagnosis.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def history(run: RunInfo) -> list[dict]:
    """RUN/history.csv read back, or [] without one."""
    from cnnkit.diagnose.curves import read_history

    path = run.path / "history.csv"
    return read_history(path) if path.is_file() else []
