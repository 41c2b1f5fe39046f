"""End to end through cnnkit.api on the real digits: train, evaluate, test (locked), predict, resume."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import api
from cnnkit.config import load_config
from cnnkit.data.builtin import digits
from cnnkit.errors import CnnkitError


def _cfg(out: Path, epochs: int = 3, **train) -> object:
    return load_config(overrides={"data": {"source": "digits"}, "model": {"name": "lenet5"},
                                  "train": {"epochs": epochs, "batch_size": 64, **train}, "out": str(out)})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return api.train(_cfg(tmp_path_factory.mktemp("runs") / "digits", epochs=4)).run_dir


def test_run_folder_layout_and_split(run: Path) -> None:
    for name in ("config.yaml", "split.json", "model.pt", "history.csv", "checkpoints/last.pt",
                 "checkpoints/best.pt", "plots/learning_curves.png"):
        assert (run / name).is_file(), name
    record = json.loads((run / "split.json").read_text())
    counts = {k: v["count"] for k, v in record["splits"].items()}
    assert sum(counts.values()) == 1797
    assert counts["test"] == pytest.approx(0.15 * 1797, abs=2) and counts["val"] == pytest.approx(0.15 * 1797, abs=2)
    ids = [set(v["ids"]) for v in record["splits"].values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def test_model_pt_carries_its_card_and_loads_weights_only(run: Path) -> None:
    saved = torch.load(run / "model.pt", weights_only=True)
    card = saved["card"]
    assert card["architecture"] == "lenet5" and card["task"] == "multiclass"
    assert card["classes"] == [str(i) for i in range(10)] and card["input_size"] == [1, 32, 32]
    # mean of the training split at 32×32 equals the mean computed by hand from the split's ids
    record = json.loads((run / "split.json").read_text())
    train_ids = [int(i[1:]) for i in record["splits"]["train"]["ids"]]
    src = digits()
    from torchvision.transforms.v2 import functional as F

    up = F.resize(src.arrays[train_ids], [32, 32], antialias=True).double() / 255
    assert card["mean"][0] == pytest.approx(up.mean().item(), abs=1e-5)


def test_evaluate_matches_a_manual_pass_over_the_val_split(run: Path) -> None:
    metrics = api.evaluate(run, split="val")
    model, card = api.load_model(run)
    record = json.loads((run / "split.json").read_text())
    src = digits()
    idx = [int(i[1:]) for i in record["splits"]["val"]["ids"]]
    x = torch.stack([card.transform()(src.arrays[i]) for i in idx])
    y = torch.as_tensor(src.labels[idx])
    with torch.no_grad():
        logits = model(x)
    assert metrics["count"] == len(idx)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item(), abs=1e-6)
    assert metrics["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-4)


def test_test_split_is_locked_and_every_use_recorded(run: Path) -> None:
    with pytest.raises(CnnkitError, match="locked"):
        api.evaluate(run, split="test")
    log = run / "test_log.jsonl"
    log.unlink(missing_ok=True)
    first = api.test(run)
    assert first["previous_uses"] == 0 and first["split"] == "test"
    with pytest.warns(UserWarning, match="used 1 time"):
        second = api.test(run)
    assert second["accuracy"] == first["accuracy"]
    assert len(log.read_text().splitlines()) == 2


def test_predict_needs_only_model_pt_even_after_a_move(run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(run / "model.pt", moved / "model.pt")
    src = digits()
    paths = []
    for i in range(10):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(src.arrays[i, 0].numpy()).save(path)
        paths.append(path)
    results = api.predict(moved, paths, top_k=3)
    assert [r["path"] for r in results] == [str(p) for p in paths]
    for r in results:
        probs = [p["probability"] for p in r["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    # the PNG round trip is lossless: predictions equal the model's on the in-memory digits
    model, card = api.load_model(run)
    with torch.no_grad():
        expected = model(torch.stack([card.transform()(src.arrays[i]) for i in range(10)])).argmax(1)
    assert [r["predictions"][0]["label"] for r in results] == [str(int(c)) for c in expected]


@pytest.mark.slow  # the same in tests/engine/test_trainer.py and tests/recipes/test_runner_faults.py
def test_resume_after_interrupt_equals_one_straight_run(tmp_path: Path, monkeypatch) -> None:
    straight = api.train(_cfg(tmp_path / "a", epochs=4))
    from cnnkit.engine import callbacks

    original = callbacks.CSVLogger.on_epoch_end

    def stop_after_2(self, trainer, logs):
        original(self, trainer, logs)
        if logs["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.CSVLogger, "on_epoch_end", stop_after_2)
    first = api.train(_cfg(tmp_path / "b", epochs=4))
    assert first.interrupted and len(first.history) == 2
    monkeypatch.setattr(callbacks.CSVLogger, "on_epoch_end", original)
    resumed = api.train(resume=tmp_path / "b")
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    a = torch.load(straight.run_dir / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed.run_dir / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_demo_reaches_the_accuracy_target(tmp_path: Path) -> None:
    """The README's `make demo`: LeNet-5 on digits, at least 97.5% on the locked test split."""
    result = api.train(api.demo_config(out=str(tmp_path / "demo")))
    metrics = api.test(result.run_dir)
    assert metrics["accuracy"] >= 0.975


def test_class_weight_balanced_follows_sklearn(tmp_path: Path) -> None:
    from sklearn.utils.class_weight import compute_class_weight

    from cnnkit.recipes.classifier import _class_weight

    labels = np.array([0, 0, 0, 1, 2, 2])
    cfg = _cfg(tmp_path, class_weight="balanced")
    ours = _class_weight(cfg, labels, ["a", "b", "c"]).numpy()
    theirs = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_early_stopping_monitor_and_min_delta_from_the_cli(tmp_path: Path) -> None:
    """min_delta 1.0 on val_accuracy can never be beaten after epoch 1: with patience 1 the run stops after
    epoch 2 of 5; with min_delta 0 and patience 5 it runs all 5."""
    from cnnkit.cli.app import main

    def epochs_run(*flags: str) -> int:
        out = tmp_path / "-".join(flags)
        assert main(["-q", "train", "--data", "synthetic-shapes:n=60", "--epochs", "5", "--batch-size", "16",
                     "--out", str(out), *flags]) == 0
        return len(list(csv.DictReader((out / "history.csv").open())))

    assert epochs_run("--patience", "1", "--monitor", "val_accuracy", "--min-delta", "1.0") == 2
    assert epochs_run("--patience", "5", "--monitor", "val_accuracy") == 5
