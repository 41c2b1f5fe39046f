"""FitSize, Whiten, channel_stats, augmentation presets, and boxes that move with the image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from cnnkit.data.synthetic import ShapesConfig, make_shapes
from cnnkit.data.transforms import (
    PRESETS,
    Augment,
    FitSize,
    Whiten,
    augment_ops,
    build_transform,
    channel_stats,
    make_augment,
)
from cnnkit.errors import CnnkitError


def random_uint8(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(1, 256, shape, dtype=np.uint8))


# ---------------------------------------------------------------- FitSize

@pytest.mark.parametrize("mode", ["resize", "pad", "crop"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 40, 20), (3, 20, 40), (3, 10, 12), (3, 32, 32), (4, 3, 50, 30)])
def test_fit_size_output_shape(mode, shape):
    out = FitSize(32, mode)(random_uint8(*shape))
    assert tuple(out.shape) == (*shape[:-2], 32, 32) and out.dtype == torch.uint8


def test_fit_size_is_identity_at_the_right_size():
    x = random_uint8(3, 32, 32)
    for mode in ("resize", "pad", "crop"):
        assert torch.equal(FitSize(32, mode)(x), x)


def test_pad_centres_28_in_32_with_zeros():
    x = random_uint8(1, 28, 28)  # values 1..255: no zero inside the image
    out = FitSize(32, "pad")(x)
    expected = torch.zeros(1, 32, 32, dtype=torch.uint8)
    expected[:, 2:30, 2:30] = x
    assert torch.equal(out, expected)


def test_pad_odd_margin():
    x = random_uint8(3, 29, 27)
    out = FitSize(32, "pad")(x)
    top, left = (32 - 29) // 2, (32 - 27) // 2
    assert torch.equal(out[:, top:top + 29, left:left + 27], x)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[top:top + 29, left:left + 27] = True
    assert (out[:, ~inside] == 0).all()


def test_pad_shrinks_a_large_image_keeping_its_aspect():
    x = random_uint8(3, 64, 32)
    out = FitSize(32, "pad")(x)
    expected = v2.functional.resize(x, [32, 16], antialias=True)
    assert torch.equal(out[:, :, 8:24], expected)
    assert (out[:, :, :8] == 0).all() and (out[:, :, 24:] == 0).all()


def test_crop_is_short_side_resize_then_centre_crop():
    x = random_uint8(3, 40, 64)
    resized = v2.functional.resize(x, [32, 51], antialias=True)  # short side 40 → 32, long side 64·32/40 = 51.2
    left = round((51 - 32) / 2)  # torchvision's centre crop rounds the offset (half to even): 10
    assert torch.equal(FitSize(32, "crop")(x), resized[:, :, left:left + 32])


def test_fit_size_unknown_mode():
    with pytest.raises(CnnkitError, match="unknown resize mode 'padd'; did you mean 'pad'"):
        FitSize(32, "padd")


def test_pad_moves_boxes_with_the_image():
    img = tv_tensors.Image(random_uint8(3, 28, 28))
    boxes = tv_tensors.BoundingBoxes([[3, 4, 10, 20]], format="XYXY", canvas_size=(28, 28))
    out_img, out_boxes = FitSize(32, "pad")(img, boxes)
    assert out_img.shape == (3, 32, 32)
    assert out_boxes.tolist() == [[5, 6, 12, 22]] and tuple(out_boxes.canvas_size) == (32, 32)


# ---------------------------------------------------------------- Whiten and channel_stats

def test_whiten_single_image():
    a = np.random.default_rng(0).random((3, 10, 12)) * 0.3 + 0.2
    out = Whiten()(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(out, (a - a.mean()) / a.std(), rtol=1e-10, atol=1e-12)  # numpy's (population) std
    assert abs(out.mean()) < 1e-12 and abs(out.std() - 1) < 1e-12


def test_whiten_batch_is_per_image():
    scale = np.arange(1, 6).reshape(5, 1, 1, 1)
    x = torch.from_numpy(np.random.default_rng(1).random((5, 3, 8, 8)) * scale + scale)  # each image its own level
    out = Whiten()(x)
    for i in range(5):
        a = x[i].numpy()
        np.testing.assert_allclose(out[i].numpy(), (a - a.mean()) / a.std(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out[i], Whiten()(x[i]), rtol=1e-12, atol=1e-12)


def test_whiten_flat_image_floors_the_std():
    """As tf.image.per_image_standardization: std floored at 1/sqrt(n), so a flat image becomes zeros."""
    x = torch.full((1, 4, 4), 0.7, dtype=torch.float64)
    assert torch.equal(Whiten()(x), torch.zeros_like(x))
    y = x.clone()
    y[0, 0, 0] = 0.7 + 1e-6  # std far under 1/sqrt(16): divided by 1/4
    expected = (y - y.mean()) * 4
    torch.testing.assert_close(Whiten()(y), expected)


def test_channel_stats_equal_numpy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 3, 7, 5), dtype=np.uint8)
    x[:, 1] //= 4  # channels with different statistics
    mean, std = channel_stats(torch.from_numpy(x))
    a = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, a.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(std, a.std(axis=(0, 2, 3)), atol=1e-6)
    assert len(mean) == len(std) == 3


def test_channel_stats_of_a_flat_channel_floors_the_std():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    assert channel_stats(x) == ([0.0], [0.001])


# ---------------------------------------------------------------- augmentation

@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels, shape", [(3, (3, 50, 40)), (1, (1, 28, 28))])
def test_presets_build_and_keep_size(preset, channels, shape):
    torch.manual_seed(0)
    aug = make_augment(preset)
    tf = build_transform(32, channels, [0.5] * channels, [0.25] * channels, augment=aug)
    for i in range(5):
        out = tf(random_uint8(*shape, seed=i))
        assert tuple(out.shape) == (channels, 32, 32) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert out.min() >= (0 - 0.5) / 0.25 - 1e-6 and out.max() <= (1 - 0.5) / 0.25 + 1e-6


def test_no_augment_transform_is_fit_then_normalise():
    x = random_uint8(3, 40, 40)
    out = build_transform(32, 3, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3])(x)
    fitted = FitSize(32)(x).double() / 255
    expected = (fitted - torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=1e-6)


def test_whiten_option_in_the_pipeline():
    out = build_transform(16, 1, [0.5], [0.5], whiten=True)(random_uint8(1, 16, 16))
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std(correction=0)) - 1) < 1e-5


def test_make_augment_overrides_and_errors():
    aug = make_augment("light", hflip=0.0, rotation=5.0)
    assert aug == Augment(crop="pad", hflip=0.0, rotation=5.0)
    assert PRESETS["light"].hflip == 0.5  # the preset itself is untouched
    with pytest.raises(CnnkitError, match="unknown augmentation preset 'strnog'; did you mean 'strong'"):
        make_augment("strnog")
    with pytest.raises(CnnkitError, match="unknown augmentation option 'hflp'; did you mean 'hflip'"):
        make_augment("none", hflp=0.5)


def test_bad_crop_value():
    with pytest.raises(CnnkitError, match="crop must be none, pad or resize"):
        augment_ops(Augment(crop="zoom"), 32, 3)


def test_hflip_moves_boxes_x1_becomes_w_minus_x2():
    w, h = 40, 30
    img = tv_tensors.Image(random_uint8(3, h, w))
    boxes = tv_tensors.BoundingBoxes([[3, 4, 10, 20], [0, 0, 40, 30], [25.5, 1, 39, 2]], format="XYXY",
                                     canvas_size=(h, w))
    out_img, out_boxes = v2.RandomHorizontalFlip(p=1)(img, boxes)
    assert torch.equal(out_img, img.flip(-1))
    b = boxes.as_subclass(torch.Tensor)
    expected = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
    torch.testing.assert_close(out_boxes.as_subclass(torch.Tensor), expected)


def test_hflip_keeps_synthetic_boxes_tight_on_flipped_masks():
    images, _, boxes, masks = make_shapes(ShapesConfig(n=12, size=24, seed=4))
    for img, box, mask in zip(images, boxes, masks):
        sample = (tv_tensors.Image(torch.from_numpy(img)),
                  tv_tensors.BoundingBoxes(torch.from_numpy(box)[None], format="XYXY", canvas_size=(24, 24)),
                  tv_tensors.Mask(torch.from_numpy(mask)))
        out_img, out_box, out_mask = v2.RandomHorizontalFlip(p=1)(*sample)
        ys, xs = np.nonzero(out_mask.numpy())
        assert out_box[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert torch.equal(out_img, torch.from_numpy(img).flip(-1))
