"""Detection batches: boxes follow the pixels through letterboxing, flips and crops, and map back exactly."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from cnnkit.data.detection.loader import (
    DetectionAugment,
    DetectionDataset,
    MinVisibility,
    RememberArea,
    fit_geometry,
    make_detection_loader,
    to_image_coordinates,
)
from cnnkit.errors import CnnkitError


class _Rectangles:
    """Black images of (h, w) with white rectangles at known boxes (xyxy, exclusive ends)."""

    def __init__(self, h: int, w: int, boxes: list[list[int]]):
        self.h, self.w, self.boxes = h, w, boxes

    def __len__(self) -> int:
        return 4

    def read(self, i: int):
        image = torch.zeros(3, self.h, self.w, dtype=torch.uint8)
        for x1, y1, x2, y2 in self.boxes:
            image[:, y1:y2, x1:x2] = 255
        return image, {"boxes": torch.tensor(self.boxes, dtype=torch.float32),
                       "labels": torch.arange(len(self.boxes))}


def _white_fraction(image: torch.Tensor, box: torch.Tensor, shrink: float = 1.0) -> float:
    x1, y1, x2, y2 = (box + torch.tensor([shrink, shrink, -shrink, -shrink])).round().int().tolist()
    return float(image[0, y1:y2, x1:x2].mean())


@pytest.mark.parametrize("h,w", [(100, 200), (240, 120), (64, 64)])
def test_letterbox_moves_boxes_with_the_pixels_and_maps_back(h: int, w: int) -> None:
    source = _Rectangles(h, w, [[10, 20, 50, 60]])
    image, target = DetectionDataset(source, [0], size=96)[0]
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32 and image.max() <= 1
    box = target["boxes"][0]
    assert _white_fraction(image, box) > 0.95  # the box still frames the white rectangle
    (nh, nw), scale, pad = fit_geometry(h, w, 96, "letterbox")
    assert max(nh, nw) == 96 and abs(nw / nh - w / h) < 0.05  # aspect ratio kept
    back = to_image_coordinates(target["boxes"], target["scale"], target["pad"], h, w)
    assert torch.allclose(back, torch.tensor([[10.0, 20, 50, 60]]), atol=1e-3)


def test_flip_and_iou_crop_keep_boxes_on_their_objects() -> None:
    torch.manual_seed(0)
    source = _Rectangles(120, 160, [[10, 10, 60, 50], [90, 60, 150, 110]])
    dataset = DetectionDataset(source, [0, 1, 2, 3], size=128, augment=DetectionAugment(hflip=0.5, iou_crop=True))
    seen = 0
    for _ in range(10):
        for image, target in (dataset[i] for i in range(4)):
            for box in target["boxes"]:
                assert _white_fraction(image, box, shrink=1.5) > 0.9
                seen += 1
    assert seen > 20


def test_min_visibility_drops_objects_mostly_cropped_away() -> None:
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]]), format="XYXY",
                                     canvas_size=(20, 20))
    _, target = RememberArea()(None, {"boxes": boxes, "labels": torch.tensor([0, 1])})
    target["boxes"] = tv_tensors.wrap(torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 2]]), like=boxes)  # 50 %, 20 % left
    _, kept = MinVisibility(0.3)(None, target)
    assert kept["labels"].tolist() == [0] and "area0" not in kept


def test_loader_batches_and_bad_options() -> None:
    loader = make_detection_loader(_Rectangles(50, 80, [[5, 5, 20, 30]]), [0, 1, 2], size=64, batch_size=2,
                                   train=True, augment="standard")
    batch = next(iter(loader))
    assert batch.images.shape == (2, 3, 64, 64) and len(batch.targets) == 2
    with pytest.raises(CnnkitError, match="did you mean 'standard'"):
        make_detection_loader(_Rectangles(50, 80, []), [0], size=64, batch_size=2, train=True, augment="standart")
    with pytest.raises(CnnkitError, match="split is empty"):
        make_detection_loader(_Rectangles(50, 80, []), [], size=64, batch_size=2, train=False)
