"""Segmentation nets (task="segment"): every registered one at small options keeps the input's H, W, lets
gradients through and, with each of its upsampling kinds, fits a tiny square-on-background task; SegNet's
unpooling uses the encoder's argmax indices; fc6 as a convolution computes the FC layer; bad names."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision

from cnnkit.errors import CnnkitError
from cnnkit.models.segmentation.encoder import deepest, dilate, registry_encoder
from cnnkit.models.segmentation.fcn import VGGEncoder, fc_to_conv
from cnnkit.models.segmentation.upsample import bilinear_kernel, crop, pad_to_multiple
from cnnkit.models.factory import create_model, get_spec, list_models

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


def test_small_options_cover_every_segmentation_model() -> None:
    assert set(SMALL) == set(list_models(task="segment"))
    for name in SMALL:
        spec = get_spec(name)
        assert spec.input_size == (3, 256, 256) and spec.paper


@pytest.mark.parametrize("size", [(37, 53), (64, 48)])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_logits_keep_the_input_size_and_gradients_flow(name: str, size: tuple[int, int]) -> None:
    options = {k: v for k, v in SMALL[name][0].items() if k != "trainable_layers"}  # the encoder trains too
    model = create_model(name, num_classes=3, **options)
    x = torch.randn(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 3, *size)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder_weights is None and model.stride in (4, 16, 32)  # 2^depth, deeplab's output stride


@pytest.mark.parametrize("name, kind", [(n, k) for n, (_, kinds) in SMALL.items() for k in kinds])
def test_each_upsample_kind_fits_squares(name: str, kind: str) -> None:
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


def test_segnet_unpools_at_the_encoders_argmax_positions() -> None:
    torch.manual_seed(0)
    model = create_model("segnet", num_classes=2, depth=2, width=4).eval()
    pooled, unpooled = [], []
    model.pool.register_forward_hook(lambda m, i, out: pooled.append(out))  # (values, indices) per encoder block
    for up in model.ups:
        up.register_forward_hook(lambda m, i, out: unpooled.append((i[0], i[1], out)))  # (x, indices), output
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 24))
    for (values, argmax), (x, indices, out) in zip(reversed(pooled), unpooled):
        assert indices is argmax  # the decoder gets the very indices its mirrored encoder pool recorded
        flat = out.flatten(2)  # (N, C, H·W)
        torch.testing.assert_close(flat.gather(2, argmax.flatten(2)), x.flatten(2))  # values at the argmax
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(2, argmax.flatten(2), True)
        assert (flat[~mask] == 0).all()  # and zeros everywhere else


def test_unpooling_with_other_indices_changes_the_output() -> None:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, depth=2, base=4, upsample="unpool").eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        model.encoder.pool.register_forward_hook(lambda m, i, out: (out[0], torch.zeros_like(out[1])))
        after = model(x)
    assert not torch.allclose(before, after)


def test_fc_to_conv_computes_the_fc_layer_on_a_7x7_input() -> None:
    torch.manual_seed(0)
    fc = torch.nn.Linear(8 * 7 * 7, 5)
    conv = fc_to_conv(fc, 8, 7)
    x = torch.randn(2, 8, 7, 7)
    torch.testing.assert_close(conv(x)[:, :, 3, 3], fc(x.flatten(1)))  # padding 3: the centre sees all 7×7


def test_vgg_fcn_converts_the_classifiers_fc6_and_fc7() -> None:
    torch.manual_seed(0)
    vgg = create_model("vgg11", num_classes=10).eval()
    encoder = VGGEncoder(vgg, fc_channels=4096).eval()
    x = torch.randn(1, 512, 7, 7)
    with torch.no_grad():
        fc6 = encoder.fc6[0](x)[:, :, 3, 3]
        torch.testing.assert_close(fc6, vgg.classifier[0](x.flatten(1)), atol=1e-4, rtol=1e-4)  # 25088 terms
        h = torch.randn(1, 4096)
        torch.testing.assert_close(encoder.fc7[0](h[:, :, None, None])[:, :, 0, 0], vgg.classifier[3](h))
    assert encoder.out_channels == [256, 512, 4096]


def test_fcn_on_vgg_with_narrow_fc_layers_runs() -> None:
    model = create_model("fcn8s", num_classes=3, backbone="vgg11", fc_channels=16)
    assert model(torch.randn(1, 3, 37, 53)).shape == (1, 3, 37, 53) and model.stride == 32


def test_pad_to_multiple_and_crop_round_trip() -> None:
    x = torch.randn(1, 3, 37, 53)
    padded, size = pad_to_multiple(x, 32)
    assert padded.shape[-2:] == (64, 64) and size == (37, 53)
    torch.testing.assert_close(crop(padded, size), x)
    assert pad_to_multiple(padded, 32)[0] is padded


def test_transposed_upsampling_starts_bilinear() -> None:
    x = torch.randn(1, 2, 4, 4)
    up = F.conv_transpose2d(x, bilinear_kernel(2, 4), stride=2, padding=1)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])  # equal away from the border


def test_unet_on_a_pretrained_encoder() -> None:
    model = create_model("unet", num_classes=3, backbone="efficientnet_lite0.imagenet")
    assert model.encoder_weights == "efficientnet_lite0.imagenet" and model.stride == 32
    assert model.encoder.strides == [2, 4, 8, 16, 32]
    assert model(torch.randn(2, 3, 48, 64)).shape == (2, 3, 48, 64)
    resnet = create_model("unet", num_classes=2, backbone="resnet18", decoder_channels=(32, 16, 8, 8, 8))
    assert resnet.encoder.strides == [2, 4, 8, 16, 32]  # the stem's stride-2 map split from its max pool


def test_dilated_resnet_matches_torchvision_replace_stride_with_dilation() -> None:
    torch.manual_seed(0)
    classifier = create_model("resnet50").eval()
    body, _ = registry_encoder("resnet50", levels=1)
    body.load_state_dict(dict(zip(body.state_dict(), classifier.state_dict().values())))
    dilate(body, 8)
    theirs = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True]).eval()
    theirs.load_state_dict(classifier.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(theirs.children())[:-2])(x)
        torch.testing.assert_close(deepest(body.eval(), x), expected)
    assert body.strides == [8]


def test_deeplabv3_output_stride_and_head() -> None:
    model = create_model("deeplabv3", num_classes=4, backbone="resnet18", output_stride=8, aspp_channels=8)
    assert model.stride == 8 and model.classifier[4].out_channels == 4
    assert model(torch.randn(2, 3, 20, 28)).shape == (2, 4, 20, 28)
    with pytest.raises(CnnkitError, match="output_stride"):
        create_model("deeplabv3", backbone="vgg11", output_stride=16)


def test_weights_of_another_class_count_load_without_the_head(tmp_path) -> None:
    for name in ("fcn8s", "unet"):
        options = SMALL[name][0]
        path = tmp_path / f"{name}.pt"
        torch.save(create_model(name, num_classes=3, **options).state_dict(), path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = create_model(name, num_classes=5, weights=path, **options)
        assert any("another shape" in str(w.message) for w in caught)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5, 32, 32)


@pytest.mark.parametrize("name, options, pattern", [
    ("unet", {"upsample": "bilinaer"}, "did you mean 'bilinear'"),
    ("segnet", {"upsample": "unpoll"}, "did you mean 'unpool'"),
    ("fcn8s", {"backbone": "resnet19"}, "did you mean 'resnet18'"),
    ("deeplabv3", {"backbone": "resnet5O"}, "did you mean"),
    ("unet", {"backbone": "efficientnet_lite0.imagenett"}, "did you mean"),
    ("fcn32s", {"upsample": "unpool"}, "cannot upsample by 'unpool'"),
    ("unet", {"backbone": "resnet18", "upsample": "unpool"}, "cannot upsample by 'unpool'"),
    ("deeplabv3", {"upsample": "transposed"}, "deeplabv3 cannot upsample by 'transposed'; choose one of: bilinear"),
    ("deeplabv3", {"upsample": "bilinar"}, "did you mean 'bilinear'"),
])
def test_bad_names_raise_with_a_hint(name: str, options: dict, pattern: str) -> None:
    with pytest.raises(CnnkitError, match=pattern):
        create_model(name, num_classes=2, **options)
