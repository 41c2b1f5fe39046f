"""`cnnkit audit DATA|RUN` end to end: the contract's files and keys, flipped labels ranked first, a copy of a
training image in the test split reported as a leak, a run's own split reused, and one-line errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import run_cli

from cnnkit.audit.run import RELABEL_HEADER, audit, open_target
from cnnkit.config import Config
from cnnkit.errors import CnnkitError


def _flipped_digits_cfg() -> Config:
    cfg = Config()
    cfg.train.epochs, cfg.train.optimizer, cfg.train.lr = 2, "adam", 0.003
    return cfg


@pytest.fixture(scope="module")
def digits_audit(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audit") / "digits"
    return audit("digits", cfg=_flipped_digits_cfg(), out=out, folds=3)


def test_the_contract_files_and_keys(digits_audit: Path) -> None:
    with (digits_audit / "relabel.csv").open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == RELABEL_HEADER
    scores = [float(r[3]) for r in rows[1:]]
    data = json.loads((digits_audit / "audit.json").read_text())
    for key in ("label_issues", "duplicates", "outliers"):
        assert key in data
    flagged = len(data["label_issues"])
    assert 0 < flagged < len(rows) - 1
    # flagged first, each block most suspicious first
    assert scores[:flagged] == sorted(scores[:flagged], reverse=True)
    assert scores[flagged:] == sorted(scores[flagged:], reverse=True)
    # the pool audited is train + val: the locked test split is never in relabel.csv
    assert len(rows) - 1 == data["counts"]["train"] + data["counts"]["val"]
    assert (digits_audit / "audit.html").read_text().startswith("<!DOCTYPE html>")
    assert data["effort"]["items"] == 1797 and data["effort"]["hours"] == pytest.approx(1797 * 6 / 3600)


def _folder(root: Path, rng: np.random.Generator) -> dict[str, list[Path]]:
    """train/val/test folders of two classes of random 48×48 textures (distinct pictures)."""
    made: dict[str, list[Path]] = {}
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                path = folder / f"{split}{cls}{i}.png"
                Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
                made.setdefault(split, []).append(path)
    return made


def test_a_training_image_copied_into_test_is_a_leak(tmp_path: Path) -> None:
    made = _folder(tmp_path / "data", np.random.default_rng(0))
    original = made["train"][3]
    copy = tmp_path / "data" / "test" / "a" / "copy.png"
    copy.write_bytes(original.read_bytes())
    cfg = _flipped_digits_cfg()
    cfg.model.name, cfg.train.epochs = "lenet5", 1
    out = audit(tmp_path / "data", cfg=cfg, out=tmp_path / "out", folds=2, method="scratch")
    groups = json.loads((out / "audit.json").read_text())["duplicates"]
    assert len(groups) == 1, groups
    assert groups[0]["crosses_splits"] and sorted(groups[0]["paths"]) == sorted([str(original), str(copy)])


def test_audit_of_a_run_reuses_its_split(tmp_path: Path) -> None:
    from cnnkit import api

    cfg = _flipped_digits_cfg()
    cfg.out, cfg.train.epochs, cfg.train.seed = str(tmp_path / "run"), 1, 7
    api.train(cfg)
    target = open_target(tmp_path / "run", None, {"train": {"epochs": 3}})
    record = json.loads((tmp_path / "run" / "split.json").read_text())
    assert [target.source.ids[i] for i in target.split["test"]] == record["splits"]["test"]["ids"]
    assert target.cfg.train.seed == 7 and target.cfg.train.epochs == 3  # the run's config, the flags on top
    with pytest.raises(CnnkitError, match="run folder"):
        open_target(tmp_path / "run", Config())


def test_cli_prints_the_folder_last_and_refuses_bad_input_in_one_line(capsys, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "audit", "digits", "--folds", "1", "--out", str(tmp_path / "x"))
    assert code == 2 and err.count("\n") == 1 and "--folds" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "audit", "synthetic-shapes:count=2,n=8,size=32", "--task", "detect",
                             "--method", "probe", "--out", str(tmp_path / "z"))
    assert code == 2 and "--method is not supported for a detection audit" in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "audit", str(tmp_path / "nowhere"))
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1
    code, out, err = run_cli(capsys, "audit", "digits", "--annotators", str(tmp_path / "none.csv"), "--epochs", "1",
                             "--folds", "2", "--out", str(tmp_path / "y"))
    assert code == 2 and "none.csv" in err and err.count("\n") == 1


@pytest.mark.parametrize("task, data, model, key", [
    pytest.param("detect", "synthetic-shapes:count=2,n=16,size=32", "yolo", "boxes", marks=pytest.mark.slow),
    ("segment", "synthetic-plants:size=32,count=16", "unet", "masks"),
])
def test_detection_and_segmentation_sets_are_audited(tmp_path: Path, task: str, data: str, model: str,
                                                     key: str) -> None:
    from cnnkit.config import load_config

    options = {"base": 8} if model == "unet" else {}
    cfg = load_config(overrides={"task": task, "model": {"name": model, "options": options}, "train": {"epochs": 1}})
    out = audit(data, cfg=cfg, out=tmp_path / task, folds=2)
    result = json.loads((out / "audit.json").read_text())
    with (out / "relabel.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result[key]) and all(0 <= float(r["score"]) <= 1 for r in rows)
    assert all(r["path"] for r in rows)  # generated images are named by their index
    assert result["effort"]["items"] > 0 and "duplicates" in result
    assert (out / "audit.html").read_text().count(f'id="{key}"') == 1
