"""Transfer strategies on real training runs: frozen means frozen, discriminative lrs, gradual unfreezing,
partial networks, the linear probe written into the model, the auto advisor and the errors."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.cli.app import main
from cnnkit.engine import optimizers
from cnnkit.engine.callbacks import Callback
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.engine.transfer import FINE_TUNE_LR, LAYER_DECAY, STRATEGIES, _make_probe, apply_strategy, stages, truncate
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec
from cnnkit.runs.folder import load_model
from cnnkit.tasks import make_task
from cnnkit.tasks.base import Batch

DATA = "synthetic-shapes:n=90,size=32"


def _batches(n: int = 4, size: int = 32, classes: int = 3, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [Batch(torch.randn(8, 3, size, size, generator=g), torch.randint(0, classes, (8,), generator=g))
            for _ in range(n)]


def test_frozen_means_frozen_after_a_real_run(tmp_path: Path) -> None:
    """feature-extractor on resnet18 from a weight file: after training, every backbone parameter and every BN
    running_mean / running_var / num_batches_tracked of the saved model equals the file's, bit for bit."""
    start, config = _weight_file(tmp_path, "resnet18", seed=1)
    out = tmp_path / "fe"
    assert main(["-q", "train", "--data", DATA, "--model", "resnet18", "--image-size", "32", "--epochs", "2",
                 "--batch-size", "16", "--strategy", "feature-extractor", "--out", str(out), "--config", config]) == 0
    trained, _ = load_model(out)
    before, after = start.state_dict(), trained.state_dict()
    backbone = [k for k in before if not k.startswith("fc.")]
    assert any(k.endswith("running_mean") for k in backbone)
    assert any(k.endswith("num_batches_tracked") for k in backbone)
    for k in backbone:
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def _weight_file(tmp_path: Path, name: str, seed: int) -> tuple[torch.nn.Module, str]:
    """A freshly seeded `name` (3 classes), its state dict saved as a file, and a --config naming that file."""
    seed_everything(seed)
    start = create_model(name, num_classes=3)
    weights = tmp_path / "start.pt"
    torch.save(start.state_dict(), weights)
    return start, str(_config(tmp_path, weights))


def _config(tmp_path: Path, weights: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(f"model:\n  weights: {weights}\n")
    return path


def test_feature_extractor_head_trains_and_bn_stays_in_eval() -> None:
    """In a Trainer: the frozen tensors (parameters and BN buffers) do not move; the new head does."""
    seed_everything(0)
    model = create_model("resnet20", num_classes=3)
    plan = apply_strategy(model, get_spec("resnet20"), "feature-extractor")
    snapshot = {k: v.clone() for k, v in plan.model.state_dict().items()}
    trainer = Trainer(make_task("multiclass", plan.model), optimizers.get("adam", plan.param_groups, lr=1e-2),
                      epochs=2, device="cpu")
    trainer.fit(_batches())
    state = plan.model.state_dict()
    assert all(torch.equal(snapshot[k], state[k]) for k in state if not k.startswith("fc.")), "backbone moved"
    assert not torch.equal(snapshot["fc.weight"], state["fc.weight"])
    assert plan.trainable == sum(p.numel() for p in plan.model.fc.parameters())


def test_head_only_replaces_only_the_last_fc_layer() -> None:
    model = create_model("lenet5", num_classes=4)
    f6 = model.f6.weight.clone()
    plan = apply_strategy(model, get_spec("lenet5"), "head-only")
    trainable = [n for n, p in plan.model.named_parameters() if p.requires_grad]
    assert trainable == ["output.weight", "output.bias"]
    assert torch.equal(model.f6.weight, f6)  # kept as loaded
    fe = apply_strategy(create_model("lenet5", num_classes=4), get_spec("lenet5"), "feature-extractor")
    assert {n for n, p in fe.model.named_parameters() if p.requires_grad} == {
        "f6.weight", "f6.bias", "output.weight", "output.bias"}  # the whole classifier is new


def test_fine_tune_param_groups_have_the_documented_lrs() -> None:
    model = create_model("resnet18", num_classes=3)
    plan = apply_strategy(model, get_spec("resnet18"), "fine-tune")
    optimizer = optimizers.get("adam", plan.param_groups)
    lrs = [g["lr"] for g in optimizer.param_groups]
    n = len(stages(model, get_spec("resnet18")))  # stem, layer1..layer4
    decay = 0.01 ** (1 / n)  # LAYER_DECAY None: the first stage at lr/100, geometric up to the head
    assert LAYER_DECAY is None and lrs[0] == pytest.approx(FINE_TUNE_LR / 100)
    assert n == 5 and lrs == pytest.approx([FINE_TUNE_LR * decay ** (n - i) for i in range(n)] + [FINE_TUNE_LR])
    assert [g["name"] for g in optimizer.param_groups][-1] == "head"
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert all(p.requires_grad for p in model.parameters())


def test_fine_tune_run_logs_the_first_groups_lr(tmp_path: Path) -> None:
    out = tmp_path / "ft"
    assert main(["-q", "train", "--data", DATA, "--model", "resnet20", "--epochs", "1", "--batch-size", "32",
                 "--schedule", "constant", "--lr", "1e-3", "--strategy", "fine-tune", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert float(rows[0]["lr"]) == pytest.approx(1e-3 / 100)  # the stem, first of the stages: lr/100


def test_fine_tune_keeps_bn_statistics_and_trains_gamma_beta(tmp_path: Path) -> None:
    """fine-tune: after a real run from a weight file every BN running_mean/var/num_batches_tracked is the file's,
    while every weight (convolutions, γ and β included) has moved; the head started from a probe (auto)."""
    start, config = _weight_file(tmp_path, "resnet20", seed=2)
    out = tmp_path / "ft"
    assert main(["-q", "train", "--data", DATA, "--model", "resnet20", "--epochs", "1", "--batch-size", "16",
                 "--lr", "1e-2", "--strategy", "fine-tune", "--out", str(out), "--config", config]) == 0
    before, after = start.state_dict(), load_model(out)[0].state_dict()
    statistics = [k for k in before if k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")]
    assert len(statistics) == 3 * 19  # resnet20: 19 BN layers
    assert all(torch.equal(before[k], after[k]) for k in statistics)
    gammas = [k for k in before if k.endswith(".weight") and k.replace(".weight", ".running_mean") in before]
    assert gammas and all(not torch.equal(before[k], after[k]) for k in gammas)
    assert all(not torch.equal(before[k], after[k]) for k in before if "conv" in k)


def test_head_init_auto_probes_only_a_pretrained_fine_tune(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="cnnkit")
    weights = tmp_path / "w.pt"
    torch.save(create_model("resnet20", num_classes=3).state_dict(), weights)
    base = ["-q", "train", "--data", DATA, "--model", "resnet20", "--epochs", "1"]
    runs = {"pretrained": ["--strategy", "fine-tune", "--config", str(_config(tmp_path, weights))],
            "random weights": ["--strategy", "fine-tune"],
            "feature-extractor": ["--strategy", "feature-extractor", "--config", str(_config(tmp_path, weights))]}
    probed = {}
    for name, extra in runs.items():
        caplog.clear()
        assert main(base + extra + ["--out", str(tmp_path / name)]) == 0
        probed[name] = any(r.getMessage().startswith("head-init probe") for r in caplog.records)
    assert probed == {"pretrained": True, "random weights": False, "feature-extractor": False}


class _Moved(Callback):
    """Which parameters changed during each epoch."""

    def __init__(self) -> None:
        self.moved: list[set[str]] = []

    def on_epoch_start(self, trainer) -> None:
        self.before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    def on_epoch_end(self, trainer, logs) -> None:
        self.moved.append({n.split(".")[0] for n, p in trainer.model.named_parameters()
                           if not torch.equal(self.before[n], p)})


def test_gradual_unfreezing_unfreezes_one_stage_per_epoch() -> None:
    seed_everything(0)
    model = create_model("resnet20", num_classes=3)  # stages: stem (conv1, bn1), layer1, layer2, layer3; head fc
    plan = apply_strategy(model, get_spec("resnet20"), "fine-tune", lr=1e-2, unfreeze_every=1)
    moved = _Moved()
    # the unfreezing callback goes first, as in pipeline.build_trainer's list the recorder sees its choice
    trainer = Trainer(make_task("multiclass", plan.model), optimizers.get("adam", plan.param_groups),
                      epochs=4, callbacks=[*plan.callbacks, moved], device="cpu")
    trainer.fit(_batches())
    assert moved.moved == [{"fc"}, {"fc", "layer3"}, {"fc", "layer3", "layer2"}, {"fc", "layer3", "layer2", "layer1"}]


def test_partial_keeps_the_first_k_stages(tmp_path: Path) -> None:
    spec = get_spec("resnet18")
    net = truncate(create_model("resnet18", num_classes=5), spec, 2, (3, 32, 32))
    assert list(net.body.layers) == ["conv1", "bn1", "act", "maxpool", "layer1"]
    assert net.fc.in_features == 64 and net(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    lenet = truncate(create_model("lenet5", num_classes=4), get_spec("lenet5"), 4, (1, 32, 32))
    assert lenet(torch.randn(3, 1, 32, 32)).shape == (3, 4) and lenet.fc.in_features == 84
    out = tmp_path / "partial"
    assert main(["-q", "train", "--data", DATA, "--model", "resnet18", "--image-size", "32", "--epochs", "1",
                 "--strategy", "partial", "--keep-stages", "3", "--out", str(out)]) == 0
    model, card = load_model(out)  # rebuilt from the card alone
    assert card.transfer == {"strategy": "partial", "keep_stages": 3}
    assert "layer3" not in dict(model.named_modules()) and list(model.body.layers)[-1] == "layer2"
    assert main(["evaluate", str(out), "--json"]) == 0


def test_keep_stages_out_of_range_is_one_line(tmp_path: Path, capsys) -> None:
    code = main(["-q", "train", "--data", DATA, "--model", "resnet18", "--strategy", "partial", "--keep-stages", "9",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "between 1 and 5" in err
    assert not (tmp_path / "x").exists()
    assert main(["-q", "train", "--data", DATA, "--strategy", "fine-tune", "--keep-stages", "2"]) == 2
    assert "goes with --strategy partial" in capsys.readouterr().err


def test_unknown_strategy_says_did_you_mean(capsys) -> None:
    assert main(["-q", "train", "--data", DATA, "--strategy", "fine-tun"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'fine-tune'" in err
    with pytest.raises(CnnkitError, match="did you mean"):
        apply_strategy(create_model("lenet5"), get_spec("lenet5"), "feature_extractor")


@pytest.mark.parametrize("data,probe", [(DATA, "logistic"), ("binary", "logistic"), (DATA, "svm")])
def test_linear_probe_is_written_into_the_model(tmp_path: Path, capsys, make_image_folder, data: str,
                                                probe: str) -> None:
    """The probe's predict_proba on the cached val features is the saved model's output; evaluate agrees."""
    if data == "binary":  # one sigmoid output: coef_ (1, F) maps onto fc directly
        data = str(make_image_folder({"cat": 15, "dog": 15}, size=32))
    out = tmp_path / "probe"
    assert main(["-q", "train", "--data", data, "--model", "resnet20", "--strategy", "linear-probe",
                 "--probe", probe, "--out", str(out)]) == 0
    cache = np.load(out / "features.npz")
    pipe = _make_probe(probe).fit(cache["train_x"], cache["train_y"].astype(int))  # deterministic: the same fit
    model, card = load_model(out)
    with torch.no_grad():
        logits = model.fc(torch.from_numpy(cache["val_x"]).float()).double()  # (n, K) or (n, 1)
    if probe == "logistic":
        probs = torch.sigmoid(logits[:, 0]).numpy() if card.outputs == 1 else logits.softmax(1).numpy()
        expected = pipe.predict_proba(cache["val_x"])
        assert np.abs(probs - (expected[:, 1] if card.outputs == 1 else expected)).max() < 1e-5
    else:
        assert np.allclose(logits.numpy().squeeze(1) if card.outputs == 1 else logits.numpy(),
                           pipe.decision_function(cache["val_x"]), atol=1e-4)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(pipe.score(cache["val_x"], cache["val_y"].astype(int)))


def test_auto_prints_its_reasoning_and_picks(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="cnnkit")
    out = tmp_path / "auto"
    assert main(["-q", "train", "--data", DATA, "--model", "resnet20", "--epochs", "1", "--strategy", "auto",
                 "--out", str(out)]) == 0
    reasoning = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto:")]
    assert len(reasoning) == 1 and "small" in reasoning[0] and "similarity" in reasoning[0]
    chosen = (out / "config.yaml").read_text().split("strategy: ")[1].split()[0]
    assert chosen in STRATEGIES and chosen != "auto" and chosen in reasoning[0]


def test_head_init_probe_starts_the_head_as_the_linear_probe(tmp_path: Path, capsys) -> None:
    """LP-FT: with --head-init probe and a learning rate too small to move anything, the trained head is the
    head a linear-probe run of the same seed writes (same backbone init → same features → same fit)."""
    probe, lpft = tmp_path / "probe", tmp_path / "lpft"
    base = ["-q", "train", "--data", DATA, "--model", "resnet20", "--seed", "3"]
    assert main(base + ["--strategy", "linear-probe", "--out", str(probe)]) == 0
    assert main(base + ["--strategy", "head-only", "--head-init", "probe", "--optimizer", "sgd", "--lr", "1e-9",
                        "--epochs", "1", "--out", str(lpft)]) == 0
    (a, _), (b, _) = load_model(probe), load_model(lpft)
    assert torch.allclose(a.fc.weight, b.fc.weight, atol=1e-5) and torch.allclose(a.fc.bias, b.fc.bias, atol=1e-5)
    random_init = create_model("resnet20", num_classes=a.fc.out_features).fc.weight
    assert not torch.allclose(random_init, b.fc.weight, atol=1e-3)
    capsys.readouterr()
    accuracies = []
    for run in (probe, lpft):
        assert main(["evaluate", str(run), "--json"]) == 0
        accuracies.append(json.loads(capsys.readouterr().out)["accuracy"])
    assert accuracies[0] == accuracies[1]


def test_head_init_probe_needs_a_trained_head_and_classes(capsys) -> None:
    assert main(["-q", "train", "--data", DATA, "--strategy", "linear-probe", "--head-init", "probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "goes with --strategy fine-tune" in err
    with pytest.raises(SystemExit) as exit_:
        main(["-q", "train", "--data", DATA, "--head-init", "prob"])
    assert exit_.value.code == 2 and "invalid choice: 'prob'" in capsys.readouterr().err
