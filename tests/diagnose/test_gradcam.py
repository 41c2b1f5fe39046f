"""Grad-CAM: the formula against a hand-written reference, the map's placement, the model left as it was, and the
issue's acceptance bar: on LeNet-5 trained on synthetic shapes, at least 70% of the heat lies inside the shape."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors

from cnnkit.api import train
from cnnkit.config import load_config
from cnnkit.data.transforms import FitSize
from cnnkit.diagnose.classification import open_split
from cnnkit.diagnose.gradcam import default_target_layer, gradcam, gradcam_overlay, layer_geometry, plot_gradcam
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model

# big shapes (side 50..90% of the image): a uniform heat map would put 37% of its mass inside the mask
SHAPES = "synthetic-shapes:n=1200,size=32,noise=0.02,min_scale=0.5,max_scale=0.9"


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> Path:
    cfg = load_config(overrides={"data": {"source": SHAPES, "val": 0.2, "test": 0.1}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 10, "batch_size": 32, "lr": 2e-3, "device": "cpu"},
                                 "out": str(tmp_path_factory.mktemp("gradcam") / "shapes")})
    return train(cfg).run_dir


def val_masks(data) -> torch.Tensor:
    """(N, S, S) bool masks of the val shapes, fitted to the model's input exactly as the images are."""
    fit = FitSize(data.card.input_size[1], data.card.resize)
    masks = [fit(tv_tensors.Mask(torch.as_tensor(data.source.extras["masks"][int(j)])[None]))[0]
             for j in data.indices]
    return torch.stack(masks).bool()


def test_most_heat_lies_inside_the_shape(shapes_run):
    data = open_split(shapes_run)
    positions = np.arange(len(data.indices))
    inputs, masks = data.inputs(data.images(positions)), val_masks(data)
    with torch.inference_mode():
        accuracy = (data.task().predict_step(inputs).argmax(1) == data.source.target_tensor(data.indices)).double()
    assert accuracy.mean() >= 0.95  # a model that has learned the shapes
    heat = gradcam(data.model, inputs)  # at c3, LeNet-5's last spatial conv (10×10)
    inside = (heat * masks).sum((1, 2)) / heat.sum((1, 2)).clamp_min(1e-12)  # (N,)
    print(f"Grad-CAM mass inside the mask: {inside.mean():.3f} (uniform heat: {masks.double().mean():.3f})")
    assert inside.mean() >= 0.70


def reference_gradcam(features: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Selvaraju et al. written out for a model split as head(features(x)) with padded convolutions."""
    a = features(x).detach().requires_grad_(True)  # (N, C, h, w)
    scores = head(a.clone())  # the head may begin with an in-place ReLU
    grads, = torch.autograd.grad(scores.gather(1, scores.argmax(1, keepdim=True)).sum(), a)
    cam = F.relu((grads.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    low, high = cam.amin((1, 2), keepdim=True), cam.amax((1, 2), keepdim=True)
    return ((cam - low) / (high - low)).detach()


def test_matches_the_formula_with_in_place_relus():
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 4))
    model = nn.Sequential(features, head)
    model(torch.randn(8, 3, 16, 16))  # BN running statistics that differ from the batch's
    model.eval()
    x = torch.randn(5, 3, 16, 16)
    assert default_target_layer(model, x) == "0.3"
    # at the in-place ReLU that ends `features`, and at the conv whose output the next ReLU overwrites
    assert torch.allclose(gradcam(model, x, "0.5"), reference_gradcam(features, head, x), atol=1e-5)
    assert torch.allclose(gradcam(model, x, "0.0"),
                          reference_gradcam(features[:1], nn.Sequential(features[1:], head), x), atol=1e-5)


def test_leaves_the_model_as_it_was():
    model = create_model("lenet5", num_classes=3, in_channels=1).train()
    flags = [p.requires_grad for p in model.parameters()]
    with torch.inference_mode():  # images made where no graph can be built
        x = torch.randn(4, 1, 32, 32)
    heat = gradcam(model, x, class_idx=torch.tensor([0, 1, 2, 0]))
    assert heat.shape == (4, 32, 32) and heat.min() >= 0 and heat.max() <= 1
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model.c3._forward_hooks  # the hook is gone


def test_one_output_binary_model_explains_either_class():
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=1, in_channels=1).eval()
    x = torch.randn(3, 1, 32, 32)
    for cls in (0, 1):
        heat = gradcam(model, x, class_idx=torch.full((3,), cls))
        assert heat.shape == (3, 32, 32) and torch.isfinite(heat).all()


def test_default_layer_and_map_placement():
    lenet, resnet = create_model("lenet5", num_classes=3, in_channels=1), create_model("resnet20", num_classes=3)
    assert default_target_layer(lenet) == "c3"  # C5's output is 1×1
    assert default_target_layer(resnet) == "layer3.2.conv2"
    # LeNet-5's valid convolutions: cell i of C3 is centred on input pixel 6.5 + 2i, not stretched over 32
    assert layer_geometry(lenet, lenet.c3, (32, 32), 1) == ((6.5, 6.5), (2.0, 2.0))
    # ResNet's padded ones: exactly bilinear upsampling (align_corners=False)
    assert layer_geometry(resnet, resnet.layer3[2].conv2, (32, 32), 3) == ((1.5, 1.5), (4.0, 4.0))


def test_overlay_and_bad_input():
    image = torch.full((1, 8, 8), 100, dtype=torch.uint8)
    heat = torch.zeros(8, 8)
    out = gradcam_overlay(image, heat, alpha=0.0)
    assert out.dtype == torch.uint8 and out.shape == (3, 8, 8) and (out == 100).all()
    jet = gradcam_overlay(torch.rand(3, 8, 8), torch.ones(8, 8), alpha=1.0)
    assert jet[0].float().mean() > jet[2].float().mean()  # 1 is the red end of jet
    with pytest.raises(CnnkitError, match="same size"):
        gradcam_overlay(image, torch.zeros(4, 4))
    model = create_model("lenet5", num_classes=3, in_channels=1)
    with pytest.raises(CnnkitError, match="unknown layer 'c9'"):
        gradcam(model, torch.randn(1, 1, 32, 32), "c9")
    with pytest.raises(CnnkitError, match="feature maps"):
        gradcam(model, torch.randn(1, 1, 32, 32), "f6")


def test_plot_gradcam(shapes_run, tmp_path):
    path = plot_gradcam(shapes_run, tmp_path / "gradcam.png", n=4, target_layer="act3")
    assert path.is_file() and path.stat().st_size > 0
