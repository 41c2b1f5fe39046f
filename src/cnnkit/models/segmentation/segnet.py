"""SegNet (Badrinarayanan, Kendall & Cipolla 2015): an encoder–decoder whose decoder upsamples with the
encoder's max-pooling indices.

    model = create_model("segnet", num_classes=12)                 # VGG-16's 13 convolutions, mirrored
    model = create_model("segnet", num_classes=2, depth=2, width=8)  # small: 2 blocks, 8 and 16 maps
    model(torch.randn(1, 3, 37, 53)).shape                          # (1, 2, 37, 53)

Encoder block i: `convs[i]` 3×3 convolutions (BN, ReLU) of min(width·2^i, 8·width) maps, then a 2×2/2 max pool
that keeps its argmax indices (MaxPool2d(return_indices=True)). Decoder block i mirrors it: upsampling
(upsample="unpool": MaxUnpool2d puts each value back at the position its encoder pool took it from, zeros
elsewhere; or nearest / bilinear / transposed for comparison), then the same convolutions, the last one
narrowing to the next block's width. A 1×1 `classifier` gives the logits. Padding multiple: 2^depth.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.registry import register_model
from cnnkit.models.segmentation.upsample import UPSAMPLE_KINDS, SegmentationNet, Up, check_upsample

__all__ = ["SegNet", "segnet", "conv_bn_relu"]

VGG16_CONVS = (2, 2, 3, 3, 3)  # convolutions per block of VGG-16, SegNet's encoder


def conv_bn_relu(c_in: int, c_out: int, batch_norm: bool = True) -> list[nn.Module]:
    """3×3 'same' convolution, [BN], ReLU."""
    bn = [nn.BatchNorm2d(c_out)] if batch_norm else []
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm), *bn, nn.ReLU(inplace=True)]


class SegNet(SegmentationNet):
    """`depth` encoder blocks (conv-BN-ReLU ×convs[i], pool with indices) and their mirrored decoder."""

    def __init__(self, num_classes: int, depth: int = 5, width: int = 64, upsample: str = "unpool",
                 convs: tuple[int, ...] = VGG16_CONVS, batch_norm: bool = True, in_channels: int = 3):
        super().__init__()
        if not 1 <= depth <= len(convs):
            raise CnnkitError(f"segnet depth must be in 1..{len(convs)} (one count in `convs` per block), got {depth}")
        self.upsample = check_upsample(upsample, UPSAMPLE_KINDS, "segnet")
        self.stride = 2 ** depth
        widths = [min(width * 2 ** i, 8 * width) for i in range(depth)]
        self.encoder, self.decoder, self.ups = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = in_channels
        for w, n in zip(widths, convs):
            self.encoder.append(nn.Sequential(*[m for j in range(n) for m in conv_bn_relu(c if j == 0 else w, w,
                                                                                           batch_norm)]))
            c = w
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        for i in reversed(range(depth)):  # decoder block i, from the deepest
            w, w_next = widths[i], widths[max(i - 1, 0)]
            self.ups.append(Up(self.upsample, w, w, 2))
            self.decoder.append(nn.Sequential(*[m for j in range(convs[i]) for m in conv_bn_relu(
                w, w_next if j == convs[i] - 1 else w, batch_norm)]))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W), H, W multiples of 2^depth
        indices, sizes = [], []
        for block in self.encoder:
            x = block(x)  # (N, w_i, H/2^i, W/2^i)
            sizes.append(x.shape[-2:])
            x, idx = self.pool(x)  # (N, w_i, H/2^(i+1), W/2^(i+1)), argmax positions in the unpooled map
            indices.append(idx)
        for up, block in zip(self.ups, self.decoder):
            x = block(up(x, indices.pop(), size=sizes.pop()))  # unpool with the matching encoder's indices
        return self.classifier(x)  # (N, num_classes, H, W)


@register_model("segnet", task="segment", paper="Badrinarayanan, Kendall & Cipolla 2015 (SegNet)",
                head="classifier", input_size=(3, 256, 256))
def segnet(*, num_classes: int = 21, in_channels: int = 3, depth: int = 5, width: int = 64,
           upsample: str = "unpool", convs: tuple[int, ...] = VGG16_CONVS, batch_norm: bool = True) -> nn.Module:
    """SegNet: `depth` (1-5) VGG-16 blocks of `width`·2^i maps (capped at 8·width), mirrored decoder;
    `upsample` unpool (the encoder's pooling indices) | nearest | bilinear | transposed."""
    return SegNet(num_classes, depth, width, upsample, tuple(convs), batch_norm, in_channels)
