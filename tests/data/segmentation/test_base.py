"""SegmentationSource (cnnkit.data.segmentation.base): the reader's arrays become (uint8 (3, H, W), int64 (H, W))
tensors with the same values, read-only arrays are copied, and indices are range-checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit.data.segmentation.base import SegmentationSource


def _source(images, masks) -> SegmentationSource:
    return SegmentationSource("t", ["a", "b"], [(0, 0, 0), (255, 0, 0)], lambda i: (images[i], masks[i]), len(images),
                              paths=None)


def test_read_turns_hwc_arrays_into_chw_tensors_with_the_same_values() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    mask = rng.integers(0, 2, (5, 7)).astype(np.uint8)
    got_image, got_mask = _source([image], [mask]).read(0)
    assert got_image.shape == (3, 5, 7) and got_image.dtype == torch.uint8
    assert got_mask.shape == (5, 7) and got_mask.dtype == torch.int64
    np.testing.assert_array_equal(got_image.permute(1, 2, 0).numpy(), image)
    np.testing.assert_array_equal(got_mask.numpy(), mask)


def test_read_only_arrays_and_tensor_images_are_accepted() -> None:
    image, mask = np.zeros((4, 4, 3), dtype=np.uint8), np.ones((4, 4), dtype=np.int64)
    image.flags.writeable = mask.flags.writeable = False  # e.g. np.asarray of a PIL image
    got_image, got_mask = _source([image], [mask]).read(0)
    got_mask += 1  # a writable copy, the source's array untouched
    assert (mask == 1).all() and (got_mask == 2).all() and got_image.shape == (3, 4, 4)
    tensor = torch.full((3, 4, 4), 9, dtype=torch.uint8)
    assert _source([tensor], [mask]).read(0)[0] is tensor  # (3, H, W) tensors pass through


def test_out_of_range_index_and_paths() -> None:
    source = _source([np.zeros((2, 2, 3), dtype=np.uint8)] * 2, [np.zeros((2, 2))] * 2)
    assert len(source) == 2 and source.ignore_index == 255 and source.path(0) is None
    with pytest.raises(IndexError, match="item 2 out of range 0..1"):
        source.read(2)
    with pytest.raises(IndexError):
        source.read(-1)
