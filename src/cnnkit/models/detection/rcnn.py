"""R-CNN (Girshick et al. 2014): selective-search proposals, each warped to a fixed square and run through a
CNN on its own; one-vs-rest linear SVMs on the features, class-specific box regression, NMS.

    model = create_model("rcnn", num_classes=1, backbone="efficientnet_lite0.imagenet")
    losses = model(images, targets)   # {"loss_classifier": SVM hinge + L2, "loss_box_reg": ridge}
    found = model.eval()(images)      # [{"boxes", "scores", "labels"}, ...]

As in the paper:
- each proposal is dilated so that `context` pixels of image surround it once warped (16 at 227 px), then
  warped, anisotropically, to `crop` × `crop` (bilinear, torchvision.ops.roi_align on the image);
- the CNN is an ImageNet classifier, frozen; its last map, averaged over `grid` × `grid` cells and flattened,
  is the feature. R-CNN's fc6/fc7 see pool5's 6 × 6 layout; a global average (grid=1) throws the layout away
  and cannot tell a whole pedestrian from its upper half, so the default keeps 2 × 2 cells. (R-CNN used fc7
  after fine-tuning; cnnkit skips the fine-tuning, the cost of which is the point of the next papers.)
  Features are scaled to L2 norm 20 (the paper's code scales them to a mean norm of 20) and cached on disk
  per image, so the second epoch and `evaluate` do not recompute them;
- one linear SVM per class, trained with hard-negative mining: positives are the true boxes, negatives the
  proposals with IoU < `negative_iou` (the paper's 0.3, chosen by a grid search; 0.5 cost 5 points there, 10
  here) with every true box of the class; of those, each step uses the `hard_negatives` that the current SVM
  scores highest (the ones inside or beyond the margin); hinge loss + `svm_l2` · ‖w‖²/2;
- class-specific box regression (ridge: squared error + `reg_l2` · ‖W‖²/2) of the offsets (t_x, t_y, t_w, t_h)
  from proposals with IoU ≥ 0.6 to their true box;
- at test time every proposal is scored by every SVM and regressed, then per-class NMS at IoU 0.3. The SVM
  margin is reported as a score in (0, 1) through the logistic function (a monotone map: the ranking and so
  the mAP are the margin's).

The SVMs train with cnnkit's optimiser over epochs (the primal SVM problem, as Pegasos solves it) instead of
a batch solver; with cached features an epoch takes seconds.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, roi_align

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import StageFeatures
from cnnkit.models.detection.faster_rcnn import check_inputs
from cnnkit.models.detection.proposals import RegionCache, autocast_of, image_key, module_key
from cnnkit.models.detection.region import CACHED_TRAIN, Proposer, set_thresholds
from cnnkit.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.models.registry import register_model

__all__ = ["RCNN", "rcnn", "warp_regions"]

FEATURE_NORM = 20.0  # R-CNN's code scales the features to this mean L2 norm
REGRESSION_IOU = 0.6  # from this IoU with a true box on, a proposal trains the box regressor


def warp_regions(image: torch.Tensor, boxes: torch.Tensor, crop: int, context: int) -> torch.Tensor:
    """(P, 3, crop, crop): each box (P, 4) xyxy of image (3, H, W), dilated so that `context` pixels of the
    warped crop show its surroundings, warped (bilinear) to crop × crop; outside the image reads as 0."""
    grow = crop / max(crop - 2 * context, 1)  # 227 / 195 for the paper's 16 px of context
    centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) * grow
    grown = torch.cat([centre - size / 2, centre + size / 2], 1)
    return roi_align(image[None], [grown.to(image.dtype)], crop, spatial_scale=1.0, sampling_ratio=2, aligned=True)


class RCNN(nn.Module):
    """See the module docstring. `body`: a frozen StageFeatures (levels=1) of an ImageNet classifier."""

    fp32_modules = ("svm", "regressor")
    unfolded = ("body",)  # batch norms stay unfused at inference: the cached features are keyed by these weights

    def __init__(self, body: StageFeatures, num_classes: int, proposer: Proposer, *, crop: int = 224,
                 context: int = 16, grid: int = 2, hard_negatives: int = 64, negative_iou: float = 0.3,
                 svm_l2: float = 1e-3, reg_l2: float = 1e-2, chunk: int = 64, score_thresh: float = 0.05,
                 nms_thresh: float = 0.3, detections_per_img: int = 100):
        super().__init__()
        self.body, self.proposer, self.num_classes = body.requires_grad_(False), proposer, num_classes
        width = body.out_channels[-1] * grid ** 2  # the last map average-pooled to grid × grid, flattened
        self.svm = nn.Linear(width, num_classes)  # one linear SVM per class: w_c · φ(x) + b_c
        self.regressor = nn.Linear(width, 4 * num_classes)  # (t_x, t_y, t_w, t_h) per class
        nn.init.zeros_(self.regressor.weight)
        nn.init.zeros_(self.regressor.bias)
        self.crop, self.context, self.grid, self.chunk = crop, context, grid, chunk
        self.hard_negatives, self.negative_iou = hard_negatives, negative_iou
        self.svm_l2, self.reg_l2 = svm_l2, reg_l2
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.cache = RegionCache("rcnn_features")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def propose(self, images: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        return [p.to(images[0].device) for p in self.proposer(images)]

    @torch.no_grad()
    def region_features(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(P, D) features of the boxes (P, 4) of image (3, H, W) in [0, 1], L2 norm FEATURE_NORM each."""
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        out = []
        for part in boxes.split(self.chunk):
            crops = warp_regions(x, part, self.crop, self.context)  # (n, 3, crop, crop)
            pooled = F.adaptive_avg_pool2d(self.body(crops)["0"].float(), self.grid)  # (n, C, grid, grid)
            out.append(pooled.flatten(1))  # (n, D = C · grid²)
        features = torch.cat(out) if out else x.new_zeros(0, self.svm.in_features, dtype=torch.float32)
        return FEATURE_NORM * F.normalize(features, dim=1)

    def proposal_features(self, image: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """region_features of the image's proposals, from the disk cache when these weights saw this image."""
        boxes = hashlib.sha256(proposals.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
        cells = () if self.grid == 1 else (self.grid,)  # grid 1 keeps the keys of caches written before `grid`
        key = image_key(image, "rcnn", module_key(self.body), self.crop, self.context, *cells, boxes,
                        autocast_of(image))
        return self.cache.get_or_make(key, lambda: self.region_features(image, proposals).half()).float().to(
            image.device)

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict] | None = None):
        check_inputs(images, targets, self.training)
        self.body.eval()  # frozen, batch norms included, in train mode too
        proposals = self.propose(images)
        features = [self.proposal_features(img, p) for img, p in zip(images, proposals)]
        if self.training:
            return self._losses(images, proposals, features, targets)
        return [self._detect(img, p, f) for img, p, f in zip(images, proposals, features)]

    def _losses(self, images, proposals, features, targets) -> dict[str, torch.Tensor]:
        hinge, regression, n_svm, n_reg = [], [], 0, 0
        for image, boxes, feats, target in zip(images, proposals, features, targets):
            truth, labels = target["boxes"].float().to(boxes), target["labels"].long().to(boxes.device)
            truth_feats = self.region_features(image, truth) if len(truth) else feats[:0]
            h, n = self._svm_terms(feats, self.svm(feats), self.svm(truth_feats), boxes, truth, labels)
            hinge.append(h)
            n_svm += n
            r, m = self._regression_terms(feats, boxes, truth, labels)
            regression.append(r)
            n_reg += m
        w_svm, w_reg = self.svm.weight, self.regressor.weight
        svm = torch.stack(hinge).sum() / max(n_svm, 1) + self.svm_l2 / 2 * w_svm.pow(2).sum()
        reg = torch.stack(regression).sum() / max(n_reg, 1) + self.reg_l2 / 2 * w_reg.pow(2).sum()
        return {"loss_classifier": svm, "loss_box_reg": reg}

    def _svm_terms(self, feats, scores, truth_scores, boxes, truth, labels) -> tuple[torch.Tensor, int]:
        """(summed hinge losses, examples) of one image: its true boxes as positives, and per class the
        `hard_negatives` highest-scoring proposals with IoU < 0.3 with every true box of that class."""
        total, count = scores.sum() * 0.0, 0
        iou = box_iou(boxes, truth) if len(truth) else boxes.new_zeros(len(boxes), 0)  # (P, K)
        for c in range(self.num_classes):
            own = labels == c
            positives = truth_scores[own, c]
            near = iou[:, own].max(1).values if bool(own.any()) else boxes.new_zeros(len(boxes))
            negatives = scores[near < self.negative_iou, c]
            hard = negatives.topk(min(self.hard_negatives, len(negatives))).values  # the mined ones
            total = total + F.relu(1 - positives).sum() + F.relu(1 + hard).sum()
            count += len(positives) + len(hard)
        return total, count

    def _regression_terms(self, feats, boxes, truth, labels) -> tuple[torch.Tensor, int]:
        """(summed squared errors of the offsets, examples): proposals with IoU ≥ 0.6 with a true box."""
        if not len(truth):
            return feats.sum() * 0.0, 0
        best, which = box_iou(boxes, truth).max(1)  # (P,)
        keep = best >= REGRESSION_IOU
        if not bool(keep.any()):
            return feats.sum() * 0.0, 0
        target = self.coder.encode_single(truth[which[keep]], boxes[keep])  # (n, 4)
        offsets = self.regressor(feats[keep]).view(-1, self.num_classes, 4)  # (n, C, 4)
        picked = offsets[torch.arange(len(target)), labels[which[keep]]]
        return (picked - target).pow(2).sum(), int(keep.sum())

    @torch.no_grad()
    def _detect(self, image: torch.Tensor, boxes: torch.Tensor, feats: torch.Tensor) -> dict:
        c = self.num_classes
        scores = torch.sigmoid(self.svm(feats))  # (P, C)
        offsets = self.regressor(feats).view(-1, 4)  # (P · C, 4)
        moved = self.coder.decode_single(offsets, boxes.repeat_interleave(c, 0))  # (P · C, 4)
        moved = clip_boxes_to_image(moved, tuple(image.shape[-2:]))
        scores, labels = scores.reshape(-1), torch.arange(c, device=boxes.device).repeat(len(boxes))
        keep = (scores > self.score_thresh) & ((moved[:, 2:] - moved[:, :2]) > 1).all(1)
        moved, scores, labels = moved[keep], scores[keep], labels[keep]
        kept = batched_nms(moved, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": moved[kept], "scores": scores[kept], "labels": labels[kept]}

    def set_postprocess(self, *, score_thresh: float | None = None, nms_thresh: float | None = None,
                        detections_per_img: int | None = None) -> None:
        set_thresholds(self, score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)


@register_model("rcnn", task="detect", paper="Girshick et al. 2014 (R-CNN)", head=("svm", "regressor"),
                input_size=(3, 384, 384), train=CACHED_TRAIN)
def rcnn(*, num_classes: int = 20, in_channels: int = 3, backbone: str = "resnet18",
         backbone_weights: str | Path | None = None, crop: int = 224, context: int = 16, grid: int = 2,
         proposals: int = 2000, search: str = "fast", hard_negatives: int = 64, negative_iou: float = 0.3,
         svm_l2: float = 1e-3, reg_l2: float = 1e-2, score_thresh: float = 0.05, nms_thresh: float = 0.3,
         detections_per_img: int = 100) -> nn.Module:
    """R-CNN on a frozen registry `backbone` (e.g. 'efficientnet_lite0.imagenet', 'resnet18.imagenet'):
    `proposals` selective-search boxes (`search` mode) per image, each dilated by `context` px and warped to
    `crop` px, one SVM per class trained with `hard_negatives` mined per class and image, ridge box regression,
    NMS at `nms_thresh`. See the module docstring."""
    if in_channels != 3:
        raise CnnkitError(f"rcnn takes RGB images (in_channels=3), got in_channels={in_channels}")
    if crop < 32 or not 0 <= 2 * context < crop:
        raise CnnkitError(f"crop must be at least 32 px and context under crop / 2, got crop={crop}, "
                          f"context={context}")
    if proposals < 1 or hard_negatives < 1 or grid < 1:
        raise CnnkitError(f"proposals, hard_negatives and grid must be at least 1, got {proposals}, "
                          f"{hard_negatives}, {grid}")
    if not 0 < negative_iou <= 1:
        raise CnnkitError(f"negative_iou must be in (0, 1] (the paper's 0.3), got {negative_iou}")
    body = StageFeatures.from_registry(backbone, weights=backbone_weights, levels=1, trainable_layers=0)
    return RCNN(body, num_classes, Proposer(search, proposals), crop=crop, context=context, grid=grid,
                hard_negatives=hard_negatives, negative_iou=negative_iou, svm_l2=svm_l2, reg_l2=reg_l2,
                score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
