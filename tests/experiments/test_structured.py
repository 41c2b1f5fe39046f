"""`cnnkit prune RUN --structured`: a smaller model per sparsity saved as a run folder that evaluate and predict
reopen (the card rebuilds the shapes), the table's numbers, and runs it cannot prune refused in one line."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit import api
from cnnkit.config import load_config
from cnnkit.errors import CnnkitError
from cnnkit.experiments.structured import format_structured, latencies_ms, structured_prune_run
from cnnkit.runs.folder import load_model, save_model


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("structured") / "run"
    cfg = load_config(overrides={"data": {"source": "synthetic-shapes:n=30"}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 1, "batch_size": 32}, "out": str(out)})
    return api.train(cfg).run_dir


def test_a_pruned_run_folder_reopens_smaller_and_predicts(run: Path, tmp_path: Path) -> None:
    rows = structured_prune_run(run, [0.5], finetune_epochs=1, out=tmp_path / "p")
    base, pruned = rows
    assert base["run"] == str(run) and base["speedup"] == 1.0 and pruned["run"] == str(tmp_path / "p" / "s50")
    assert pruned["params"] < base["params"] and pruned["flops"] < base["flops"] and pruned["latency_ms"] > 0
    model, card = load_model(pruned["run"])
    assert card.pruned == {"c1": 3, "c3": 8, "c5": 60}
    assert sum(p.numel() for p in model.parameters()) == pruned["params"]
    assert api.evaluate(pruned["run"])["accuracy"] == pytest.approx(pruned["val_accuracy"])
    report = json.loads((tmp_path / "p" / "prune.json").read_text())
    assert report["criterion"] == "l1" and len(report["rows"]) == 2
    assert format_structured(rows).splitlines()[-1] == str(tmp_path / "p")


def test_a_pruned_run_predicts(run: Path, tmp_path: Path) -> None:
    from PIL import Image

    rows = structured_prune_run(run, [0.25], out=tmp_path / "p")
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    result = api.predict(rows[-1]["run"], [str(image)])
    assert len(result) == 1 and result[0]["predictions"]


def test_a_detection_run_is_refused_in_one_line(run: Path, tmp_path: Path) -> None:
    model, card = load_model(run)
    fake = tmp_path / "det"
    fake.mkdir()
    save_model(fake / "model.pt", model, replace(card, task="detect"))
    with pytest.raises(CnnkitError, match="structured pruning takes classification runs; .* is a detect run") as e:
        structured_prune_run(fake, [0.5])
    assert "\n" not in str(e.value)


def test_latencies_are_medians_in_milliseconds() -> None:
    small, big = nn.Conv2d(3, 4, 3), nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(20)])
    ms = latencies_ms([small, big], [1, 3, 32, 32], warmup=2, repeats=5)
    assert len(ms) == 2 and all(m > 0 for m in ms) and ms[1] > ms[0]
    assert torch.is_inference_mode_enabled() is False


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("structured_resnet") / "run"
    cfg = load_config(overrides={"data": {"source": "synthetic-shapes:n=30", "image_size": 16},
                                 "model": {"name": "resnet20"}, "train": {"epochs": 1, "batch_size": 32},
                                 "out": str(out)})
    return api.train(cfg).run_dir


def test_a_resnet_run_prunes_its_residual_widths_and_reopens(resnet_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    rows = structured_prune_run(resnet_run, [0.5], finetune_epochs=1, out=tmp_path / "p")
    model, card = load_model(rows[-1]["run"])
    assert [len(k) for k in card.pruned["streams"]] == [8, 16, 32] and card.pruned["layer3.2.conv1"] == 32
    assert model.fc.in_features == 32 and sum(p.numel() for p in model.parameters()) == rows[-1]["params"]
    assert rows[-1]["flops"] < rows[0]["flops"] / 3
    assert api.evaluate(rows[-1]["run"])["accuracy"] == pytest.approx(rows[-1]["val_accuracy"])
    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    assert api.predict(rows[-1]["run"], [str(image)])[0]["predictions"]


def test_inner_only_pruning_and_its_refusals(resnet_run: Path, run: Path, tmp_path: Path) -> None:
    rows = structured_prune_run(resnet_run, [0.5], residual=False, out=tmp_path / "p")
    model, card = load_model(rows[-1]["run"])  # an old-style card entry: {conv path: filters kept}
    assert "streams" not in card.pruned and model.fc.in_features == 64 and model.layer1[0].conv1.out_channels == 8
    with pytest.raises(CnnkitError, match=r"^residual widths are pruned in CIFAR ResNets .* only; LeNet5 keeps them"):
        structured_prune_run(run, [0.5], residual=True, out=tmp_path / "q")
    with pytest.raises(CnnkitError, match=r"^residual= \(--residual/--no-residual\) applies to structured pruning"):
        api.prune(run, [0.5], residual=False)
