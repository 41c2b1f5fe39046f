"""Shared by the segmentation-net tests: small options per model, a square-on-background task, and the checks
every net passes (logits keep the input's H, W; gradients flow; each upsampling kind fits the squares)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from cnnkit.models.factory import create_model

# small options per model (fcn/deeplab: a frozen resnet18, so that the decoder's training stays fast) and the
# upsampling kinds each one takes
SMALL = {
    "fcn32s": ({"backbone": "resnet18", "trainable_layers": 0}, ("transposed", "bilinear", "nearest")),
    "fcn16s": ({"backbone": "resnet18", "trainable_layers": 0}, ("transposed", "bilinear", "nearest")),
    "fcn8s": ({"backbone": "resnet18", "trainable_layers": 0}, ("transposed", "bilinear", "nearest")),
    "segnet": ({"depth": 2, "width": 8}, ("unpool", "transposed", "bilinear", "nearest")),
    "unet": ({"depth": 2, "base": 8}, ("unpool", "transposed", "bilinear", "nearest")),
    "deeplabv3": ({"backbone": "resnet18", "trainable_layers": 0, "aspp_channels": 16}, ("bilinear", "nearest")),
}
FINE = ("segnet", "unet")  # trained end to end at full resolution: they find the square, not only the prior


def squares(n: int = 8, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, size, size): a bright square of side 10-16 on a dark background, noise 0.3; masks 1/0."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        side = int(torch.randint(10, 17, (1,), generator=g))
        r, c = torch.randint(0, size - side, (2,), generator=g).tolist()
        masks[i, r: r + side, c: c + side] = 1
    images = (masks[:, None].float() * 2 - 1).repeat(1, 3, 1, 1) + 0.3 * torch.randn(n, 3, size, size, generator=g)
    return images, masks


def check_shape_and_gradients(name: str, size: tuple[int, int]) -> None:
    options = {k: v for k, v in SMALL[name][0].items() if k != "trainable_layers"}  # the encoder trains too
    model = create_model(name, num_classes=3, **options)
    x = torch.randn(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 3, *size)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder_weights is None and model.stride in (4, 16, 32)  # 2^depth, deeplab's output stride


def check_fits_squares(name: str, kind: str) -> None:
    torch.manual_seed(0)
    images, masks = squares()
    model = create_model(name, num_classes=2, upsample=kind, **SMALL[name][0])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for _ in range(25):
        logits = model(images)
        loss = F.cross_entropy(logits, masks)
        optimizer.zero_grad(), loss.backward(), optimizer.step()
        losses.append(loss.item())
    accuracy = (logits.argmax(1) == masks).float().mean().item()
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0], losses
    assert accuracy > (0.9 if name in FINE else 0.8), accuracy


def check_weights_of_another_class_count(name: str, tmp_path) -> None:
    import warnings

    options = SMALL[name][0]
    path = tmp_path / f"{name}.pt"
    torch.save(create_model(name, num_classes=3, **options).state_dict(), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = create_model(name, num_classes=5, weights=path, **options)
    assert any("another shape" in str(w.message) for w in caught)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5, 32, 32)


@pytest.fixture
def segmenters() -> SimpleNamespace:
    """small (name → (options, upsample kinds)), squares(), and the checks shape_and_gradients(name, size),
    fits_squares(name, kind), weights_of_another_class_count(name, tmp_path)."""
    return SimpleNamespace(small=SMALL, squares=squares, shape_and_gradients=check_shape_and_gradients,
                           fits_squares=check_fits_squares,
                           weights_of_another_class_count=check_weights_of_another_class_count)
