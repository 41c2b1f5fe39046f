"""Semantic segmentation nets (task="segment"): fcn32s, fcn16s, fcn8s, segnet, unet, deeplabv3.

    model = create_model("unet", num_classes=3, backbone="efficientnet_lite0.imagenet")
    logits = model(images)          # (N, 3, H, W) normalised, any H, W → (N, num_classes, H, W)
    model.stride, model.encoder_weights   # 32, 'efficientnet_lite0.imagenet' (mean/std: models.pretrained.lookup)

Every model pads its input to `model.stride` and crops the logits back (upsample.pad_to_multiple, crop);
option `upsample` picks nearest | bilinear | unpool | transposed where the model allows it.
"""
from cnnkit.models.segmentation import deeplab, fcn, segnet, unet, upsample

__all__ = ["deeplab", "fcn", "segnet", "unet", "upsample"]
