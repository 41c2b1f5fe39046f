"""The bias/variance verdict: decide() on numbers, the error per problem type, remedies ranked from the config,
the config section, and (acceptance) the verdict and the alarm on runs trained for real on small data."""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnkit import api
from cnnkit.cli.app import main
from cnnkit.config import Config, DiagnoseConfig, config_from_dict, load_config, save_config
from cnnkit.diagnose.verdict import LABELS, NOTE, decide, error_from_metrics, make_verdict, remedies, sampling_margin
from cnnkit.errors import CnnkitError

# ---------------------------------------------------------------- decide, errors, margins

def test_decide_gives_all_four_labels() -> None:
    assert decide(0.01, 0.02) == "good fit"
    assert decide(0.15, 0.16) == "high bias"
    assert decide(0.01, 0.11) == "high variance"
    assert decide(0.15, 0.30) == "high bias and high variance"
    assert set(LABELS) == {"good fit", "high bias", "high variance", "high bias and high variance"}


def test_thresholds_and_target_error_are_honoured() -> None:
    assert decide(0.08, 0.09) == "high bias"
    assert decide(0.08, 0.09, target_error=0.05) == "good fit"  # 3 points above a human-level 5 %
    assert decide(0.08, 0.09, bias_threshold=0.1) == "good fit"
    assert decide(0.01, 0.04) == "high variance"  # default variance threshold 0.02
    assert decide(0.01, 0.04, variance_threshold=0.05) == "good fit"
    assert decide(0.05, 0.05) == "good fit"  # strictly above the thresholds


def test_error_from_metrics_per_problem() -> None:
    assert error_from_metrics("multiclass", {"accuracy": 0.9}) == (pytest.approx(0.1), "1 - accuracy")
    assert error_from_metrics("binary", {"accuracy": 0.75})[0] == pytest.approx(0.25)
    assert error_from_metrics("multilabel", {"map": 0.8, "subset_accuracy": 0.1}) == (pytest.approx(0.2), "1 - mAP")
    assert error_from_metrics("detect", {"map": 0.4})[0] == pytest.approx(0.6)
    assert error_from_metrics("segment", {"miou": 0.7}) == (pytest.approx(0.3), "1 - mIoU")
    # regression: 1 − R² = MSE / Var(y), clipped at 0 only below
    y = np.array([0.0, 1.0, 2.0, 3.0])
    pred = y + np.array([0.5, -0.5, 0.5, -0.5])
    r2 = 1 - ((y - pred) ** 2).mean() / y.var()
    assert error_from_metrics("regression", {"r2": r2})[0] == pytest.approx(0.25 / 1.25)
    assert error_from_metrics("regression", {"r2": -0.5})[0] == pytest.approx(1.5)
    with pytest.raises(CnnkitError, match="needs its map"):
        error_from_metrics("multilabel", {"map": float("nan")})


def test_a_small_val_set_widens_the_variance_threshold() -> None:
    assert sampling_margin(0.1, 100) == pytest.approx(2 * (0.1 * 0.9 / 100) ** 0.5)
    train, val = {"accuracy": 1.0}, {"accuracy": 0.94}
    assert make_verdict("multiclass", train, val, val_count=2000).label == "high variance"
    small = make_verdict("multiclass", train, val, val_count=30)  # 2 SE of 6 % on 30 images is 8.7 %
    assert small.label == "good fit" and small.thresholds["variance"] == pytest.approx(sampling_margin(0.06, 30))


# ---------------------------------------------------------------- remedies ranked for the run

def _cfg(**sections) -> Config:
    cfg = Config()
    for name, values in sections.items():
        setattr(cfg, name, replace(getattr(cfg, name), **values))
    return cfg


def test_variance_remedies_follow_the_config() -> None:
    plain = remedies("high variance", _cfg())
    assert "--augment standard" in plain[0] and "--l2 1e-4" in plain[1] and "--dropout" in plain[1]
    assert any("--patience 5" in r for r in plain) and any("more training data" in r for r in plain)
    augmented = remedies("high variance", _cfg(data={"augment": "standard"}))
    assert "--l2 1e-4" in augmented[0] and "--augment strong" in augmented[-1]
    regularised = remedies("high variance", _cfg(data={"augment": "light"}, train={"l2": 1e-3, "patience": 3}))
    assert "more training data" in regularised[0]
    # the val loss bottomed out long before the end: early stopping comes first
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": abs(e - 3) + 1} for e in range(1, 11)]
    assert "lowest at epoch 3 of 10" in remedies("high variance", _cfg(), history)[0]


def test_bias_remedies_follow_the_config_and_history() -> None:
    falling = [{"epoch": e, "train_loss": 2.0 - 0.1 * e} for e in range(1, 8)]
    flat = [{"epoch": e, "train_loss": 1.0} for e in range(1, 8)]
    assert remedies("high bias", _cfg(train={"epochs": 7}), falling)[0].startswith("Train longer: --epochs 14")
    ranked = remedies("high bias", _cfg(train={"l2": 0.1}, model={"dropout": 0.5}), flat)
    assert ranked[0] == "Regularise less: lower or drop --l2, --dropout."
    assert "bigger model than lenet5" in ranked[1] and "levelled off" in ranked[-1]
    both = remedies("high bias and high variance", _cfg(), flat)
    assert "bigger model" in both[0] and any("--augment standard" in r for r in both)
    assert "cnnkit test" in remedies("good fit")[0]
    with pytest.raises(CnnkitError, match="unknown verdict"):
        remedies("overfit")


def test_diagnose_section_round_trips_through_config_yaml(tmp_path: Path) -> None:
    cfg = load_config(overrides={"diagnose": {"target_error": 0.02, "variance_threshold": 0.03, "alarm_stop": True},
                                 "train": {"log": ["tensorboard"]}})
    save_config(cfg, tmp_path / "config.yaml")
    back = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert back.diagnose == DiagnoseConfig(target_error=0.02, variance_threshold=0.03, alarm_stop=True)
    assert back.train.log == ["tensorboard"]
    with pytest.raises(CnnkitError, match="did you mean 'alarm_patience'"):
        load_config(overrides={"diagnose": {"alarm_patiance": 2}})
    with pytest.raises(CnnkitError, match="alarm_patience must be at least 1"):
        load_config(overrides={"diagnose": {"alarm_patience": 0}})


# ---------------------------------------------------------------- acceptance: real training on small data

def _train(tmp_path: Path, name: str, *flags: str, capsys) -> tuple[Path, str]:
    """`cnnkit train ... --out tmp/name`; the run folder (printed last) and the console output (stdout + stderr)."""
    torch.set_num_threads(1)
    code = main(["-q", "train", *flags, "--out", str(tmp_path / name)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip().splitlines()[-1] == str(tmp_path / name)  # the run folder stays the last line
    return tmp_path / name, captured.out + captured.err


def _evaluate_json(run: Path, capsys, *flags: str) -> dict:
    assert main(["-q", "evaluate", str(run), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_tiny_model_on_a_hard_task_has_high_bias(tmp_path: Path, capsys) -> None:
    """LeNet-5 shrunk by a heavy L2 penalty (λ = 0.01), on noisy shapes of random colour: it cannot fit them."""
    run, out = _train(tmp_path, "bias", "--data", "synthetic-shapes:n=600,background=noise,noise=0.3",
                      "--model", "lenet5", "--epochs", "5", "--l2", "0.01", capsys=capsys)
    assert "verdict: high bias" in out and "Regularise less: lower or drop --l2" in out and NOTE in out
    verdict = _evaluate_json(run, capsys)["verdict"]
    assert verdict["label"] == "high bias" and verdict["bias"] > 0.3
    assert verdict["remedies"][0].startswith(("Train longer", "Regularise less"))
    diagnosis = json.loads((run / "diagnosis.json").read_text())
    assert diagnosis["verdict"]["label"] == "high bias" and diagnosis["alarm"]["fired_epoch"] is None
    # a target error at the model's own level leaves no avoidable bias
    assert _evaluate_json(run, capsys, "--target-error", "0.9")["verdict"]["label"] != "high bias"


@pytest.fixture(scope="module")
def mnist_5_percent(data_root: Path, tmp_path_factory) -> Path:
    """A seeded 5 % of MNIST's 60,000 training digits (3,000) as PNG files and a path,label CSV."""
    from PIL import Image

    from cnnkit.data.builtin import mnist

    if not (data_root / "mnist").is_dir():
        pytest.skip(f"MNIST not found at {data_root / 'mnist'}")
    source = mnist(data_root / "mnist")
    root = tmp_path_factory.mktemp("mnist5")
    (root / "img").mkdir()
    picked = np.random.default_rng(0).choice(60_000, 3_000, replace=False)
    with (root / "mnist5.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for i in picked:
            Image.fromarray(source.arrays[i, 0].numpy()).save(root / "img" / f"{i}.png")
            writer.writerow([f"img/{i}.png", source.classes[source.labels[i]]])
    return root / "mnist5.csv"


def test_a_big_model_on_5_percent_of_mnist_has_high_variance_and_the_alarm_fires(
        mnist_5_percent: Path, tmp_path: Path, capsys) -> None:
    """LeNet-5 (61,706 weights) on 2,100 training digits, no regularisation, no augmentation, no early stopping,
    a constant learning rate: it memorises the training set, and the val loss climbs while the train loss falls.
    24 epochs: about 35 s on 2 CPU cores (3 minutes when the machine is shared)."""
    epochs = 24
    run, out = _train(tmp_path, "variance", "--data", str(mnist_5_percent), "--model", "lenet5", "--epochs",
                      str(epochs), "--batch-size", "32", "--lr", "1e-3", "--schedule", "constant", capsys=capsys)
    assert "verdict: high variance" in out
    alarm = json.loads((run / "diagnosis.json").read_text())["alarm"]
    assert alarm["fired_epoch"] is not None and alarm["best_epoch"] < alarm["fired_epoch"] < epochs
    assert f"warning: overfitting at epoch {alarm['fired_epoch']}" in out
    verdict = _evaluate_json(run, capsys)["verdict"]
    print(f"\nhigh variance: alarm {alarm}, verdict {verdict}")
    assert verdict["label"] == "high variance" and verdict["bias"] < 0.05
    assert verdict["variance"] > verdict["thresholds"]["variance"] >= 0.02
    assert verdict["remedies"][0].startswith(("Stop early", "Augment"))


def test_a_regularised_model_on_the_full_data_fits_well(tmp_path: Path, capsys) -> None:
    """The demo recipe: LeNet-5 on all the digits, with rotation and shift augmentation and a cosine schedule."""
    cfg = api.demo_config(out=str(tmp_path / "good"))
    cfg.train.epochs = 20
    torch.set_num_threads(1)
    result = api.train(cfg)
    assert result.verdict is not None and result.verdict.label == "good fit", result.verdict
    verdict = _evaluate_json(result.run_dir, capsys, "--split", "train")["verdict"]
    assert verdict["label"] == "good fit" and verdict["variance"] == pytest.approx(result.verdict.variance, abs=1e-9)
    assert {"label", "bias", "variance", "remedies", "train_error", "val_error", "note"} <= set(verdict)
    # the training error is that of the training images as they are (no rotation or shift), in eval mode
    from cnnkit.data.builtin import digits

    model, card = api.load_model(result.run_dir)
    record = json.loads((result.run_dir / "split.json").read_text())
    source, ids = digits(), [int(i[1:]) for i in record["splits"]["train"]["ids"]]
    x = torch.stack([card.transform()(source.arrays[i]) for i in ids])
    with torch.no_grad():
        wrong = (model.eval()(x).argmax(1) != torch.as_tensor(source.labels[ids])).float().mean().item()
    assert verdict["train_error"] == pytest.approx(wrong, abs=1e-9)
    print(f"\ngood fit: {verdict}")


def test_segmentation_remedies_suggest_segmentation_models() -> None:
    from cnnkit.config import Config
    from cnnkit.diagnose.verdict import remedies

    cfg = Config()
    cfg.task, cfg.model.name, cfg.data.augment = "segment", "unet", "light"
    advice = " ".join(remedies("high bias and high variance", cfg, []))
    assert "--model unet --model-option backbone=efficientnet_lite0.imagenet" in advice
    assert "resnet" not in advice and "--augment standard" in advice


# ---------------------------------------------------------------- detection and instance segmentation

def test_error_from_metrics_for_detection_and_instance() -> None:
    assert error_from_metrics("detect", {"map": 0.35, "map50": 0.7}) == (pytest.approx(0.65), "1 - mAP")
    # instance segmentation: the mask mAP, not the box mAP that the metrics also hold
    assert error_from_metrics("instance", {"map": 0.9, "mask_map": 0.25}) == (pytest.approx(0.75), "1 - mask mAP")
    with pytest.raises(CnnkitError, match="needs its mask_map"):
        error_from_metrics("instance", {"map": 0.5})
    with pytest.raises(CnnkitError, match="needs its map"):
        error_from_metrics("detect", {"miou": 0.5})


def _detector(task: str = "detect", name: str = "yolo", **options) -> Config:
    cfg = Config()
    cfg.task, cfg.model.name, cfg.model.options = task, name, dict(options)
    return cfg


def test_detection_verdict_from_map() -> None:
    v = make_verdict("detect", {"map": 0.9}, {"map": 0.5}, val_count=100)
    # train error 0.1 is also above the default bias threshold 0.05: the variance (0.4) is what dominates
    assert "high variance" in v.label and v.metric == "1 - mAP"
    assert make_verdict("detect", {"map": 0.9}, {"map": 0.5}, val_count=100, bias_threshold=0.15).label == \
        "high variance"
    assert v.train_error == pytest.approx(0.1) and v.val_error == pytest.approx(0.5)
    assert v.variance == pytest.approx(0.4)
    assert make_verdict("detect", {"map": 0.3}, {"map": 0.28}, val_count=100).label == "high bias"
    assert make_verdict("instance", {"map": 0.1, "mask_map": 0.97}, {"mask_map": 0.96}).label == "good fit"


def test_detection_remedies_name_detection_things() -> None:
    bias = remedies("high bias", _detector(), [])
    assert bias[0].startswith("Train longer: --epochs")
    text = " ".join(bias)
    assert "backbone=resnet18.imagenet" in text  # pretrained: the detector started from scratch
    assert "backbone=resnet50" in text and "--model faster_rcnn" in text
    assert "--l2" not in text and "--dropout" not in text and "--model resnet" not in text
    variance = " ".join(remedies("high variance", _detector()))
    assert "--augment standard" in variance and "IoU crops" in variance and "backbone=resnet18.imagenet" in variance
    assert "--data-curve" not in variance and "annotated training images" in variance
    # a pretrained resnet50 backbone: no pretrained or larger-backbone advice left
    done = " ".join(remedies("high bias", _detector("detect", "faster_rcnn", backbone="resnet50.imagenet")))
    assert "pretrained" not in done and "larger backbone" not in done
    assert "--model mask_rcnn" in " ".join(remedies("high bias", _detector("instance", "yolo"), []))


def test_run_verdict_takes_its_metrics_from_the_caller(tmp_path: Path) -> None:
    """run_verdict measures nothing itself: the caller passes the metrics or a measure(split) function."""
    from cnnkit.diagnose.verdict import run_verdict
    from cnnkit.models.factory import create_model
    from cnnkit.runs.card import ModelCard
    from cnnkit.runs.folder import save_model

    card = ModelCard("lenet5", "multiclass", ["a", "b"], [1, 32, 32], [0.0], [1.0])
    save_model(tmp_path / "model.pt", create_model("lenet5", num_classes=2, in_channels=1), card)
    save_config(Config(), tmp_path / "config.yaml")
    asked = []

    def measure(split: str) -> dict:
        asked.append(split)
        return {"accuracy": 0.99 if split == "train" else 0.7, "count": 500}

    v = run_verdict(tmp_path, measure=measure)
    assert asked == ["train", "val"] and v.label == "high variance"
    v = run_verdict(tmp_path, train_metrics={"accuracy": 0.6}, val_metrics={"accuracy": 0.59, "count": 500})
    assert v.label == "high bias"
    assert run_verdict(tmp_path, train_metrics={"accuracy": 0.6}, measure=measure).val_error == pytest.approx(0.3)
    with pytest.raises(CnnkitError, match="measure"):
        run_verdict(tmp_path)
