"""The pieces of report.html: a figure inlines its picture as a PNG data URI (other formats converted), a table
escapes every cell and formats numbers, a note is escaped; what a section reads of the run folder."""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.diagnose.report_page import CSS, PAGE, RunInfo, diagnosis, figure, history, note, split_size, table
from cnnkit.runs.card import ModelCard

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data_uri(html: str) -> bytes:
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert match, html[:200]
    return base64.b64decode(match.group(1))


def test_figure_inlines_the_png_bytes_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(path)
    html = figure(path, "loss & accuracy <per epoch>")
    assert _data_uri(html) == path.read_bytes()
    assert html.startswith("<figure><img src=") and html.endswith("</figcaption></figure>")
    assert 'alt="loss &amp; accuracy &lt;per epoch&gt;"' in html
    assert "<figcaption>loss &amp; accuracy &lt;per epoch&gt;</figcaption>" in html
    assert '<img class="pixels"' in figure(path, "small", pixels=True)


def test_figure_converts_another_format_to_png_with_the_same_pixels(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "grid.bmp"  # lossless, so the pixels can be compared exactly
    Image.fromarray(pixels).save(path)
    data = _data_uri(figure(path, "grid"))
    assert data.startswith(PNG_MAGIC)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), pixels)


def test_table_escapes_every_cell_and_right_aligns_numbers() -> None:
    html = table(["class", "<b>F1</b>"], [["cat & dog", 0.123456], ["<script>", None]], html_id='a"b')
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;F1&lt;/b&gt;" in html
    assert "cat &amp; dog" in html and 'id="a&quot;b"' in html
    assert '<td class="num">0.1235</td>' in html  # 4 significant digits
    assert '<td class="num">—</td>' in html  # None is a dash
    assert "<th>cat &amp; dog</th>" in html  # the first column heads its row, left-aligned
    assert html.count("<tr>") == 3


def test_table_text_of_sizes_lists_and_the_numeric_columns() -> None:
    html = table(["", "value"], [["input", [3, 32, 32]], ["names", ["a", "b"]], ["epochs", 12]], numeric_from=2)
    assert "<td>3×32×32</td>" in html and "<td>[&#x27;a&#x27;, &#x27;b&#x27;]</td>" in html
    assert 'class="num"' not in html  # no column from 2 on


def test_note_is_escaped() -> None:
    assert note("a < b & c") == '<p class="note">a &lt; b &amp; c</p>'
    assert note("failed", "error") == '<p class="error">failed</p>'


def test_split_size_of_both_record_kinds() -> None:
    assert split_size({"count": 7, "ids": ["a"] * 7}) == 7  # classification
    assert split_size([4, 9, 11]) == 3  # detection, segmentation: image indices


def _info(path: Path) -> RunInfo:
    card = ModelCard("lenet5", "classify", ["a", "b"], [1, 32, 32], [0.5], [0.5])
    return RunInfo(path, {}, {}, card, path / "plots")


def test_run_info_reads_diagnosis_and_history_or_gives_empty(tmp_path: Path) -> None:
    info = _info(tmp_path)
    assert info.problem == "multiclass"  # the card's canonical problem
    assert diagnosis(info) == {} and history(info) == []
    (tmp_path / "diagnosis.json").write_text('{"verdict": {"label": "good fit"}}')
    (tmp_path / "history.csv").write_text("epoch,train_loss,val_loss\n1,0.9,\n2,0.5,0.6\n")
    assert diagnosis(info) == {"verdict": {"label": "good fit"}}
    assert history(info) == [{"epoch": 1, "train_loss": 0.9, "val_loss": None},
                             {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6}]


def test_the_page_fetches_nothing() -> None:
    page = PAGE.format(title="t", css=CSS, meta="m", nav="", sections="", footer="")
    assert "default-src 'none'; img-src data:" in page
    assert "<script" not in page and "<link" not in page and "http" not in CSS


@pytest.mark.parametrize("caption", ['"quoted"', "it's"])
def test_captions_with_quotes_stay_inside_the_alt_attribute(tmp_path: Path, caption: str) -> None:
    path = tmp_path / "x.png"
    Image.new("L", (2, 2)).save(path)
    alt = re.search(r'alt="([^"]*)"', figure(path, caption))
    assert alt and alt.group(1).replace("&quot;", '"').replace("&#x27;", "'") == caption
