"""SegNet (cnnkit.models.segmentation.segnet): the decoder unpools at its encoder's argmax positions, logits keep
the input's size, every upsampling kind fits squares."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.segmentation.segnet import SegNet


@pytest.mark.parametrize("size", [(37, 53), (64, 48)])
@pytest.mark.parametrize("name", ('segnet',))
def test_logits_keep_the_input_size_and_gradients_flow(segmenters, name: str, size: tuple[int, int]) -> None:
    segmenters.shape_and_gradients(name, size)


@pytest.mark.parametrize("name, kind", [("segnet", k) for k in ('unpool', 'transposed', 'bilinear', 'nearest')])
def test_each_upsample_kind_fits_squares(segmenters, name: str, kind: str) -> None:
    segmenters.fits_squares(name, kind)


def test_segnet_unpools_at_the_encoders_argmax_positions() -> None:
    torch.manual_seed(0)
    model = create_model("segnet", num_classes=2, depth=2, width=4).eval()
    pooled, unpooled = [], []
    model.pool.register_forward_hook(lambda m, i, out: pooled.append(out))  # (values, indices) per encoder block
    for up in model.ups:
        up.register_forward_hook(lambda m, i, out: unpooled.append((i[0], i[1], out)))  # (x, indices), output
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 24))
    for (_values, argmax), (x, indices, out) in zip(reversed(pooled), unpooled):
        assert indices is argmax  # the decoder gets the very indices its mirrored encoder pool recorded
        flat = out.flatten(2)  # (N, C, H·W)
        torch.testing.assert_close(flat.gather(2, argmax.flatten(2)), x.flatten(2))  # values at the argmax
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(2, argmax.flatten(2), True)
        assert (flat[~mask] == 0).all()  # and zeros everywhere else


def test_widths_double_per_block_up_to_eight_times_and_depth_is_checked() -> None:
    model = SegNet(2, depth=5, width=4)
    widths = [block[0].out_channels for block in model.encoder]
    assert widths == [4, 8, 16, 32, 32] and model.stride == 32  # min(width·2^i, 8·width)
    assert [sum(isinstance(m, torch.nn.Conv2d) for m in b) for b in model.encoder] == [2, 2, 3, 3, 3]  # VGG-16's
    with pytest.raises(CnnkitError, match="segnet depth must be in 1..5"):
        SegNet(2, depth=6)


@pytest.mark.parametrize("name, options, pattern", [
    ("segnet", {"upsample": "unpoll"}, "did you mean 'unpool'"),
])
def test_bad_names_raise_with_a_hint(name: str, options: dict, pattern: str) -> None:
    with pytest.raises(CnnkitError, match=pattern):
        create_model(name, num_classes=2, **options)
