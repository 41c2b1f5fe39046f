"""audit.html in headless Chromium, as report.html is checked: it loads with no console error and no request
but the page itself, every section the audit measured is there with its link, and every picture decodes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.diagnose.test_report_browser import _browser

from cnnkit.audit.run import audit
from cnnkit.config import Config


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A folder of two classes of 64 px pictures with a copy across splits and an annotators CSV, audited."""
    _browser().quit()  # skip before any work when there is no browser
    root = tmp_path_factory.mktemp("page")
    rng = np.random.default_rng(0)
    rows = ["path,ann1,ann2,ann3"]
    for split, n in (("train", 16), ("val", 4), ("test", 4)):
        for c, cls in enumerate(("red", "blue")):
            (root / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 120, (64, 64, 3), dtype=np.uint8)
                pixels[..., 0 if c == 0 else 2] += 120
                path = root / "data" / split / cls / f"{i}.png"
                Image.fromarray(pixels).save(path)
                votes = [cls, cls, cls if i % 3 else ("blue" if cls == "red" else "red")]
                rows.append(",".join([str(path), *votes]))
    (root / "data" / "test" / "red" / "copy.png").write_bytes((root / "data" / "train" / "red" / "0.png").read_bytes())
    (root / "votes.csv").write_text("\n".join(rows) + "\n")
    cfg = Config()
    cfg.train.epochs = 1
    return audit(root / "data", cfg=cfg, out=root / "out", folds=2, method="scratch", annotators=root / "votes.csv")


def test_audit_html_in_headless_chromium(page: Path) -> None:
    data = json.loads((page / "audit.json").read_text())
    assert data["duplicates"][0]["crosses_splits"] and data["annotators"]["kappa_kind"] == "fleiss"
    driver = _browser()
    try:
        url = (page / "audit.html").resolve().as_uri()
        driver.get(url)
        assert driver.title.startswith("cnnkit audit")
        sections = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
        assert sections[0] == "summary"
        assert {"label_audit", "duplicates", "quality", "balance", "annotators", "effort"} <= set(sections)
        links = driver.execute_script("return Array.from(document.querySelectorAll('nav a')).map(a => a.hash)")
        assert links == [f"#{s}" for s in sections]
        images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert images and all(done and width > 0 for done, width in images)
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, f"console errors: {severe}"
        events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        requested = {ev["params"]["request"]["url"] for ev in events if ev["method"] == "Network.requestWillBeSent"}
        assert url in requested and not [u for u in requested if u != url and not u.startswith("data:")]
        leak = driver.find_element("id", "duplicates").text
        assert "copy.png" in leak and "yes" in leak
    finally:
        driver.quit()
