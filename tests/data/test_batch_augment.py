"""Batched augmentation (cnnkit.data.batch_augment) against torchvision.transforms.v2's functional results with
each knob fixed through Params, the per-sample distributions against v2's own parameter draws, and masks and
boxes moved with the images."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from cnnkit.data.batch_augment import BatchAugment, Params, geometry
from cnnkit.data.transforms import Augment, Whiten, make_augment
from cnnkit.errors import CnnkitError

S = 32


def images(n: int = 4, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, S, S), dtype=torch.uint8, generator=g)  # (N, C, S, S)


def plain(aug: Augment, channels: int = 3) -> BatchAugment:
    """No normalisation (mean 0, std 1): outputs are the augmented pixels in [0, 1]."""
    return BatchAugment(aug, S, channels, [0.0] * channels, [1.0] * channels)


def as_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


def test_flips_with_probability_one_are_v2_flips_exactly() -> None:
    x = images()
    torch.testing.assert_close(as_uint8(plain(Augment(hflip=1.0))(x)), TF.horizontal_flip(x), rtol=0, atol=0)
    torch.testing.assert_close(as_uint8(plain(Augment(vflip=1.0))(x)), TF.vertical_flip(x), rtol=0, atol=0)


def test_pad_crop_is_v2_reflect_pad_then_crop_exactly() -> None:
    x, aug = images(), plain(Augment(crop="pad"))
    pad = aug.pad  # 12.5 % of 32
    p = Params.identity(4, S)
    p.box[:, 0] = torch.tensor([-pad, 0.0, 3.0, pad])  # left offsets within [-pad, pad]
    p.box[:, 1] = torch.tensor([1.0, -pad, pad, -2.0])
    p.hflip = torch.tensor([True, False, True, False])
    out = as_uint8(aug.apply(x, p))
    for n in range(4):
        ref = TF.crop(TF.pad(x[n], [pad] * 4, padding_mode="reflect"), int(p.box[n, 1]) + pad,
                      int(p.box[n, 0]) + pad, S, S)
        ref = TF.horizontal_flip(ref) if p.hflip[n] else ref
        assert torch.equal(out[n], ref)
    # the resampling path (used once rotation or scale join in) gives the same pixels at whole-pixel shifts
    resampled = aug._resample(x.float() / 255, p, "bilinear")
    torch.testing.assert_close(resampled, out.float() / 255, atol=1e-5, rtol=0)


def test_resized_crop_matches_v2_resized_crop() -> None:
    x, aug = images(2), plain(Augment(crop="resize"))
    p = Params.identity(2, S)
    p.box = torch.tensor([[3.0, 5.0, 20.0, 17.0], [0.0, 10.0, 32.0, 22.0]], dtype=torch.float64)  # x0, y0, w, h
    out = aug.apply(x, p)
    for n in range(2):
        x0, y0, w, h = (int(v) for v in p.box[n])
        ref = TF.resized_crop(x[n].float() / 255, y0, x0, h, w, [S, S], antialias=True)
        diff = (out[n] - ref).abs()
        # one resampling of the whole image reads the crop's neighbours at its border, v2 repeats the crop's edge
        assert diff[:, 1:-1, 1:-1].max() < 1e-5 and diff.mean() < 0.02


def test_rotation_scale_translation_match_v2_affine() -> None:
    x, aug = images(3), plain(Augment(rotation=30.0, scale=0.2, translate=0.1))
    p = Params.identity(3, S)
    p.angle = torch.tensor([25.0, -10.0, 0.0], dtype=torch.float64)
    p.scale = torch.tensor([1.1, 0.85, 1.0], dtype=torch.float64)
    p.shift = torch.tensor([[3.0, -2.0], [0.0, 1.0], [-3.0, 0.0]], dtype=torch.float64)
    out = aug.apply(x, p)
    for n in range(3):
        ref = TF.affine(x[n].float() / 255, angle=float(p.angle[n]), translate=p.shift[n].tolist(),
                        scale=float(p.scale[n]), shear=[0.0, 0.0], interpolation=v2.InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[n], ref, atol=1e-5, rtol=0)


def test_geometry_forward_and_inverse_compose_to_the_identity() -> None:
    aug = make_augment("strong", vflip=0.5, translate=0.1)
    torch.manual_seed(1)
    p = BatchAugment(aug, S, 3, [0.0] * 3, [1.0] * 3).sample(64)
    forward, inverse = geometry(p, S)
    torch.testing.assert_close(forward @ inverse, torch.eye(3, dtype=torch.float64).expand(64, 3, 3))


@pytest.mark.parametrize("channels", [3, 1])
def test_colour_jitter_is_v2_brightness_contrast_saturation_in_each_samples_order(channels: int) -> None:
    x, aug = images(3, channels), plain(Augment(jitter=0.4), channels)
    p = Params.identity(3, S)
    p.jitter = torch.tensor([[1.3, 0.7, 1.2], [0.8, 1.35, 0.65], [1.1, 1.2, 0.9]])
    p.order = torch.tensor([[0, 1, 2], [2, 1, 0], [1, 2, 0]])
    out = aug.apply(x, p)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation]
    for n in range(3):
        ref = x[n].float() / 255
        for k in p.order[n].tolist():
            if k == 2 and channels == 1:
                continue  # ColorJitter has no saturation for grey images
            ref = ops[k](ref, float(p.jitter[n, k]))
        torch.testing.assert_close(out[n], ref, atol=1e-5, rtol=0)


def test_erasing_zeroes_the_rectangle_after_normalising() -> None:
    x = images(2)
    aug = BatchAugment(Augment(erasing=1.0), S, 3, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    p = Params.identity(2, S)
    p.erase = torch.tensor([[4, 6, 10, 5], [0, 0, 0, 0]])  # top, left, h, w; h = 0: nothing
    out = aug.apply(x, p)
    normalised = TF.normalize(x.float() / 255, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    ref = normalised.clone()
    ref[0] = TF.erase(normalised[0], 4, 6, 10, 5, torch.tensor(0.0))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_no_augmentation_only_converts_and_normalises_or_whitens() -> None:
    x = images(5)
    out = BatchAugment(None, S, 3, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])(x)
    torch.testing.assert_close(out, TF.normalize(x.float() / 255, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]))
    out = BatchAugment(None, S, 3, [0.0] * 3, [1.0] * 3, whiten=True)(x)
    torch.testing.assert_close(out, Whiten()(x.float() / 255))


def test_parameters_differ_across_the_batch_with_v2s_distributions() -> None:
    torch.manual_seed(0)
    n = 4000
    p = BatchAugment(make_augment("strong"), S, 3, [0.0] * 3, [1.0] * 3).sample(n)
    assert 0.45 < p.hflip.float().mean() < 0.55 and not p.vflip.any()
    area = p.box[:, 2] * p.box[:, 3] / S**2
    ratio = p.box[:, 2] / p.box[:, 3]
    assert area.min() >= 0.3 and area.max() <= 1.0 and ratio.min() >= 0.7 and ratio.max() <= 1.4
    assert (p.box[:, :2] >= 0).all() and (p.box[:, :2] + p.box[:, 2:] <= S).all()
    ref = torch.tensor([v2.RandomResizedCrop.get_params(torch.zeros(3, S, S), [0.35, 1.0], [3 / 4, 4 / 3])
                        for _ in range(n)], dtype=torch.float64)  # (i, j, h, w) as v2 draws them
    ref_area = ref[:, 2] * ref[:, 3] / S**2
    assert abs(float(area.mean() - ref_area.mean())) < 0.02 and abs(float(area.std() - ref_area.std())) < 0.02
    assert (p.angle.abs() <= 15).all() and p.angle.std() > 7 and ((p.scale - 1).abs() <= 0.1).all()
    assert ((p.jitter - 1).abs() <= 0.4 + 1e-6).all() and len({tuple(o) for o in p.order.tolist()}) == 6
    erased = (p.erase[:, 2] > 0).float().mean()
    assert 0.2 < erased < 0.3  # p 0.25 (nearly every draw fits)
    frac = (p.erase[:, 2] * p.erase[:, 3]).float()[p.erase[:, 2] > 0] / S**2
    assert frac.min() >= 0.015 and frac.max() <= 0.36


def test_pad_crop_offsets_are_uniform_and_images_differ_across_the_batch() -> None:
    torch.manual_seed(0)
    aug = plain(make_augment("light"))
    p = aug.sample(3000)
    counts = torch.bincount(p.box[:, 0].long() + aug.pad)  # left offsets in [-4, 4]: 9 values
    assert len(counts) == 2 * aug.pad + 1 and counts.min() > 3000 / 9 * 0.75
    same = images(1).expand(16, -1, -1, -1)
    out = aug(same)
    assert len({out[i].numpy().tobytes() for i in range(16)}) > 8


def test_same_seed_same_batch() -> None:
    aug, x = BatchAugment(make_augment("strong"), S, 3, [0.5] * 3, [0.2] * 3), images(8)
    torch.manual_seed(5)
    first = aug(x)
    torch.manual_seed(5)
    assert torch.equal(first, aug(x))


def test_masks_move_with_the_images_and_hold_only_their_values_or_the_ignore_index() -> None:
    masks = torch.randint(0, 4, (6, S, S))
    masks[:, :8] = 7  # (N, S, S) values 0..3 and 7
    torch.manual_seed(0)
    aug = BatchAugment(make_augment("strong", translate=0.1), S, 1, [0.0], [1.0])
    moved = aug.masks(masks, aug.sample(6), ignore_index=255)
    assert set(moved.unique().tolist()) <= {0, 1, 2, 3, 7, 255} and (moved == 255).any()
    flip = BatchAugment(Augment(hflip=1.0), S, 1, [0.0], [1.0])
    assert torch.equal(flip.masks(masks, flip.sample(6)), TF.horizontal_flip(masks))
    # the same draws move an image and its mask alike: a mask made of the image's own pixels follows them
    x = images(6, 1)
    pad = BatchAugment(Augment(crop="pad", vflip=0.5), S, 1, [0.0], [1.0])
    p = pad.sample(6)
    assert torch.equal(pad.masks(x[:, 0].long(), p), as_uint8(pad.apply(x, p))[:, 0].long())


def test_boxes_follow_a_flip_exactly_and_crops_like_v2() -> None:
    boxes = [torch.tensor([[2.0, 3.0, 10.0, 12.0], [20.0, 0.0, 32.0, 5.5]]), torch.zeros(0, 4)]
    flip = BatchAugment(Augment(hflip=1.0), S, 3, [0.0] * 3, [1.0] * 3)
    moved, kept = flip.boxes(boxes, flip.sample(2))
    assert torch.equal(moved[0], torch.tensor([[22.0, 3.0, 30.0, 12.0], [0.0, 0.0, 12.0, 5.5]]))
    assert moved[1].shape == (0, 4) and kept[0].all()
    ref = TF.horizontal_flip(tv_tensors.BoundingBoxes(boxes[0], format="XYXY", canvas_size=(S, S)))
    assert torch.equal(moved[0], ref.as_subclass(torch.Tensor))
    crop = BatchAugment(Augment(crop="resize"), S, 3, [0.0] * 3, [1.0] * 3)
    p = Params.identity(1, S)
    p.box[0] = torch.tensor([16.0, 0.0, 16.0, 16.0])  # the top-right quarter, doubled
    moved, kept = crop.boxes(boxes[:1], p)
    assert kept[0].tolist() == [False, True]  # the first box lies outside the crop and is dropped
    ref = TF.resized_crop(tv_tensors.BoundingBoxes(boxes[0][1:], format="XYXY", canvas_size=(S, S)), 0, 16, 16, 16,
                          [S, S])
    torch.testing.assert_close(moved[0], ref.as_subclass(torch.Tensor))


def test_rotated_boxes_are_the_bounding_box_of_their_corners() -> None:
    aug = BatchAugment(Augment(rotation=90.0), S, 3, [0.0] * 3, [1.0] * 3)
    p = Params.identity(1, S)
    p.angle[0] = 90.0
    moved, _ = aug.boxes([torch.tensor([[4.0, 8.0, 12.0, 10.0]])], p)
    ref = TF.affine(tv_tensors.BoundingBoxes([[4.0, 8.0, 12.0, 10.0]], format="XYXY", canvas_size=(S, S)),
                    angle=90.0, translate=[0, 0], scale=1.0, shear=[0.0, 0.0])
    torch.testing.assert_close(moved[0], ref.as_subclass(torch.Tensor), atol=1e-4, rtol=0)
    assert math.isclose(float(moved[0][0, 2] - moved[0][0, 0]), 2.0, abs_tol=1e-6)  # 8×2 becomes 2×8


def test_a_batch_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(CnnkitError, match="expects"):
        plain(Augment(hflip=0.5))(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(CnnkitError, match="crop must be"):
        plain(Augment(crop="zoom"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augments_on_the_gpu_like_on_the_cpu() -> None:
    aug, x = BatchAugment(make_augment("strong"), S, 3, [0.5] * 3, [0.2] * 3), images(8)
    p = aug.sample(8)
    torch.testing.assert_close(aug.apply(x.cuda(), p).cpu(), aug.apply(x, p), atol=1e-4, rtol=0)
