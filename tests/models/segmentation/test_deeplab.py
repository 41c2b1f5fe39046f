"""DeepLabv3 (cnnkit.models.segmentation.deeplab): the output stride kept by dilation, the ASPP head's shapes
and rates, logits at the input's size, both upsampling kinds fit squares."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.segmentation.deeplab import RATES, deeplab_head


@pytest.mark.parametrize("size", [(37, 53), (64, 48)])
@pytest.mark.parametrize("name", ('deeplabv3',))
def test_logits_keep_the_input_size_and_gradients_flow(segmenters, name: str, size: tuple[int, int]) -> None:
    segmenters.shape_and_gradients(name, size)


@pytest.mark.parametrize("name, kind", [(n, k) for n in ('deeplabv3',) for k in ('bilinear', 'nearest')])
def test_each_upsample_kind_fits_squares(segmenters, name: str, kind: str) -> None:
    segmenters.fits_squares(name, kind)


def test_deeplabv3_output_stride_and_head() -> None:
    model = create_model("deeplabv3", num_classes=4, backbone="resnet18", output_stride=8, aspp_channels=8)
    assert model.stride == 8 and model.classifier[4].out_channels == 4
    assert model(torch.randn(2, 3, 20, 28)).shape == (2, 4, 20, 28)
    with pytest.raises(CnnkitError, match="output_stride"):
        create_model("deeplabv3", backbone="vgg11", output_stride=16)


def test_aspp_head_keeps_the_map_size_and_uses_the_rates() -> None:
    head = deeplab_head(32, 5, RATES[16], channels=8).eval()
    with torch.no_grad():
        assert head(torch.randn(2, 32, 6, 9)).shape == (2, 5, 6, 9)
    dilations = [m.dilation for m in head[0].modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert dilations[:3] == [(6, 6), (12, 12), (18, 18)]  # the paper's rates at output stride 16
    assert RATES[8] == tuple(2 * r for r in RATES[16])


@pytest.mark.parametrize("name, options, pattern", [
    ("deeplabv3", {"backbone": "resnet5O"}, "did you mean"),
    ("deeplabv3", {"upsample": "transposed"}, "deeplabv3 cannot upsample by 'transposed'; choose one of: bilinear"),
    ("deeplabv3", {"upsample": "bilinar"}, "did you mean 'bilinear'"),
])
def test_bad_names_raise_with_a_hint(name: str, options: dict, pattern: str) -> None:
    with pytest.raises(CnnkitError, match=pattern):
        create_model(name, num_classes=2, **options)
