"""U-Net (cnnkit.models.segmentation.unet): logits keep the input's size, every upsampling kind fits squares,
the decoder concatenates the encoder's maps, unpooling uses the encoder's indices, pretrained encoders."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.segmentation.unet import UNet


@pytest.mark.parametrize("size", [(37, 53), (64, 48)])
@pytest.mark.parametrize("name", ('unet',))
def test_logits_keep_the_input_size_and_gradients_flow(segmenters, name: str, size: tuple[int, int]) -> None:
    segmenters.shape_and_gradients(name, size)


@pytest.mark.parametrize("name, kind", [("unet", k) for k in ('unpool', 'transposed', 'bilinear', 'nearest')])
def test_each_upsample_kind_fits_squares(segmenters, name: str, kind: str) -> None:
    segmenters.fits_squares(name, kind)


def test_own_encoder_widths_and_decoder_concatenation() -> None:
    model = UNet(3, base=4, depth=3)
    assert model.encoder.out_channels == [4, 8, 16, 32] and model.encoder.strides == [1, 2, 4, 8]
    assert model.stride == 8
    # decoder level: up(d) ‖ skip → double_conv: inputs d + skip channels, from the deepest
    assert [block[0].in_channels for block in model.decoder] == [16 + 16, 8 + 8, 4 + 4]
    with pytest.raises(CnnkitError, match="unet depth must be at least 1"):
        UNet(2, depth=0)


def test_unpooling_with_other_indices_changes_the_output() -> None:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, depth=2, base=4, upsample="unpool").eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        model.encoder.pool.register_forward_hook(lambda m, i, out: (out[0], torch.zeros_like(out[1])))
        after = model(x)
    assert not torch.allclose(before, after)


def test_unet_on_a_pretrained_encoder() -> None:
    model = create_model("unet", num_classes=3, backbone="efficientnet_lite0.imagenet")
    assert model.encoder_weights == "efficientnet_lite0.imagenet" and model.stride == 32
    assert model.encoder.strides == [2, 4, 8, 16, 32]
    assert model(torch.randn(2, 3, 48, 64)).shape == (2, 3, 48, 64)
    resnet = create_model("unet", num_classes=2, backbone="resnet18", decoder_channels=(32, 16, 8, 8, 8))
    assert resnet.encoder.strides == [2, 4, 8, 16, 32]  # the stem's stride-2 map split from its max pool


def test_weights_of_another_class_count_load_without_the_head(segmenters, tmp_path) -> None:
    segmenters.weights_of_another_class_count("unet", tmp_path)


@pytest.mark.parametrize("name, options, pattern", [
    ("unet", {"upsample": "bilinaer"}, "did you mean 'bilinear'"),
    ("unet", {"backbone": "efficientnet_lite0.imagenett"}, "did you mean"),
    ("unet", {"backbone": "resnet18", "upsample": "unpool"}, "cannot upsample by 'unpool'"),
])
def test_bad_names_raise_with_a_hint(name: str, options: dict, pattern: str) -> None:
    with pytest.raises(CnnkitError, match=pattern):
        create_model(name, num_classes=2, **options)
