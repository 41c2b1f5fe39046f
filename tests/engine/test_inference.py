"""cnnkit.engine.inference: batch norms folded into the convolutions (against the formula, torch.nn.utils.fusion and
the unfolded model's outputs), fx and the nn.Sequential fallback, what is left alone, and for_inference."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from cnnkit.engine.inference import fold_batch_norm, folded_pairs, for_inference, fp32_outputs
from cnnkit.models.factory import create_model


def _random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every BatchNorm2d given running statistics and affine parameters far from the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def _count(model: nn.Module, kind: type) -> int:
    return sum(type(m) is kind for m in model.modules())


def test_a_pair_is_fused_by_the_formula_and_matches_torch_fusion() -> None:
    conv, bn = nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4)
    model = _random_statistics(nn.Sequential(conv, bn, nn.ReLU()))
    folded = fold_batch_norm(model)
    fused = folded[0]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # γ / √(σ² + ε)
    torch.testing.assert_close(fused.weight, conv.weight * scale.view(-1, 1, 1, 1))
    torch.testing.assert_close(fused.bias, (conv.bias - bn.running_mean) * scale + bn.bias)
    reference = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
    torch.testing.assert_close(fused.weight, reference.weight)
    torch.testing.assert_close(fused.bias, reference.bias)
    assert isinstance(folded[1], nn.Identity) and isinstance(model[1], nn.BatchNorm2d)  # the original kept


@pytest.mark.parametrize(("name", "channels", "size", "pairs"), [("lenet5", 1, 32, 0), ("resnet18", 3, 64, 20),
                                                                  ("efficientnet_lite0", 3, 64, 49)])
def test_zoo_models_keep_their_outputs(name: str, channels: int, size: int, pairs: int) -> None:
    model = _random_statistics(create_model(name, num_classes=10, in_channels=channels))
    x = torch.randn(4, channels, size, size, generator=torch.Generator().manual_seed(1))
    folded = fold_batch_norm(model)
    assert len(folded_pairs(model)) == pairs
    assert _count(folded, nn.BatchNorm2d) == 0 and _count(model, nn.BatchNorm2d) == pairs  # model left as it was
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert {n for n, _ in model.named_modules()} == {n for n, _ in folded.named_modules()}  # names kept


class Untraceable(nn.Module):
    """Control flow on a tensor's value (fx cannot trace it), a Sequential with conv → BN, and a conv read twice."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.skip_conv, self.skip_bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if float(x.mean()) > -1e9:  # data-dependent: fx raises
            y = self.skip_conv(x)
            x = self.skip_bn(y) + y  # the conv's output is read twice: folding would change it
        return self.head(x.mean((2, 3)))


def test_a_model_fx_cannot_trace_falls_back_to_the_sequential_walk() -> None:
    model = _random_statistics(Untraceable())
    with pytest.raises(Exception):  # noqa: B017  (fx raises a TraceError)
        torch.fx.symbolic_trace(model)
    assert folded_pairs(model) == [("stem.0", "stem.1")]
    folded = fold_batch_norm(model)
    assert isinstance(folded.stem[1], nn.Identity) and isinstance(folded.skip_bn, nn.BatchNorm2d)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_detector_folds_through_its_traceable_parts_and_keeps_its_boxes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _random_statistics(create_model("yolo", num_classes=3))
    folded = fold_batch_norm(model)
    assert _count(folded, nn.BatchNorm2d) == 0 < _count(model, nn.BatchNorm2d)
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    for e, g in zip(expected, got):
        assert e.keys() == g.keys() and len(e["boxes"]) == len(g["boxes"])
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=1e-3, atol=1e-2)
        torch.testing.assert_close(g["scores"], e["scores"], rtol=1e-3, atol=1e-4)


class ActBatchNorm(nn.BatchNorm2d):
    """A BatchNorm2d subclass with a ReLU inside (as timm's BatchNormAct2d): not a plain affine map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


def test_subclasses_hooked_modules_and_kept_names_stay_unfused() -> None:
    model = _random_statistics(nn.Sequential(nn.Conv2d(3, 4, 1), ActBatchNorm(4), nn.Conv2d(4, 4, 1),
                                             nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
    model[2].register_forward_hook(lambda *args: None)
    assert folded_pairs(model) == [("4", "5")]
    assert fold_batch_norm(model, keep=("4",))[5].__class__ is nn.BatchNorm2d
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fold_batch_norm(model)(x), model(x), rtol=1e-5, atol=1e-5)


def test_folding_in_inference_mode_gives_weights_that_autograd_can_use() -> None:
    model = _random_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    with torch.inference_mode():
        folded = fold_batch_norm(model)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    folded(x).sum().backward()  # an attack's gradient with respect to the input
    assert x.grad is not None and not folded[0].weight.is_inference()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_for_inference_folds_moves_and_sets_the_memory_format(precision: str) -> None:
    model = _random_statistics(create_model("resnet18", num_classes=5))
    ready, mode = for_inference(model, precision, device="cpu")
    assert mode.name == precision and mode.device == torch.device("cpu") and not ready.training
    assert _count(ready, nn.BatchNorm2d) == 0
    assert ready.conv1.weight.is_contiguous(memory_format=torch.channels_last) == (precision == "bf16")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), mode.autocast():
        out = fp32_outputs(ready(mode.input(x)))
    with torch.inference_mode():
        expected = model(x)
    assert out.dtype == torch.float32
    tolerance = 1e-4 if precision == "fp32" else 0.05
    assert float((out - expected).abs().max()) <= tolerance * float(expected.abs().max())


def test_fp32_outputs_casts_nested_reduced_precision_floats_only() -> None:
    found = fp32_outputs([{"boxes": torch.ones(2, 4, dtype=torch.bfloat16), "labels": torch.ones(2, dtype=torch.long)}])
    assert found[0]["boxes"].dtype == torch.float32 and found[0]["labels"].dtype == torch.long
    assert fp32_outputs((torch.ones(1, dtype=torch.float16),))[0].dtype == torch.float32


def test_a_folded_model_is_not_copied_or_folded_again() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    folded = fold_batch_norm(model)
    assert folded is not model and isinstance(folded[1], nn.Identity) and isinstance(model[1], nn.BatchNorm2d)
    assert fold_batch_norm(folded) is folded  # what predict does to a server's model on every batch
    kept = fold_batch_norm(folded, keep=["0"])  # another `keep` is another fold (of the folded copy)
    assert kept is not folded
