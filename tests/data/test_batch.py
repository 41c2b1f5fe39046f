"""The Batch (cnnkit.data.batch): its length, and `to` / `pin_memory` reaching every tensor of nested targets
while keeping their structure and leaving non-tensors alone."""
from __future__ import annotations

import pytest
import torch

from cnnkit.data.batch import Batch


def _detection_batch() -> Batch:
    targets = [{"boxes": torch.rand(2, 4), "labels": torch.tensor([0, 1]), "name": "a"},
               {"boxes": torch.rand(0, 4), "labels": torch.zeros(0, dtype=torch.long), "name": "b"}]
    return Batch(torch.rand(2, 3, 8, 8), targets, torch.tensor([1.0, 0.5]))


def test_len_is_the_number_of_images() -> None:
    assert len(Batch(torch.zeros(5, 1, 4, 4), torch.zeros(5))) == 5


def test_to_moves_nested_targets_and_keeps_their_structure() -> None:
    batch = _detection_batch()
    moved = batch.to(torch.device("meta"))  # another device on any machine
    assert moved.images.device.type == "meta" and moved.weights.device.type == "meta"
    assert isinstance(moved.targets, list) and len(moved.targets) == 2
    for before, after in zip(batch.targets, moved.targets):
        assert set(after) == {"boxes", "labels", "name"} and after["name"] == before["name"]
        assert after["boxes"].device.type == "meta" and after["boxes"].shape == before["boxes"].shape
        assert after["labels"].dtype == torch.int64
    as_tuple = Batch(torch.zeros(1, 1, 2, 2), (torch.zeros(1), [torch.ones(1)])).to(torch.device("meta"))
    assert isinstance(as_tuple.targets, tuple) and isinstance(as_tuple.targets[1], list)
    assert as_tuple.targets[1][0].device.type == "meta" and Batch(torch.zeros(1, 1, 1, 1)).to("meta").targets is None


def test_to_the_same_device_keeps_the_values() -> None:
    batch = _detection_batch()
    same = batch.to(torch.device("cpu"))
    assert torch.equal(same.images, batch.images) and torch.equal(same.targets[0]["boxes"], batch.targets[0]["boxes"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs an accelerator")
def test_pin_memory_pins_every_tensor() -> None:
    pinned = _detection_batch().pin_memory()
    assert pinned.images.is_pinned() and pinned.weights.is_pinned()
    assert all(t["boxes"].is_pinned() and t["labels"].is_pinned() for t in pinned.targets)
