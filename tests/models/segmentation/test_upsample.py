"""What every segmentation net shares (cnnkit.models.segmentation.upsample): pad to the stride and crop back, the
bilinear kernel of FCN's transposed convolutions, and each kind of Up to the asked size."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnkit.errors import CnnkitError
from cnnkit.models.segmentation.upsample import Up, bilinear_kernel, check_upsample, crop, pad_to_multiple


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


@pytest.mark.parametrize("kind", ["nearest", "bilinear", "transposed"])
def test_up_reaches_the_factor_or_the_asked_size(kind: str) -> None:
    up = Up(kind, 6, 4, factor=4)
    x = torch.randn(2, 6, 3, 5)
    assert up(x).shape == (2, 4, 12, 20)
    assert up(x, size=(13, 21)).shape == (2, 4, 13, 21)  # odd sizes of a padded encoder map


def test_nearest_up_repeats_each_value() -> None:
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    torch.testing.assert_close(Up("nearest", 1, 1, 2)(x), x.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_unpool_puts_values_back_at_the_argmax() -> None:
    x = torch.randn(1, 2, 4, 6)
    pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    out = Up("unpool", 2, 2)(pooled, indices)
    torch.testing.assert_close(out, torch.where(out != 0, x, torch.zeros_like(x)))
    assert int((out != 0).sum()) == pooled.numel()
    with pytest.raises(CnnkitError, match="needs the encoder's max-pooling indices"):
        Up("unpool", 2, 2)(pooled)
    with pytest.raises(CnnkitError, match="not 4"):
        Up("unpool", 2, 2, factor=4)


def test_bilinear_kernel_is_the_fcn_filler() -> None:
    k = bilinear_kernel(2, 4)
    row = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(k[0, 0], row[:, None] * row[None, :])
    assert k[0, 1].abs().sum() == 0 and k[1, 0].abs().sum() == 0  # no mixing across channels


def test_check_upsample_names_what_a_model_allows() -> None:
    assert check_upsample("bilinear", ("bilinear",), "m") == "bilinear"
    with pytest.raises(CnnkitError, match="m cannot upsample by 'unpool'.*own encoder"):
        check_upsample("unpool", ("bilinear", "nearest"), "m")
    with pytest.raises(CnnkitError, match="did you mean 'nearest'"):
        check_upsample("nearst", ("bilinear", "nearest"), "m")
