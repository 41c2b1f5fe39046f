"""SPP-net (He et al. 2014) and Fast R-CNN (Girshick 2015): one backbone pass per image, each selective-search
proposal pooled from the feature map, then a classifier and box regressor per proposal.

    model = create_model("fast_rcnn", num_classes=1, backbone="efficientnet_lite0.imagenet")
    losses = model(images, targets)   # {"loss_classifier": softmax CE, "loss_box_reg": smooth L1}
    found = model.eval()(images)      # [{"boxes", "scores", "labels"}, ...]; model.propose(images): the proposals

- Fast R-CNN: RoI max pooling (torchvision.ops.roi_pool, the paper's operator, not RoIAlign) into 7 × 7 bins,
  two FC layers, then softmax over the classes + background and class-specific box offsets: the multi-task
  loss, trained end to end (the backbone's last `trainable_layers` stages too). Proposals are sampled per
  image as in the paper: 64 RoIs, a quarter foreground (IoU ≥ 0.5 with a true box), the rest background.
- SPP-net: spatial pyramid pooling, max pooling of each proposal into 1 × 1, 2 × 2 and 4 × 4 bins (`levels`),
  concatenated into one fixed-length vector, then the same FC layers and heads. The backbone is frozen as in
  the paper (only the FC layers are fine-tuned), so its feature map is computed once per image and cached on
  disk, like the proposals.

Both reuse torchvision's RoIHeads (sampling, losses, box decoding, per-class NMS) with the paper's pooling in
place of RoIAlign. The feature map is the backbone's output at `feature_stride` (16, as VGG16's conv5_3 in both
papers, or 32). Images are (3, S, S) in [0, 1], already letterboxed by the loader; ImageNet normalisation is
inside. Proposals come from selective search in "fast" mode (cnnkit.models.detection.proposals), cached.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import roi_pool

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import StageFeatures
from cnnkit.models.detection.faster_rcnn import check_inputs
from cnnkit.models.detection.proposals import RegionCache, autocast_of, image_key, module_key, selective_search
from cnnkit.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.models.registry import register_model

# the recipe of the detectors whose heads train over cached features (spp_net, rcnn): after the first epoch an
# epoch takes seconds, and 20 of them at 1e-3 reach what 8 at 3e-4 do not (docs/benchmarks.md §18)
CACHED_TRAIN = {"optimizer": "adamw", "lr": 1e-3, "epochs": 20}

__all__ = ["Proposer", "RegionDetector", "RoIMaxPool", "SpatialPyramidPool", "fast_rcnn", "set_thresholds",
           "spp_net"]


class Proposer:
    """Selective-search proposals of images, cached on disk by the image's pixels and the settings."""

    def __init__(self, mode: str = "fast", top: int = 2000, cache: bool = True):
        self.mode, self.top = mode, top
        self.cache = RegionCache("proposals") if cache else None

    def __call__(self, images: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        """[(P, 4) xyxy float32 in the image's pixels, ...], one per image (3, H, W)."""
        out = []
        for image in images:
            make = lambda image=image: selective_search(image, mode=self.mode, top=self.top)  # noqa: E731
            if self.cache is None:
                out.append(make())
            else:
                out.append(self.cache.get_or_make(image_key(image, "selective_search", self.mode, self.top), make))
        return out


class RoIMaxPool(nn.Module):
    """Fast R-CNN's RoI pooling layer: each proposal's window on the map max-pooled into size × size bins."""

    def __init__(self, output_size: int, spatial_scale: float):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale

    def forward(self, features: dict, proposals: list[torch.Tensor], image_shapes: list) -> torch.Tensor:
        x = features["0"].float()  # torchvision's CPU roi_pool has no bf16 kernel
        return roi_pool(x, [p.float() for p in proposals], self.output_size, self.spatial_scale)  # (K, C, s, s)


class SpatialPyramidPool(nn.Module):
    """SPP-net's layer: each proposal's window max-pooled into n × n bins for every n in `levels`, flattened
    and concatenated: (K, C · Σ n²), one length whatever the window's size."""

    def __init__(self, levels: tuple[int, ...], spatial_scale: float):
        super().__init__()
        self.levels, self.spatial_scale = tuple(levels), spatial_scale

    def forward(self, features: dict, proposals: list[torch.Tensor], image_shapes: list) -> torch.Tensor:
        x = features["0"].float()  # torchvision's CPU roi_pool has no bf16 kernel
        boxes = [p.float() for p in proposals]
        return torch.cat([roi_pool(x, boxes, n, self.spatial_scale).flatten(1) for n in self.levels], 1)


class RegionDetector(nn.Module):
    """Proposals → backbone map → `pool` per proposal → RoIHeads. Labels are 0-based outside (background 0
    inside, as torchvision's). `cache_features`: keep the (frozen) backbone's map of each image on disk."""

    fp32_modules = ("roi_heads.box_predictor",)  # scores and box offsets in fp32 under autocast

    def __init__(self, body: StageFeatures, pool: nn.Module, pooled: int, num_classes: int, proposer: Proposer, *,
                 representation_size: int = 1024, cache_features: bool = False, rois_per_image: int = 64,
                 score_thresh: float = 0.05, nms_thresh: float = 0.3, detections_per_img: int = 100):
        super().__init__()
        self.body, self.proposer, self.num_classes = body, proposer, num_classes
        self.feature_cache = RegionCache("feature_maps") if cache_features else None
        self.unfolded = ("body",) if cache_features else ()  # fold_batch_norm leaves the cached backbone as it is
        self.roi_heads = RoIHeads(pool, TwoMLPHead(pooled, representation_size),
                                  FastRCNNPredictor(representation_size, num_classes + 1),
                                  fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=rois_per_image,
                                  positive_fraction=0.25, bbox_reg_weights=None, score_thresh=score_thresh,
                                  nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def propose(self, images: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        """The selective-search proposals (P, 4) of each image, in its pixels (cached)."""
        return [p.to(images[0].device) for p in self.proposer(images)]

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H/s, W/s) the backbone's map of images (N, 3, H, W) in [0, 1]; from the disk cache for a frozen
        backbone."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if self.feature_cache is None:
            return self.body(x)["0"]
        maps, weights = [], module_key(self.body)  # the key follows the backbone's weights, whatever loaded them
        for image, one in zip(images, x):
            key = image_key(image, "feature_map", weights, autocast_of(images))
            with torch.no_grad():
                maps.append(self.feature_cache.get_or_make(key, lambda one=one: self.body(one[None])["0"][0])
                            .to(images.device))
        return torch.stack(maps).to(x.dtype)

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict] | None = None):
        check_inputs(images, targets, self.training)
        sizes = [tuple(image.shape[-2:]) for image in images]
        batch = _padded(images)  # (N, 3, H, W): images of other sizes padded at the bottom and right
        proposals = self.propose(images)
        features = {"0": self.feature_map(batch)}
        if self.training:
            shifted = [{"boxes": t["boxes"].float(), "labels": t["labels"].long() + 1} for t in targets]
            _, losses = self.roi_heads(features, proposals, sizes, shifted)
            return {"loss_classifier": losses["loss_classifier"], "loss_box_reg": losses["loss_box_reg"]}
        found, _ = self.roi_heads(features, proposals, sizes)
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in found]

    def set_postprocess(self, *, score_thresh: float | None = None, nms_thresh: float | None = None,
                        detections_per_img: int | None = None) -> None:
        set_thresholds(self.roi_heads, score_thresh=score_thresh, nms_thresh=nms_thresh,
                       detections_per_img=detections_per_img)


def set_thresholds(owner: object, **values: float | int | None) -> None:
    """Set each of `values` that is not None as an attribute of `owner` (the eval-mode thresholds)."""
    for name, value in values.items():
        if value is not None:
            setattr(owner, name, value)


def _padded(images: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) of images (3, H_i, W_i), zero-padded at the bottom and right to the largest, a multiple of 32."""
    if isinstance(images, torch.Tensor):
        return images
    h = -(-max(i.shape[-2] for i in images) // 32) * 32
    w = -(-max(i.shape[-1] for i in images) // 32) * 32
    batch = images[0].new_zeros(len(images), 3, h, w)
    for out, image in zip(batch, images):
        out[:, : image.shape[-2], : image.shape[-1]] = image
    return batch


def _body(backbone: str, weights: str | Path | None, feature_stride: int, trainable_layers: int | None
          ) -> StageFeatures:
    if feature_stride not in (16, 32):
        raise CnnkitError(f"feature_stride must be 16 or 32 (the map the proposals are pooled from), got "
                          f"{feature_stride}")
    body = StageFeatures.from_registry(backbone, weights=weights, levels=2, trainable_layers=trainable_layers)
    if body.strides[-1] != 32:
        raise CnnkitError(f"{backbone} ends at stride {body.strides[-1]}; the R-CNN line needs a backbone that "
                          "ends at stride 32 (resnet18, efficientnet_lite0, vgg16, ...)")
    keep = 0 if feature_stride == 16 else 1  # StageFeatures returns {"0": stride 16, "1": stride 32}
    body.returned, body.strides = [body.returned[keep]], [feature_stride]
    body.out_channels = [body.out_channels[keep]]
    body.stages = body.stages[: body.returned[0] + 1]
    return body


def _check(num_classes: int, in_channels: int, proposals: int) -> None:
    if in_channels != 3:
        raise CnnkitError(f"the R-CNN line takes RGB images (in_channels=3), got in_channels={in_channels}")
    if proposals < 1:
        raise CnnkitError(f"proposals must be at least 1, got {proposals}")


@register_model("fast_rcnn", task="detect", paper="Girshick 2015 (Fast R-CNN)", head="roi_heads.box_predictor",
                input_size=(3, 384, 384))
def fast_rcnn(*, num_classes: int = 20, in_channels: int = 3, backbone: str = "resnet18",
              backbone_weights: str | Path | None = None, trainable_layers: int | None = None,
              feature_stride: int = 16, pool_size: int = 7, representation_size: int = 1024, proposals: int = 2000,
              search: str = "fast", rois_per_image: int = 64, score_thresh: float = 0.05, nms_thresh: float = 0.3,
              detections_per_img: int = 100) -> nn.Module:
    """Fast R-CNN on a registry `backbone` (e.g. 'efficientnet_lite0.imagenet', 'resnet18'): selective search
    (`search` mode, the first `proposals` boxes), RoI max pooling into `pool_size`² bins of the stride-
    `feature_stride` map, two FC layers of `representation_size`, softmax + box regression; `rois_per_image`
    sampled per training image. `trainable_layers`: backbone stages that train, from the last (None: 3 with
    weights, all without)."""
    _check(num_classes, in_channels, proposals)
    body = _body(backbone, backbone_weights, feature_stride, trainable_layers)
    pool = RoIMaxPool(pool_size, 1.0 / feature_stride)
    return RegionDetector(body, pool, body.out_channels[0] * pool_size ** 2, num_classes,
                          Proposer(search, proposals), representation_size=representation_size,
                          rois_per_image=rois_per_image, score_thresh=score_thresh, nms_thresh=nms_thresh,
                          detections_per_img=detections_per_img)


@register_model("spp_net", task="detect", paper="He et al. 2014 (SPP-net)", head="roi_heads.box_predictor",
                input_size=(3, 384, 384), train=CACHED_TRAIN)
def spp_net(*, num_classes: int = 20, in_channels: int = 3, backbone: str = "resnet18",
            backbone_weights: str | Path | None = None, feature_stride: int = 16, levels: tuple[int, ...] = (1, 2, 4),
            representation_size: int = 1024, proposals: int = 2000, search: str = "fast", rois_per_image: int = 64,
            score_thresh: float = 0.05, nms_thresh: float = 0.3, detections_per_img: int = 100) -> nn.Module:
    """SPP-net on a registry `backbone`, frozen (its map cached on disk per image): selective search, spatial
    pyramid max pooling into n × n bins for n in `levels` (1, 2, 4: 21 bins), two FC layers, softmax + box
    regression (the paper fine-tunes only the FC layers)."""
    _check(num_classes, in_channels, proposals)
    if not levels or any(int(n) < 1 for n in levels):
        raise CnnkitError(f"levels must be positive bin counts such as (1, 2, 4), got {levels}")
    body = _body(backbone, backbone_weights, feature_stride, trainable_layers=0)
    pool = SpatialPyramidPool(tuple(int(n) for n in levels), 1.0 / feature_stride)
    return RegionDetector(body, pool, body.out_channels[0] * sum(int(n) ** 2 for n in levels), num_classes,
                          Proposer(search, proposals), representation_size=representation_size, cache_features=True,
                          rois_per_image=rois_per_image, score_thresh=score_thresh, nms_thresh=nms_thresh,
                          detections_per_img=detections_per_img)
