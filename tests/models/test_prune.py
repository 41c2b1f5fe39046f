"""Magnitude pruning: exact counts, smallest-|w| selection, scopes, masks kept while fine-tuning, removal."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.prune import make_permanent, prune_model, sparsity, sparsity_table


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def _weights(model):
    return [m.weight.detach().clone() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_global_prunes_exactly_the_smallest_magnitudes():
    model = _net()
    before = _weights(model)
    flat = torch.cat([w.flatten() for w in before])
    n = flat.numel()
    info = prune_model(model, 0.5, scope="global")
    after = torch.cat([w.flatten() for w in _weights(model)])
    k = round(0.5 * n)
    assert int((after == 0).sum()) == k
    assert info["sparsity"] == pytest.approx(k / n)
    order = flat.abs().argsort()  # by hand: the k smallest |w| are the zeros, the rest are untouched
    assert torch.all(after[order[:k]] == 0)
    assert torch.equal(after[order[k:]], flat[order[k:]])
    assert set(info["layers"]) == {"0", "3"}
    # global: layers get different fractions, which average (weighted by size) to the target
    sizes = {"0": before[0].numel(), "3": before[1].numel()}
    assert sum(info["layers"][k_] * sizes[k_] for k_ in sizes) / n == pytest.approx(k / n)


def test_layer_scope_gives_each_layer_its_own_fraction_and_biases_are_untouched():
    model = _net()
    biases = [model[0].bias.detach().clone(), model[3].bias.detach().clone()]
    info = prune_model(model, 0.3, scope="layer")
    for name, m in (("0", model[0]), ("3", model[3])):
        n = m.weight.numel()
        assert int((m.weight == 0).sum()) == round(0.3 * n)
        assert info["layers"][name] == pytest.approx(round(0.3 * n) / n)
    assert torch.equal(model[0].bias, biases[0]) and torch.equal(model[3].bias, biases[1])
    assert not hasattr(model[0], "bias_orig")


def test_layers_glob_selects_modules():
    model = _net()
    info = prune_model(model, 0.5, layers="3")
    assert set(info["layers"]) == {"3"}
    assert int((model[0].weight == 0).sum()) == 0
    overall, per_layer = sparsity(model)
    assert per_layer["0"] == 0.0 and per_layer["3"] == pytest.approx(0.5, abs=1e-3)


def test_fine_tuning_keeps_pruned_weights_at_zero():
    model = _net()
    prune_model(model, 0.6)
    masks = {n: b.clone() for n, b in model.named_buffers() if n.endswith("weight_mask")}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    orig_before = model[3].weight_orig.detach().clone()
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert not torch.equal(model[3].weight_orig, orig_before)  # it did train
    model(x)  # refresh module.weight from weight_orig * weight_mask
    for name, mask in masks.items():
        weight = model.get_submodule(name.rsplit(".", 1)[0]).weight
        assert torch.all(weight[mask == 0] == 0)
    assert sparsity(model)[0] == pytest.approx(0.6, abs=1e-3)


def test_make_permanent_gives_plain_keys_and_same_outputs():
    model = _net()
    prune_model(model, 0.7)
    assert any(k.endswith("weight_orig") for k in model.state_dict())
    x = torch.randn(3, 1, 8, 8)
    out = model(x)
    before = sparsity(model)
    make_permanent(model)
    keys = set(model.state_dict())
    assert keys == {"0.weight", "0.bias", "3.weight", "3.bias"}
    assert torch.allclose(model(x), out)
    assert sparsity(model) == before
    fresh = _net()
    fresh.load_state_dict(model.state_dict())  # loads into an unpruned model, as load_model does


def test_sparsity_table_rows_start_from_copies():
    model = _net()
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))

    def evaluate(m):
        with torch.no_grad():
            return float((m(x).argmax(1) == y).float().mean())

    def fine_tune(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()

    rows = sparsity_table(model, [0.0, 0.5, 0.9], evaluate, fine_tune)
    assert [r["sparsity_target"] for r in rows] == [0.0, 0.5, 0.9]
    assert [round(r["sparsity"], 2) for r in rows] == [0.0, 0.5, 0.9]
    assert set(rows[0]) == {"sparsity_target", "sparsity", "accuracy_before_ft", "accuracy"}
    assert rows[0]["accuracy_before_ft"] == evaluate(model)
    assert not any(k.endswith("weight_orig") for k in model.state_dict())  # the original is untouched
    assert sparsity(model)[0] == 0.0
    rows = sparsity_table(_net, [0.5], evaluate)  # a factory, no fine-tuning
    assert rows[0]["accuracy"] == rows[0]["accuracy_before_ft"]


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5])
def test_bad_amount(amount):
    with pytest.raises(CnnkitError, match="amount"):
        prune_model(_net(), amount)


def test_unknown_scope_suggests():
    with pytest.raises(CnnkitError, match="did you mean 'global'"):
        prune_model(_net(), 0.5, scope="globl")


def test_glob_matching_nothing():
    with pytest.raises(CnnkitError, match="no Conv/Linear layer matches 'features.*'"):
        prune_model(_net(), 0.5, layers="features.*")
