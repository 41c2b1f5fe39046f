"""Dropout rates per layer and the batch-norm toggles (on | off | frozen), on models and through a saved run."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.tweaks import batch_norm_layers, dropout_layers, set_batch_norm, set_dropout
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import load_model, save_model


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8), nn.Dropout(0.1), nn.Linear(8, 3))


def on_meta(name: str, **options) -> nn.Module:
    """Built on the meta device: the layers without allocating or initialising weights (VGG is large)."""
    with torch.device("meta"):
        return create_model(name, **options)


def _step(model: nn.Module, lr: float = 0.1) -> None:
    """One SGD step in training mode, as the Trainer does it (model.train() first)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    x, y = torch.randn(16, 1, 8, 8) * 3 + 1, torch.randint(0, 3, (16,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


# ---------------------------------------------------------------- dropout

def test_a_float_sets_every_dropout_layer():
    model = on_meta("vgg11", num_classes=3)
    rates = set_dropout(model, 0.25)
    assert rates == {"classifier.2": 0.25, "classifier.5": 0.25}
    assert all(m.p == 0.25 for m in dropout_layers(model).values())


def test_globs_set_matching_layers_and_a_later_glob_wins():
    model = on_meta("alexnet_tv", num_classes=3)
    rates = set_dropout(model, {"classifier.*": 0.5, "classifier.3": 0.3})
    assert rates == {"classifier.0": 0.5, "classifier.3": 0.3}
    assert model.classifier[0].p == 0.5 and model.classifier[3].p == 0.3


def test_dropout_rates_act_in_training():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0))
    set_dropout(model, {"1": 0.5})
    model.train()
    out = model[1](torch.ones(10_000))
    assert 0.45 < float((out == 0).float().mean()) < 0.55 and out.max() == 2.0  # kept units scaled by 1/(1-p)


@pytest.mark.parametrize("spec, message", [
    (1.0, "must be in [0, 1)"),
    (-0.1, "must be in [0, 1)"),
    ({"classifier.*": 1.5}, "of 'classifier.*' must be in [0, 1)"),
    ({"classifier.*": "high"}, "must be a number"),
    ({}, "mapping is empty"),
    ({"fc6": 0.3}, "no dropout layer matches 'fc6'; the dropout layers are: classifier.2, classifier.5"),
])
def test_bad_dropout_specs(spec, message):
    with pytest.raises(CnnkitError) as err:
        set_dropout(on_meta("vgg11", num_classes=3), spec)
    assert message in str(err.value)


def test_a_model_without_dropout_says_so():
    with pytest.raises(CnnkitError, match="has no dropout layers.*architecture with dropout"):
        set_dropout(nn.Sequential(nn.Linear(2, 2)), 0.3)


# ---------------------------------------------------------------- batch norm

def test_off_leaves_no_batch_norm_and_the_output_shape():
    model = create_model("resnet20", num_classes=5, batch_norm_mode="off")
    assert not batch_norm_layers(model)
    assert not any("bn" in k or "running" in k for k in model.state_dict())
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    net = _bn_net()
    assert set_batch_norm(net, "off") == 2
    assert isinstance(net[1], nn.Identity) and isinstance(net[5], nn.Identity)
    assert net(torch.randn(4, 1, 8, 8)).shape == (4, 3)


def test_off_replaces_a_layer_shared_under_two_names():
    bn = nn.BatchNorm2d(2)
    model = nn.Sequential(nn.Conv2d(2, 2, 1), bn, bn)
    set_batch_norm(model, "off")
    assert isinstance(model[1], nn.Identity) and isinstance(model[2], nn.Identity)


def test_frozen_keeps_running_statistics_and_affine_while_convs_train():
    model = _bn_net()
    set_batch_norm(model, "frozen")
    bn_state = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("1.", "5."))}
    conv = model[0].weight.detach().clone()
    for _ in range(2):
        _step(model)  # model.train() each time, as every epoch of the Trainer
    assert not torch.equal(model[0].weight, conv)  # the convolution trained
    for k, v in model.state_dict().items():
        if k in bn_state:
            assert torch.equal(v, bn_state[k]), k  # running_mean/var, num_batches_tracked, γ, β unchanged
    assert not model[1].weight.requires_grad and not model[1].bias.requires_grad
    # and it normalises with the running statistics: the same as a plain BN in eval mode
    plain = nn.BatchNorm2d(4)
    plain.load_state_dict(model[1].state_dict())
    x = torch.randn(5, 4, 3, 3)
    model[1].train()
    assert torch.allclose(model[1](x), plain.eval()(x))


def test_on_changes_nothing_and_unknown_modes_suggest():
    model = _bn_net()
    assert set_batch_norm(model, "on") == 0 and isinstance(model[1], nn.BatchNorm2d)
    with pytest.raises(CnnkitError, match="did you mean 'frozen'"):
        set_batch_norm(model, "frozn")
    with pytest.raises(CnnkitError, match="unknown batch-norm mode"):
        create_model("lenet5", batch_norm_mode="none")


@pytest.mark.parametrize("mode", ["off", "frozen"])
def test_a_model_without_batch_norm_warns(mode):
    with pytest.warns(UserWarning, match="no batch-norm layers"):
        model = create_model("lenet5", num_classes=3, batch_norm_mode=mode)
    assert isinstance(model.f6, nn.Linear)


def test_the_toggle_survives_save_and_load_of_a_run(tmp_path: Path):
    model = create_model("resnet20", num_classes=3, batch_norm_mode="off")
    card = ModelCard("resnet20", "classify", ["a", "b", "c"], [3, 16, 16], [0.5] * 3, [0.25] * 3,
                     options={"batch_norm_mode": "off"})
    (tmp_path / "run").mkdir()
    save_model(tmp_path / "run" / "model.pt", model, card)
    loaded, card = load_model(tmp_path / "run")  # strict load: the keys match only without BN
    assert not batch_norm_layers(loaded) and card.options == {"batch_norm_mode": "off"}
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(loaded(x), model.eval()(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frozen = ModelCard(**{**card.__dict__, "options": {"batch_norm_mode": "frozen"}}).build_model()
    assert all(not p.requires_grad for m in batch_norm_layers(frozen).values() for p in m.parameters())


# ---------------------------------------------------------------- dropout placed by glob (--insert-dropout)

def test_insert_dropout_after_convolutions_is_spatial_and_after_linear_layers_elementwise():
    from cnnkit.models.tweaks import PlacedDropout, insert_dropout

    model = create_model("lenet5", num_classes=3)
    keys = set(model.state_dict())
    assert insert_dropout(model, {"c3": 0.5, "f*": 0.5}) == {"c3": 0.5, "f6": 0.5}
    assert set(model.state_dict()) == keys  # no new parameter or buffer: weights load as before
    seen = {}
    model.c3.placed_dropout.register_forward_hook(lambda m, i, o: seen.update(c3=o))
    model.f6.placed_dropout.register_forward_hook(lambda m, i, o: seen.update(f6=o))
    model.train()
    torch.manual_seed(0)
    model(torch.randn(8, 1, 32, 32))
    c3 = seen["c3"]  # (8, 16, 10, 10): whole channels are zero (Dropout2d), the others scaled by 2
    zero_maps = (c3 == 0).flatten(2).all(2)
    assert zero_maps.any() and not ((c3 == 0) & ~zero_maps[..., None, None]).flatten(2).all(2).any()
    f6 = seen["f6"]
    assert (f6 == 0).any() and isinstance(model.f6.placed_dropout, PlacedDropout)
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model(x), model(x))


def test_insert_dropout_appends_to_a_sequential_and_refuses_an_unmatched_glob():
    from cnnkit.models.tweaks import PlacedDropout, insert_dropout

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.Flatten(), nn.Linear(8, 2)))
    insert_dropout(model, {"1": 0.3})
    assert isinstance(model[1][-1], PlacedDropout) and len(model[1]) == 3
    insert_dropout(model, {"1": 0.1})  # again: the same module, a new rate
    assert len(model[1]) == 3 and model[1][-1].p == 0.1
    with pytest.raises(CnnkitError, match=r"no module matches 'features\.\*'; the modules include 0, 1") as err:
        insert_dropout(model, {"features.*": 0.1})
    assert "\n" not in str(err.value)


def test_inserted_dropout_is_rerated_by_set_dropout_and_rebuilt_from_the_card(tmp_path: Path):
    model = create_model("lenet5", num_classes=3, insert_dropout={"c5": 0.2})
    assert set_dropout(model, {"c5.*": 0.4}) == {"c5.placed_dropout": 0.4}
    card = ModelCard("lenet5", "classify", ["a", "b", "c"], [1, 32, 32], [0.5], [0.25],
                     options={"insert_dropout": {"c5": 0.2}})
    (tmp_path / "run").mkdir()
    save_model(tmp_path / "run" / "model.pt", model, card)
    loaded, _ = load_model(tmp_path / "run")
    assert [n for n, _ in loaded.named_modules()] == [n for n, _ in model.named_modules()]
