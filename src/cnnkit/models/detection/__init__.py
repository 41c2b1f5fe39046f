"""Detectors on registry backbones: the R-CNN line (rcnn, spp_net, fast_rcnn, faster_rcnn), ssd and yolo
(task="detect"), and mask_rcnn (task="instance":
boxes plus a mask per object, see cnnkit.models.detection.mask_rcnn). Importing registers them.

Every detector takes a list of (3, H, W) float images in [0, 1]; in train mode with targets
[{"boxes": (K, 4) xyxy pixels, "labels": (K,) 0..C-1}, ...] it returns a dict of scalar losses (sum them),
in eval mode [{"boxes": (D, 4), "scores": (D,), "labels": (D,)}, ...] in each image's pixels. Thresholds:
constructor options score_thresh, nms_thresh, detections_per_img, or model.set_postprocess(...) later.
"""
from cnnkit.models.detection import backbones, faster_rcnn, mask_rcnn, proposals, rcnn, region, ssd, yolo

__all__ = ["backbones", "faster_rcnn", "mask_rcnn", "proposals", "rcnn", "region", "ssd", "yolo"]
