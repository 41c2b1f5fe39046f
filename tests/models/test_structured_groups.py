"""Residual-width pruning of CIFAR ResNets: exact when the pruned stream channels were zero (shortcut A and B), the
streams halve at 0.5, a fresh model rebuilt from the card entry loads the state, old inner-only entries still
load, a run pruned twice composes its indices, and architectures without understood streams are refused."""
from __future__ import annotations

import pytest
import torch
from tests.conftest import randomise_batch_norms
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.structured_groups import (
    STREAMS,
    ChannelScatter,
    merge_pruned,
    prune_model,
    rebuild,
    residual_streams,
)

SIZE = (3, 32, 32)


def _resnet20(shortcut: str) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3, input_size=SIZE, shortcut=shortcut).eval()
    randomise_batch_norms(model)
    return model


@torch.no_grad()
def _zero_odd_stream_channels(model: nn.Module) -> None:
    """Every stream's odd channels exactly zero (their producing filters and BN γ, β), and the inner convs' even
    filters: option A carries stage s's channel i to stage s + 1's channel i, so odd stays odd."""
    for stream in residual_streams(model):
        for conv, bn in stream.producers:
            model.get_submodule(conv).weight[1::2] = 0
            norm = model.get_submodule(bn)
            norm.weight[1::2], norm.bias[1::2] = 0, 0
    for name, m in model.named_modules():
        if name.startswith("layer") and name.endswith(".conv1"):
            m.weight[::2] = 0
            norm = model.get_submodule(name.removesuffix("conv1") + "bn1")
            norm.weight[::2], norm.bias[::2] = 0, 0


@pytest.mark.parametrize(("shortcut", "criterion"), [("A", "l1"), ("A", "bn"), ("B", "l1"), ("B", "bn")])
def test_pruning_zero_stream_channels_keeps_the_outputs(shortcut: str, criterion: str) -> None:
    model = _resnet20(shortcut)
    _zero_odd_stream_channels(model)
    x = torch.randn(4, *SIZE)  # (N, C, H, W)
    with torch.no_grad():
        expected = model(x)
        pruned = prune_model(model, 0.5, criterion, SIZE)
        got = model(x)
    assert pruned[STREAMS] == [list(range(0, w, 2)) for w in (16, 32, 64)]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if shortcut == "A":
        scatter = model.layer2[0].downsample
        assert isinstance(scatter, ChannelScatter) and scatter.src.tolist() == list(range(8))
        assert scatter.dst.tolist() == list(range(8)) and scatter.c_out == 16


def test_every_stream_and_inner_conv_halves_at_one_half() -> None:
    model = _resnet20("A")
    prune_model(model, 0.5, "l1", SIZE)
    assert (model.conv1.out_channels, model.bn1.num_features) == (8, 8)
    for s, width in ((1, 8), (2, 16), (3, 32)):
        for block in getattr(model, f"layer{s}"):
            assert block.conv2.out_channels == width and block.bn2.num_features == width
            assert block.conv1.out_channels == width and block.conv2.in_channels == width
    assert model.layer2[0].conv1.in_channels == 8 and model.fc.in_features == 32
    params = sum(p.numel() for p in model.parameters())
    # every 3×3 conv a quarter (both widths halved), BN and fc halved: 4·269,722 ≈ the unpruned count
    assert 67_000 < params < 69_000 and model(torch.randn(2, *SIZE)).shape == (2, 10)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_a_fresh_model_rebuilt_from_the_entry_loads_the_state(shortcut: str) -> None:
    model = _resnet20(shortcut)
    pruned = prune_model(model, 0.5, "l1", SIZE)
    fresh = rebuild(create_model("resnet20", num_classes=10, in_channels=3, input_size=SIZE, shortcut=shortcut),
                    pruned, SIZE).eval()
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_an_inner_only_entry_still_loads() -> None:
    model = _resnet20("A")
    widths = prune_model(model, 0.5, "l1", SIZE, residual=False)
    assert STREAMS not in widths and model.fc.in_features == 64 and model.layer1[0].conv1.out_channels == 8
    fresh = rebuild(create_model("resnet20", num_classes=10, input_size=SIZE), widths, SIZE)
    fresh.load_state_dict(model.state_dict())
    assert isinstance(fresh.layer2[0].downsample, type(model.layer2[0].downsample))


def test_pruning_twice_composes_the_stream_indices() -> None:
    model = _resnet20("A")
    first = prune_model(model, 0.5, "l1", SIZE)
    second = merge_pruned(first, prune_model(model, 0.5, "l1", SIZE))
    assert [len(k) for k in second[STREAMS]] == [4, 8, 16]
    assert all(set(k) <= set(f) for k, f in zip(second[STREAMS], first[STREAMS]))
    fresh = rebuild(create_model("resnet20", num_classes=10, input_size=SIZE), second, SIZE).eval()
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model.eval()(x))


def test_residual_pruning_of_other_architectures_is_refused() -> None:
    model = create_model("resnet18", num_classes=10, input_size=(3, 32, 32))
    with pytest.raises(CnnkitError, match=r"^residual widths are pruned in CIFAR ResNets \(resnet20..110\) only; "
                                          r"ResNet keeps them \(use --no-residual\)$"):
        prune_model(model, 0.5, "l1", SIZE, residual=True)
    widths = prune_model(model, 0.5, "l1", SIZE)  # None: inner convs only where no streams are understood
    assert STREAMS not in widths and model.fc.in_features == 512


def test_a_model_with_a_channel_scatter_exports_to_onnx(tmp_path) -> None:
    """Option A's shortcut after pruning (ChannelScatter: subsample, then index_copy into the kept positions)
    runs in onnxruntime as in torch."""
    pytest.importorskip("onnxruntime")
    from cnnkit.export.onnx import export_onnx
    from cnnkit.export.runtime import OnnxModel
    from cnnkit.runs.card import ModelCard

    model = _resnet20("A")
    pruned = prune_model(model, 0.5, "l1", SIZE)
    assert any(isinstance(m, ChannelScatter) for m in model.modules())
    card = ModelCard("resnet20", "multiclass", [str(i) for i in range(10)], list(SIZE), [0.5] * 3, [0.25] * 3,
                     pruned=pruned)
    runtime = OnnxModel(export_onnx(model.eval(), card, tmp_path / "pruned.onnx"))
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(runtime(x), model(x), atol=1e-4, rtol=1e-4)
