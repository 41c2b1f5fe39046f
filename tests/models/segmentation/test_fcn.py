"""FCN-32s/16s/8s (cnnkit.models.segmentation.fcn): fc6/fc7 as convolutions compute the classifier's FC layers,
the skip scores start at zero, every upsampling kind fits squares, and the head is dropped from weights of another
class count."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.segmentation.fcn import VGGEncoder, fc_to_conv


@pytest.mark.parametrize("size", [(37, 53), (64, 48)])
@pytest.mark.parametrize("name", ('fcn32s', 'fcn16s', 'fcn8s'))
def test_logits_keep_the_input_size_and_gradients_flow(segmenters, name: str, size: tuple[int, int]) -> None:
    segmenters.shape_and_gradients(name, size)


@pytest.mark.parametrize("name, kind", [(n, k) for n in ('fcn32s', 'fcn16s', 'fcn8s')
                                         for k in ('transposed', 'bilinear', 'nearest')])
def test_each_upsample_kind_fits_squares(segmenters, name: str, kind: str) -> None:
    segmenters.fits_squares(name, kind)


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s"])
def test_skip_scores_start_at_zero_so_the_skips_add_nothing_at_first(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, backbone="resnet18", upsample="bilinear").eval()
    skips = [m for n, m in model.named_children() if n.startswith("score_pool")]
    assert skips and all(float((m.weight.abs().sum() + m.bias.abs().sum()).detach()) == 0 for m in skips)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f8, f16, f32 = model.encoder(x)
        score = model.upscore2(model.score_fr(f32), size=f16.shape[-2:])  # the coarse score, upsampled alone
        if name == "fcn8s":
            score = model.upscore_pool4(score, size=f8.shape[-2:])
        last = model.upscore16 if name == "fcn16s" else model.upscore8
        torch.testing.assert_close(model(x), last(score, size=(64, 64)))


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


def test_weights_of_another_class_count_load_without_the_head(segmenters, tmp_path) -> None:
    segmenters.weights_of_another_class_count("fcn8s", tmp_path)


@pytest.mark.parametrize("name, options, pattern", [
    ("fcn8s", {"backbone": "resnet19"}, "did you mean 'resnet18'"),
    ("fcn32s", {"upsample": "unpool"}, "cannot upsample by 'unpool'"),
])
def test_bad_names_raise_with_a_hint(name: str, options: dict, pattern: str) -> None:
    with pytest.raises(CnnkitError, match=pattern):
        create_model(name, num_classes=2, **options)
