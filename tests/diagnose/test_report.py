"""report.html: `cnnkit report RUN` writes one self-contained page (every picture an inlined PNG, nothing
fetched) that opens with the summary, whose class counts are split.json's; the sections are those the caller
(the run's recipe) names, or the problem type's defaults, and a last line names the sections left out."""
from __future__ import annotations

import base64
import html
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit import api
from cnnkit.cli import app as cli
from cnnkit.config import load_config
from cnnkit.errors import CnnkitError


def train_tiny(out: Path, source: str = "synthetic-shapes:n=60,size=32", augment: str = "none", **extra) -> Path:
    cfg = load_config(overrides={"data": {"source": source, "augment": augment}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 1, "batch_size": 32}, "out": str(out), **extra})
    return api.train(cfg).run_dir


class Page(HTMLParser):
    """The <img> srcs, every src/href, and the rows of each table with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.links += [a[k] for k in ("src", "href") if k in a]
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None


def parse(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    return text, page


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("report") / "shapes")


def test_train_writes_the_report(run: Path) -> None:
    assert (run / "report.html").is_file()


def test_cli_report_prints_its_path_last(run: Path, capsys) -> None:
    (run / "report.html").unlink()
    assert cli.main(["-q", "report", str(run)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(run / "report.html")
    assert (run / "report.html").is_file()


def test_self_contained_and_every_image_a_png(run: Path) -> None:
    text, page = parse(run / "report.html")
    assert not [u for u in page.links if re.match(r"\s*(https?:)?//", u)], "external src/href"
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    assert len(page.imgs) >= 6  # train images, curves, 2 confusions, reliability, top losses, Grad-CAM, kernels
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,"), src[:40]
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        assert image.format == "PNG" and image.width > 0 and image.height > 0
    assert 'class="error"' not in text, re.findall(r'class="error">([^<]*)', text)
    for section in ("summary", "config", "data", "curves", "verdict", "alarm", "classification", "gradcam",
                    "kernels", "timing", "model"):
        assert f'<section id="{section}">' in text, section


def sections_of(text: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', text)


def nav_of(text: str) -> list[str]:
    return re.findall(r'href="#([a-z]+)"', text.split("<nav>", 1)[1].split("</nav>", 1)[0])


def left_out(text: str) -> str:
    (line,) = re.findall(r'<p class="note" id="left-out">([^<]*)</p>', text)
    return line


def test_a_classification_report_opens_with_the_summary_and_leaves_out_other_tasks(run: Path) -> None:
    text, _ = parse(run / "report.html")
    shown = sections_of(text)
    assert shown[0] == "summary" and nav_of(text) == shown
    assert shown.index("config") > shown.index("model")  # the full configuration comes last
    for other in ("segmentation", "detection"):
        assert other not in shown and f'href="#{other}"' not in text
    assert "left out for this" not in text  # no empty placeholder sections
    line = left_out(text)
    assert line.startswith("Not in this report:") and "per-class IoU (it applies to segmentation)" in line
    assert "precision/recall" in line and "Grad-CAM" not in line
    assert text.index('id="left-out"') > text.rindex("</section>")  # the page's last line


def test_the_summary_shows_the_verdict_the_val_metrics_and_the_next_step(run: Path) -> None:
    text, page = parse(run / "report.html")
    verdict = json.loads((run / "diagnosis.json").read_text())["verdict"]
    summary = text.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    assert f'id="summary-label">{verdict["label"]}<' in summary
    assert f"train {verdict['train_error']:.4f}" in summary and f"val {verdict['val_error']:.4f}" in summary
    next_step = summary.split('id="next-step">', 1)[1].split("</p>", 1)[0]
    assert html.unescape(re.sub(r"<[^>]+>", "", next_step)) == "Next step: " + verdict["remedies"][0]
    last = (run / "history.csv").read_text().splitlines()
    row = dict(zip(last[0].split(","), last[-1].split(",")))
    header, *rows = page.tables["summary-metrics"]
    assert header[1] == f"last epoch ({row['epoch']})"
    shown = {r[0]: float(r[1]) for r in rows}
    assert set(shown) == {k[4:] for k in row if k.startswith("val_")}
    for name, value in shown.items():
        assert value == pytest.approx(float(row[f"val_{name}"]), rel=1e-3)


def test_the_caller_chooses_the_sections_and_their_order(run: Path, tmp_path: Path) -> None:
    from cnnkit.diagnose import report

    path = report.write_report(run, sections=("summary", "timing", "curves"), curve_metric="accuracy")
    text, _ = parse(path)
    assert sections_of(text) == nav_of(text) == ["summary", "timing", "curves"]
    line = left_out(text)
    assert "configuration" in line and "Grad-CAM" in line and "confusion matrix" in line
    assert "(they apply to classification)" in line
    with pytest.raises(CnnkitError, match="unknown report section.*'gradcams'"):
        report.write_report(run, sections=("summary", "gradcams"))
    report.write_report(run)  # the defaults again, for the tests after this one
    assert sections_of(parse(path)[0]) == list(report.DEFAULT_SECTIONS["multiclass"])


def test_the_curves_follow_the_named_metric(run: Path) -> None:
    from dataclasses import replace

    from cnnkit.diagnose import report

    info = report.load_run_info(run)
    assert "loss and accuracy per epoch" in report.curves_section(info)
    assert "loss per epoch (history.csv has no miou)" in report.curves_section(replace(info, curve_metric="miou"))
    report.curves_section(info)  # the picture as it was


def test_without_a_recorded_verdict_the_section_says_so_in_one_line(run: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from cnnkit.diagnose import report

    info = replace(report.load_run_info(run), path=tmp_path)  # no diagnosis.json there
    html = report.verdict_section(info)
    assert html.count("<p") == 1 and "no verdict was recorded" in html
    assert "no verdict recorded" in report.summary_section(info)


FORBIDDEN = ("cnnkit.api", "cnnkit.recipes", "cnnkit.experiments", "cnnkit.cli")


def test_diagnose_never_imports_api_recipes_experiments_or_cli() -> None:
    """The layering rule, checked on the source: not even an import inside a function."""
    import ast

    import cnnkit.diagnose

    for path in Path(cnnkit.diagnose.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if node.module == "cnnkit":
                    names += [f"cnnkit.{a.name}" for a in node.names]
            bad = [n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]
            assert not bad, f"{path.name}:{node.lineno} imports {bad}"


def test_class_counts_are_those_of_split_json(run: Path) -> None:
    _, page = parse(run / "report.html")
    record = json.loads((run / "split.json").read_text())
    header, *rows = page.tables["class-counts"]
    assert header == ["class", *record["splits"]]
    for split, column in zip(record["splits"], range(1, len(header))):
        expected = np.bincount(record["splits"][split]["labels"], minlength=len(record["classes"]))
        shown = {row[0]: int(row[column]) for row in rows}
        assert [shown[c] for c in record["classes"]] == expected.tolist()
        assert shown["total"] == record["splits"][split]["count"]


def test_timing_and_model_summary(run: Path) -> None:
    _, page = parse(run / "report.html")
    history = (run / "history.csv").read_text().splitlines()
    assert len(page.tables["timing"]) == len(history)  # header + one row per epoch
    summary = dict(row for row in page.tables["model-summary"][1:])
    assert summary["parameters"] == f"{api.inspect_model(run)['total_params']:,}"


def test_regression_run_leaves_out_the_class_sections(tmp_path: Path) -> None:
    run = train_tiny(tmp_path / "geo", "synthetic-shapes:n=40,size=32,target=geometry", augment="light")
    text, page = parse(run / "report.html")
    assert "class-counts" not in page.tables
    record = json.loads((run / "split.json").read_text())
    assert page.tables["split-counts"][1][1:] == [str(s["count"]) for s in record["splits"].values()]
    shown = sections_of(text)
    assert shown[0] == "summary" and "classification" not in shown and "gradcam" not in shown
    assert "curves" in shown and "alarm" in shown
    assert "Grad-CAM" in left_out(text) and "confusion matrix" in left_out(text)
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs)


def test_missing_run_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert cli.main(["report", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]


def test_a_failing_report_warns_and_keeps_the_run(tmp_path: Path, monkeypatch) -> None:
    def broken(run, **options):
        raise RuntimeError("no disk")

    monkeypatch.setattr("cnnkit.diagnose.report.write_report", broken)
    with pytest.warns(UserWarning, match="report.html not written.*no disk"):
        run = train_tiny(tmp_path / "kept", "synthetic-shapes:n=30,size=32")
    assert (run / "model.pt").is_file() and not (run / "report.html").exists()


def test_a_failing_section_is_shown_in_place_and_a_missing_helper_is_unavailable(run: Path) -> None:
    from cnnkit.diagnose import report

    info = report.load_run_info(run)

    def missing(_):
        raise ModuleNotFoundError("No module named 'cnnkit.diagnose.gradcam'", name="cnnkit.diagnose.gradcam")

    def failing(_):
        raise ValueError("bad <value>")

    assert report.UNAVAILABLE in report._render(info, "gradcam", "Grad-CAM", missing)
    with pytest.warns(UserWarning, match="timing section failed"):
        html = report._render(info, "timing", "Timing", failing)
    assert 'class="error"' in html and "bad &lt;value&gt;" in html


def test_the_alarm_epoch_is_shown_when_it_fired(run: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from cnnkit.diagnose import report

    info = replace(report.load_run_info(run), path=tmp_path)
    (tmp_path / "diagnosis.json").write_text(json.dumps(
        {"alarm": {"patience": 3, "stop": True, "fired_epoch": 7, "best_epoch": 4}}))
    html = report.alarm_section(info)
    assert "overfitting alarm at epoch 7" in html and "best epoch (lowest val loss) was 4" in html
    assert "did not fire" in report.alarm_section(replace(info, path=run))
