"""report.html in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, installed by
.ci/install-chromium from `make test`) driven by Selenium. No console errors, no request but the page itself,
every image decoded; a screenshot and a printed PDF are kept as artefacts (pytest's tmp dir and ./artifacts/)."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _browser():
    """A headless Chromium with the browser console and the network (performance) logs on, or skip."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: run .ci/install-chromium (as root with apt-get)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def _classification_report(out: Path) -> Path:
    from cnnkit import api
    from cnnkit.config import load_config

    cfg = load_config(overrides={"data": {"source": "synthetic-shapes:n=60,size=32", "augment": "light"},
                                 "model": {"name": "lenet5"}, "train": {"epochs": 1, "batch_size": 32},
                                 "out": str(out / "shapes")})
    return api.train(cfg).run_dir / "report.html"  # written by train


def _detection_report(out: Path) -> Path:
    import importlib.util

    from cnnkit.diagnose.report import write_report

    # tests/diagnose/test_detection.py's train_detector, loaded by path: test folders are no packages, and under
    # pytest's importlib mode a sibling test module is not importable by its name
    spec = importlib.util.spec_from_file_location("_detection_runs", Path(__file__).with_name("test_detection.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return write_report(module.train_detector(out / "boxes"))


REPORTS = {"classification": (_classification_report, 6), "detection": (_detection_report, 5)}


@pytest.fixture(scope="module", params=list(REPORTS))
def report(request, tmp_path_factory) -> tuple[str, Path, int]:
    """(kind, report.html, the fewest images it must show): a classifier's report as train writes it, and a
    detector's (summary, curves, precision/recall, drawn boxes, kernels...)."""
    _browser().quit()  # skip before training when there is no browser
    make, images = REPORTS[request.param]
    return request.param, make(tmp_path_factory.mktemp(f"browser-{request.param}")), images


def test_report_in_headless_chromium(report: tuple[str, Path, int], tmp_path_factory) -> None:
    kind, report, fewest = report
    driver = _browser()
    try:
        url = report.resolve().as_uri()
        driver.get(url)
        assert driver.execute_script("return document.readyState") == "complete"
        assert driver.title.startswith("cnnkit report")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 22)])")
        assert len(images) >= fewest
        sections = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
        assert sections[0] == "summary" and kind in sections
        links = driver.execute_script("return Array.from(document.querySelectorAll('nav a')).map(a => a.hash)")
        assert links == [f"#{s}" for s in sections]
        assert driver.find_element("id", "left-out").text.startswith("Not in this report:")
        bad = [alt for alt, complete, width, _ in images if not complete or width == 0]
        assert not bad, f"images not decoded: {bad}"
        assert all(src == "data:image/png;base64," for *_, src in images)

        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, f"console errors: {severe}"
        events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        requested = {ev["params"]["request"]["url"] for ev in events if ev["method"] == "Network.requestWillBeSent"}
        assert url in requested, "the performance log saw no request: the check below would prove nothing"
        assert not [u for u in requested if u != url and not u.startswith("data:")], f"requests: {requested}"
        failed = [ev["params"] for ev in events if ev["method"] == "Network.loadingFailed"]
        assert not failed, f"failed requests: {failed}"

        artifacts = tmp_path_factory.mktemp(f"artifacts-{kind}")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1200, min(int(height) + 100, 16000))  # the whole page in one screenshot
        assert driver.save_screenshot(str(artifacts / "report.png"))
        pdf = driver.execute_cdp_cmd("Page.printToPDF", {"printBackground": True})
        (artifacts / "report.pdf").write_bytes(base64.b64decode(pdf["data"]))
        assert (artifacts / "report.png").stat().st_size > 10_000
        assert (artifacts / "report.pdf").read_bytes().startswith(b"%PDF")
    finally:
        driver.quit()
    kept = REPO_ROOT / "artifacts"  # gitignored: the last run's pictures, for a human to look at
    kept.mkdir(exist_ok=True)
    for name in ("report.png", "report.pdf"):
        shutil.copy(artifacts / name, kept / (name if kind == "classification" else f"{kind}_{name}"))
