"""Segmentation batches: masks keep their values through resizing and augmentation, and move with the image."""
from __future__ import annotations

import pytest
import torch

from cnnkit.data.segmentation.loader import (
    SegmentationAugment,
    SegmentationDataset,
    collate_segmentation,
    fit_image,
    make_segmentation_loader,
    source_mean_std,
)
from cnnkit.errors import CnnkitError

LEVEL = 60  # an image's grey level is LEVEL × its pixel's class: the pixels say which class they show
ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


class _Regions:
    """Items of (h, w) with class regions (0 top-left, 1 right third, 2 a lower-left block), grey = LEVEL × class."""

    def __init__(self, shapes: list[tuple[int, int]], ignore_index: int = 255):
        self.shapes, self.ignore_index = shapes, ignore_index

    def __len__(self) -> int:
        return len(self.shapes)

    def read(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.shapes[i]
        mask = torch.zeros(h, w, dtype=torch.int64)
        mask[:, 2 * w // 3:] = 1
        mask[h // 2:, : w // 3] = 2
        mask[0, 0] = self.ignore_index
        image = (mask.clamp(max=3) * LEVEL).to(torch.uint8).expand(3, h, w).clone()
        return image, mask


def _agreement(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of labelled pixels whose grey level says the mask's class (mean 0, std 1: image = grey / 255)."""
    said = (image[0] * 255 / LEVEL).round().long()
    valid = mask != 255
    return float((said[valid] == mask[valid]).float().mean())


def test_loader_fits_the_longer_side_and_keeps_the_aspect() -> None:
    loader = make_segmentation_loader(_Regions([(40, 20)] * 3), [0, 1, 2], size=32, batch_size=2, train=False,
                                      mean=ZERO, std=ONE)
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 1]
    images, targets = batches[0].images, batches[0].targets
    assert images.shape == (2, 3, 32, 16) and images.dtype == torch.float32 and targets.shape == (2, 32, 16)
    assert targets.dtype == torch.int64 and _agreement(images[0], targets[0]) > 0.9


@pytest.mark.parametrize("augment", ["none", "light", "standard"])
def test_masks_gain_no_new_values(augment: str) -> None:
    torch.manual_seed(0)
    loader = make_segmentation_loader(_Regions([(37, 23), (19, 41)]), [0, 1], size=29, batch_size=2, train=True,
                                      augment=augment, mean=ZERO, std=ONE)
    for _ in range(3):
        for batch in loader:
            assert set(batch.targets.unique().tolist()) <= {0, 1, 2, 255}


def test_flip_moves_image_and_mask_together() -> None:
    source = _Regions([(24, 30)])
    plain = SegmentationDataset(source, [0], 30, None, ZERO, ONE)[0]
    flipped = SegmentationDataset(source, [0], 30, SegmentationAugment(hflip=1.0), ZERO, ONE)[0]
    assert torch.equal(flipped[1], plain[1].flip(-1)) and torch.allclose(flipped[0], plain[0].flip(-1))
    upside = SegmentationDataset(source, [0], 30, SegmentationAugment(vflip=1.0), ZERO, ONE)[0]
    assert torch.equal(upside[1], plain[1].flip(-2))


def test_scale_jitter_crops_image_and_mask_alike_and_keeps_the_size() -> None:
    torch.manual_seed(1)
    dataset = SegmentationDataset(_Regions([(48, 64)]), [0], 32, SegmentationAugment(scale=(0.3, 0.6)), ZERO, ONE)
    for _ in range(5):
        image, mask = dataset[0]
        assert image.shape == (3, 24, 32) and mask.shape == (24, 32)
        assert _agreement(image, mask) > 0.85  # only resampled edges may disagree


def test_collate_pads_images_with_zero_and_masks_with_ignore_index() -> None:
    loader = make_segmentation_loader(_Regions([(20, 10), (10, 20)], ignore_index=200), [0, 1], size=16,
                                      batch_size=2, train=False, mean=ZERO, std=ONE)
    batch = next(iter(loader))
    assert batch.images.shape == (2, 3, 16, 16) and batch.targets.shape == (2, 16, 16)
    assert (batch.targets[0, :, 8:] == 200).all() and (batch.images[0, :, :, 8:] == 0).all()
    assert (batch.targets[1, 8:] == 200).all() and (batch.targets[1, :8] != 200).any()
    items = [(torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.int64)), (torch.ones(3, 4, 1),
             torch.ones(4, 1, dtype=torch.int64))]
    batch = collate_segmentation(items, ignore_index=7)
    assert batch.targets[0, 2:].eq(7).all() and batch.targets[1, :, 1:].eq(7).all()
    assert batch.images[1, :, :, 1:].eq(0).all()


def test_normalisation_and_mean_std() -> None:
    source = _Regions([(12, 12)] * 4)
    mean, std = source_mean_std(source, [0, 1, 2, 3])
    image, _ = source.read(0)
    x = image.double() / 255
    assert mean == pytest.approx([float(x[c].mean()) for c in range(3)])
    assert std == pytest.approx([float(x[c].std(unbiased=False)) for c in range(3)])
    normalised = SegmentationDataset(source, [0], 12, None, mean, std)[0][0]
    assert normalised.mean().abs() < 1e-4 and (normalised.std(unbiased=False) - 1).abs() < 1e-3


def test_fit_image_and_errors() -> None:
    out = fit_image(torch.zeros(3, 30, 90, dtype=torch.uint8), 45)
    assert out.shape == (3, 15, 45) and out.dtype == torch.uint8
    with pytest.raises(CnnkitError, match="did you mean 'standard'"):
        make_segmentation_loader(_Regions([(8, 8)]), [0], size=8, batch_size=1, train=True, augment="standrd",
                                 mean=ZERO, std=ONE)
    with pytest.raises(CnnkitError, match="empty"):
        make_segmentation_loader(_Regions([(8, 8)]), [], size=8, batch_size=1, train=True, mean=ZERO, std=ONE)


def test_shuffle_order_follows_the_seed() -> None:
    def first(seed: int) -> torch.Tensor:
        shapes = [(8 + i, 8) for i in range(8)]
        loader = make_segmentation_loader(_Regions(shapes), range(8), size=16, batch_size=8, train=True,
                                          mean=ZERO, std=ONE, seed=seed)
        return (next(iter(loader)).targets != 255).sum(dim=(1, 2))  # each item's size tells which it is

    assert torch.equal(first(3), first(3)) and not torch.equal(first(3), first(4))
