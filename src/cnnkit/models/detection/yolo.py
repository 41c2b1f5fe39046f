"""A YOLO-style single-stage detector on a registry backbone, written on torchvision.ops.

head="v1" (Redmon et al. 2016): the image is an S×S grid; each cell predicts B boxes (x, y within the cell,
√w, √h of the image, confidence = Pr(object)·IoU) and one set of C class probabilities. The paper's two FC
layers are replaced by convolutions on the backbone's last map pooled to S×S, so any image size works.
Loss: sum-squared error with λ_coord = 5, λ_noobj = 0.5; the predictor responsible for an object is the one
of its cell with the highest IoU with it.

head="anchor-free" (FCOS, Tian et al. 2019; YOLOX's anchor-free idea): every location of a small feature
pyramid (strides 8, 16, 32) predicts its distances to the box sides (l, t, r, b), a centerness that plays
the objectness role, and C class scores. A location is positive for a ground-truth box it lies in and
within `center_radius` strides of its centre; the smallest such box wins. Losses: sigmoid focal loss for
the classes, GIoU for the boxes, BCE for the centerness.

Both resize each image to image_size × image_size (or letterbox it) and normalise inside forward, and map
the detections back to the input image's pixels.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import (
    FeaturePyramidNetwork,
    batched_nms,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
)

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.detection.backbones import StageFeatures
from cnnkit.models.detection.faster_rcnn import check_inputs
from cnnkit.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.models.registry import register_model

__all__ = ["HEADS", "YOLO", "V1Head", "AnchorFreeHead", "yolo_v1_loss", "yolo"]

HEADS = ("v1", "anchor-free")
Detections = list[dict[str, torch.Tensor]]


def yolo_v1_loss(pred: torch.Tensor, targets: list[dict], *, image_size: int, boxes_per_cell: int,
                 lambda_coord: float = 5.0, lambda_noobj: float = 0.5, rescore: bool = True) -> dict[str, torch.Tensor]:
    """YOLO v1's loss (Redmon et al. 2016, eq. 3), summed over the cells and averaged over the images.

    pred: (N, S, S, B*5 + C) after the activations: per predictor (x, y, √w, √h, confidence), x, y in the cell,
    √w, √h of the image side, then the cell's C class probabilities. targets: boxes (K, 4) xyxy in pixels of
    the image_size × image_size input, labels (K,) 0..C-1. One object per cell, as in v1 (the larger wins).
    The confidence target is the IoU of the responsible predictor's box with the object (`rescore`), or 1.
    Returns the five terms: loss_xy, loss_wh (× λ_coord), loss_obj, loss_noobj (× λ_noobj), loss_class."""
    n_img, S, B = pred.shape[0], pred.shape[1], boxes_per_cell
    boxes = pred[..., : B * 5].reshape(n_img, S, S, B, 5)  # (N, S, S, B, 5)
    probs = pred[..., B * 5:]  # (N, S, S, C)
    zero = pred.sum() * 0
    xy, wh, obj, noobj, cls = zero, zero, zero, zero, zero
    for n, target in enumerate(targets):
        gt = target["boxes"].to(pred) / image_size  # (K, 4) xyxy in [0, 1]
        responsible = torch.zeros(S, S, B, dtype=torch.bool, device=pred.device)
        if len(gt):
            order = torch.argsort((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]), descending=True)
            cxcywh = box_convert(gt, "xyxy", "cxcywh")  # (K, 4)
            col = (cxcywh[:, 0] * S).floor().long().clamp(0, S - 1)
            row = (cxcywh[:, 1] * S).floor().long().clamp(0, S - 1)
            cell = row * S + col
            # one object per cell: the first of each cell in descending area order, i.e. the largest
            first = torch.ones(len(gt), dtype=torch.bool, device=pred.device)
            seen: set[int] = set()
            for k in order.tolist():
                first[k] = cell[k].item() not in seen
                seen.add(cell[k].item())
            keep = first.nonzero().squeeze(1)
            rows, cols, g, g_xyxy = row[keep], col[keep], cxcywh[keep], gt[keep]  # M objects in M cells
            p = boxes[n, rows, cols]  # (M, B, 5)
            p_cxcywh = torch.stack([(cols[:, None] + p[..., 0]) / S, (rows[:, None] + p[..., 1]) / S,
                                    p[..., 2] ** 2, p[..., 3] ** 2], dim=-1)  # (M, B, 4) in [0, 1]
            p_xyxy = box_convert(p_cxcywh.detach(), "cxcywh", "xyxy")
            iou = torch.stack([box_iou(p_xyxy[m], g_xyxy[m: m + 1])[:, 0] for m in range(len(keep))])  # (M, B)
            best = iou.argmax(dim=1)  # (M,) the responsible predictor of each object
            responsible[rows, cols, best] = True
            r = p[torch.arange(len(keep)), best]  # (M, 5)
            target_x, target_y = g[:, 0] * S - cols, g[:, 1] * S - rows  # offsets in the cell, [0, 1)
            xy = xy + ((r[:, 0] - target_x) ** 2 + (r[:, 1] - target_y) ** 2).sum()
            wh = wh + ((r[:, 2] - g[:, 2].sqrt()) ** 2 + (r[:, 3] - g[:, 3].sqrt()) ** 2).sum()
            conf_target = iou[torch.arange(len(keep)), best] if rescore else torch.ones_like(r[:, 4])
            obj = obj + ((r[:, 4] - conf_target) ** 2).sum()
            onehot = F.one_hot(target["labels"][keep].long(), probs.shape[-1]).to(pred)  # (M, C)
            cls = cls + ((probs[n, rows, cols] - onehot) ** 2).sum()
        noobj = noobj + (boxes[n, ..., 4][~responsible] ** 2).sum()
    return {"loss_xy": lambda_coord * xy / n_img, "loss_wh": lambda_coord * wh / n_img, "loss_obj": obj / n_img,
            "loss_noobj": lambda_noobj * noobj / n_img, "loss_class": cls / n_img}


def _conv_bn(c_in: int, c_out: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.1, inplace=True))  # v1's leaky ReLU


def _nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, nms_thresh: float,
         detections_per_img: int) -> dict[str, torch.Tensor]:
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]  # per-class NMS, by score
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


class V1Head(nn.Module):
    """Last map → 3×3 conv → pooled to S×S → 3×3 conv → 1×1 conv to B·5 + C per cell."""

    outputs = ("predict",)  # the layers giving scores and boxes: fp32 under autocast (YOLO.fp32_modules)

    def __init__(self, in_channels: int, num_classes: int, grid: int = 7, boxes_per_cell: int = 2, width: int = 256):
        super().__init__()
        self.S, self.B, self.C = grid, boxes_per_cell, num_classes
        self.neck = _conv_bn(in_channels, width)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.cell = _conv_bn(width, width)
        self.predict = nn.Conv2d(width, boxes_per_cell * 5 + num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:  # [(N, C_in, h, w)] → (N, S, S, B*5 + C)
        x = self.cell(self.pool(self.neck(maps[-1])))  # (N, width, S, S)
        raw = self.predict(x).permute(0, 2, 3, 1)  # (N, S, S, B*5 + C)
        boxes = torch.sigmoid(raw[..., : self.B * 5])  # x, y, √w, √h and confidence all live in [0, 1]
        probs = torch.softmax(raw[..., self.B * 5:], dim=-1)  # (N, S, S, C) Pr(class | object)
        return torch.cat([boxes, probs], dim=-1)  # (N, S, S, B*5 + C)

    def loss(self, pred: torch.Tensor, targets: list[dict], image_size: int) -> dict[str, torch.Tensor]:
        return yolo_v1_loss(pred, targets, image_size=image_size, boxes_per_cell=self.B)

    def detect(self, pred: torch.Tensor, image_size: int, score_thresh: float, nms_thresh: float,
               detections_per_img: int) -> Detections:
        """Class-specific confidence Pr(class | object) · confidence per predictor, its best class kept."""
        n, S, B = pred.shape[0], self.S, self.B
        boxes = pred[..., : B * 5].reshape(n, S, S, B, 5)  # (N, S, S, B, 5)
        probs = pred[..., B * 5:]  # (N, S, S, C)
        rows = torch.arange(S, device=pred.device).view(1, S, 1, 1)
        cols = torch.arange(S, device=pred.device).view(1, 1, S, 1)
        cxcywh = torch.stack([(cols + boxes[..., 0]) / S, (rows + boxes[..., 1]) / S,
                              boxes[..., 2] ** 2, boxes[..., 3] ** 2], dim=-1) * image_size  # (N, S, S, B, 4)
        xyxy = box_convert(cxcywh, "cxcywh", "xyxy").reshape(n, -1, 4)  # (N, S·S·B, 4)
        class_conf = boxes[..., 4:5] * probs[:, :, :, None, :]  # (N, S, S, B, C)
        scores, labels = class_conf.reshape(n, S * S * B, -1).max(dim=-1)  # (N, S·S·B)
        out = []
        for i in range(n):
            keep = scores[i] > score_thresh
            out.append(_nms(xyxy[i][keep], scores[i][keep], labels[i][keep], nms_thresh, detections_per_img))
        return out


class AnchorFreeHead(nn.Module):
    """FCOS-style head shared by every pyramid level: two conv towers (GroupNorm, ReLU), then class logits (C),
    l, t, r, b distances (exp, × stride) and centerness, per location."""

    outputs = ("cls_logits", "ltrb", "centerness")  # fp32 under autocast (YOLO.fp32_modules)

    def __init__(self, in_channels: list[int], strides: list[int], num_classes: int, width: int = 128,
                 center_radius: float = 2.5, fpn: bool = True):
        super().__init__()
        self.strides, self.C, self.center_radius = list(strides), num_classes, center_radius
        self.fpn = FeaturePyramidNetwork(in_channels, width) if fpn else None
        c = width if fpn else in_channels[-1]

        def tower() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(16, width), nn.ReLU(inplace=True),
                                 nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(16, width), nn.ReLU(inplace=True))

        self.cls_tower, self.box_tower = tower(), tower()
        self.cls_logits = nn.Conv2d(width, num_classes, 3, padding=1)
        self.ltrb = nn.Conv2d(width, 4, 3, padding=1)
        self.centerness = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - 0.01) / 0.01))  # prior 0.01 (RetinaNet)

    def forward(self, maps: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.fpn is not None:
            maps = list(self.fpn({str(i): m for i, m in enumerate(maps)}).values())
        else:
            maps = maps[-1:]
        logits, ltrb, ctr, points = [], [], [], []
        for x, stride in zip(maps, self.strides):
            n, _, h, w = x.shape
            c, b = self.cls_tower(x), self.box_tower(x)
            logits.append(self.cls_logits(c).flatten(2).transpose(1, 2))  # (N, h·w, C)
            dist = torch.exp(self.ltrb(b).clamp(max=10.0)) * stride  # (N, 4, h, w) pixels
            ltrb.append(dist.flatten(2).transpose(1, 2))  # (N, h·w, 4)
            ctr.append(self.centerness(b).flatten(1))  # (N, h·w)
            ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
            xy = (torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() + 0.5) * stride  # (h·w, 2) centres, fp32
            points.append(torch.cat([xy, xy.new_full((h * w, 1), stride)], dim=1))  # (h·w, 3): x, y, stride
        points = torch.cat(points)  # (L, 3)
        ltrb = torch.cat(ltrb, dim=1)  # (N, L, 4)
        xyxy = torch.cat([points[None, :, :2] - ltrb[..., :2], points[None, :, :2] + ltrb[..., 2:]], dim=-1)
        return {"logits": torch.cat(logits, dim=1), "boxes": xyxy, "centerness": torch.cat(ctr, dim=1),
                "points": points}

    def assign(self, points: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(matched gt index per location (L,), −1 for background; centerness target (L,))."""
        if not len(gt):
            return points.new_full((len(points),), -1, dtype=torch.long), points.new_zeros(len(points))
        x, y, s = points[:, 0:1], points[:, 1:2], points[:, 2:3]  # (L, 1) each
        left, top = x - gt[None, :, 0], y - gt[None, :, 1]  # FCOS's l*, t*: (L, K)
        right, bottom = gt[None, :, 2] - x, gt[None, :, 3] - y
        inside = torch.stack([left, top, right, bottom], dim=-1).min(dim=-1).values > 0  # (L, K)
        cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
        near = ((x - cx).abs() < self.center_radius * s) & ((y - cy).abs() < self.center_radius * s)
        area = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[None].expand_as(inside)  # (L, K)
        area = torch.where(inside & near, area, torch.full_like(area, float("inf")))
        smallest, index = area.min(dim=1)  # the smallest box a location belongs to wins
        index = torch.where(torch.isfinite(smallest), index, torch.full_like(index, -1))
        pick = index.clamp(min=0)[:, None, None].expand(-1, 1, 2)  # (L, 1, 2)
        lr = torch.stack([left, right], -1).gather(1, pick)[:, 0]  # (L, 2)
        tb = torch.stack([top, bottom], -1).gather(1, pick)[:, 0]
        ctr = ((lr.min(-1).values / lr.max(-1).values).clamp(min=0)
               * (tb.min(-1).values / tb.max(-1).values).clamp(min=0)).sqrt()  # FCOS eq. 3
        return index, torch.where(index >= 0, ctr, torch.zeros_like(ctr))

    def loss(self, out: dict[str, torch.Tensor], targets: list[dict], image_size: int) -> dict[str, torch.Tensor]:
        cls_t, box_p, box_t, ctr_p, ctr_t, pos_all = [], [], [], [], [], []
        for n, target in enumerate(targets):
            gt, labels = target["boxes"].to(out["boxes"]), target["labels"].long()
            index, ctr = self.assign(out["points"], gt)
            pos = index >= 0
            onehot = torch.zeros_like(out["logits"][n])  # (L, C)
            onehot[pos, labels[index[pos]]] = 1.0
            cls_t.append(onehot)
            box_p.append(out["boxes"][n][pos])
            box_t.append(gt[index[pos]])
            ctr_p.append(out["centerness"][n][pos])
            ctr_t.append(ctr[pos])
            pos_all.append(pos)
        num_pos = max(float(sum(p.sum() for p in pos_all)), 1.0)
        box_p, box_t, ctr_p, ctr_t = torch.cat(box_p), torch.cat(box_t), torch.cat(ctr_p), torch.cat(ctr_t)
        loss_cls = sigmoid_focal_loss(out["logits"], torch.stack(cls_t), reduction="sum") / num_pos
        giou = generalized_box_iou_loss(box_p, box_t, reduction="none")  # (P,)
        loss_box = (giou * ctr_t).sum() / ctr_t.sum().clamp(min=1e-6)  # weighted by centerness, as FCOS
        loss_ctr = F.binary_cross_entropy_with_logits(ctr_p, ctr_t, reduction="sum") / num_pos
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box, "loss_centerness": loss_ctr}

    def detect(self, out: dict[str, torch.Tensor], image_size: int, score_thresh: float, nms_thresh: float,
               detections_per_img: int, candidates: int = 1000) -> Detections:
        scores = (torch.sigmoid(out["logits"]) * torch.sigmoid(out["centerness"])[..., None]).sqrt()  # (N, L, C)
        result = []
        for n in range(scores.shape[0]):
            flat = scores[n].flatten()  # (L·C,)
            keep = (flat > score_thresh).nonzero().squeeze(1)
            keep = keep[flat[keep].topk(min(candidates, len(keep))).indices]
            loc, label = keep // self.C, keep % self.C
            result.append(_nms(out["boxes"][n][loc], flat[keep], label, nms_thresh, detections_per_img))
        return result


class YOLO(nn.Module):
    """Backbone + head; resizes (or letterboxes) and normalises inside, returns losses (train) or detections in
    the input images' pixels (eval)."""

    @property
    def fp32_modules(self) -> tuple[str, ...]:
        """The head's score and box layers, run in fp32 under autocast (cnnkit.engine.precision): bf16's 8 bits
        are too few for box coordinates."""
        return tuple(f"head.{name}" for name in getattr(self.head, "outputs", ()))

    def __init__(self, body: StageFeatures, head: nn.Module, num_classes: int, image_size: int, letterbox: bool,
                 score_thresh: float, nms_thresh: float, detections_per_img: int):
        super().__init__()
        self.body, self.head, self.num_classes = body, head, num_classes
        self.image_size, self.letterbox = image_size, letterbox
        self.set_postprocess(score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def set_postprocess(self, *, score_thresh: float | None = None, nms_thresh: float | None = None,
                        detections_per_img: int | None = None) -> None:
        """Change the eval-mode filtering: minimum score, NMS IoU threshold, most detections per image."""
        if score_thresh is not None:
            self.score_thresh = float(score_thresh)
        if nms_thresh is not None:
            self.nms_thresh = float(nms_thresh)
        if detections_per_img is not None:
            self.detections_per_img = int(detections_per_img)

    def _batch(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[float, float]]]:
        """(N, 3, size, size) normalised batch and each image's (x, y) scale factors from its pixels."""
        size, batch, scales = self.image_size, [], []
        for img in images:
            h, w = img.shape[-2:]
            sx, sy = (min(size / h, size / w),) * 2 if self.letterbox else (size / w, size / h)
            new = (max(1, round(h * sy)), max(1, round(w * sx)))
            x = F.interpolate(((img - self.mean) / self.std)[None], size=new, mode="bilinear", align_corners=False)
            batch.append(F.pad(x, (0, size - new[1], 0, size - new[0]))[0])  # letterbox: pad right and bottom
            scales.append((sx, sy))
        return torch.stack(batch), scales

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        check_inputs(images, targets, self.training)
        x, scales = self._batch(list(images))  # (N, 3, size, size)
        out = self.head(list(self.body(x).values()))
        if self.training:
            scaled = [{"boxes": t["boxes"].to(x) * x.new_tensor([sx, sy, sx, sy]), "labels": t["labels"]}
                      for t, (sx, sy) in zip(targets, scales)]
            return self.head.loss(out, scaled, self.image_size)
        detections = self.head.detect(out, self.image_size, self.score_thresh, self.nms_thresh,
                                      self.detections_per_img)
        for det, img, (sx, sy) in zip(detections, images, scales):
            boxes = det["boxes"] / det["boxes"].new_tensor([sx, sy, sx, sy])
            det["boxes"] = clip_boxes_to_image(boxes, tuple(img.shape[-2:]))
        return detections


@register_model("yolo", task="detect", paper="Redmon et al. 2016 (YOLO v1); Tian et al. 2019 (FCOS head)",
                head=("head.predict", "head.cls_logits"), input_size=(3, 448, 448))
def yolo(*, num_classes: int = 20, in_channels: int = 3, backbone: str = "resnet18",
         backbone_weights: str | Path | None = None, trainable_layers: int | None = None, head: str = "v1",
         grid: int = 7, boxes_per_cell: int = 2, image_size: int = 448, letterbox: bool = False, fpn: bool = True,
         width: int | None = None, score_thresh: float = 0.05, nms_thresh: float = 0.5,
         detections_per_img: int = 100) -> nn.Module:
    """YOLO-style detector on a registry classifier `backbone`. head="v1": an S×S `grid`, `boxes_per_cell`
    B boxes per cell (448 px, S=7, B=2 as the paper; 128-256 px suit small data). head="anchor-free": an FCOS
    head on a `fpn` of strides 8, 16, 32 (False: the stride-32 map only). `width`: head channels (v1 256,
    anchor-free 128). `letterbox`: keep the aspect ratio (pad) instead of stretching to image_size."""
    if in_channels != 3:
        raise CnnkitError(f"yolo takes RGB images (in_channels=3), got in_channels={in_channels}")
    if head not in HEADS:
        raise unknown_name("yolo head", head, HEADS)
    if grid < 1 or boxes_per_cell < 1:
        raise CnnkitError(f"grid and boxes_per_cell must be positive, got {grid} and {boxes_per_cell}")
    levels = 3 if head == "anchor-free" and fpn else 1
    body = StageFeatures.from_registry(backbone, weights=backbone_weights, levels=levels,
                                       trainable_layers=trainable_layers)
    if head == "v1":
        module = V1Head(body.out_channels[-1], num_classes, grid, boxes_per_cell, width or 256)
    else:
        module = AnchorFreeHead(body.out_channels, body.strides, num_classes, width or 128, fpn=fpn)
    return YOLO(body, module, num_classes, image_size, letterbox, score_thresh, nms_thresh, detections_per_img)
