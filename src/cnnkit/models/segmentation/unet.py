"""U-Net (Ronneberger, Fischer & Brox 2015): a contracting path, an expanding path, skip concatenation.

    model = create_model("unet", num_classes=2)                         # the paper's widths 64..1024, 'same' padding
    model = create_model("unet", num_classes=2, base=8, depth=3)        # small
    model = create_model("unet", num_classes=3, backbone="efficientnet_lite0.imagenet")  # pretrained encoder
    model(torch.randn(1, 3, 37, 53)).shape                              # (1, num_classes, 37, 53)

Own encoder (backbone=None): `depth` + 1 levels of two 3×3 convolutions (BN, ReLU; the paper's unpadded
convolutions become 'same' ones so that no cropping is needed), base·2^i maps, 2×2 max pools between them.
Registry encoder (`backbone`: resnet18, efficientnet_lite0, named weights ...): its maps at strides
2, 4, 8, 16, 32 (StageFeatures), decoded with `decoder_channels` maps per level, the last level (stride 2 → 1)
without a skip. Decoder level: upsample ×2 (transposed: the paper's 2×2 up-convolution; bilinear / nearest:
a 1×1 convolution then interpolation; unpool: the own encoder's pooling indices), concatenate the encoder map
of that stride, two 3×3 convolutions. A 1×1 `classifier` gives the logits.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.registry import register_model
from cnnkit.models.segmentation.encoder import registry_encoder
from cnnkit.models.segmentation.segnet import conv_bn_relu
from cnnkit.models.segmentation.upsample import UPSAMPLE_KINDS, SegmentationNet, Up, check_upsample

__all__ = ["UNet", "unet", "double_conv"]

DECODER_CHANNELS = (256, 128, 64, 32, 16)  # registry encoders: strides 16, 8, 4, 2, 1


def double_conv(c_in: int, c_out: int, batch_norm: bool = True) -> nn.Sequential:
    """Two 3×3 'same' convolutions, each with [BN] and ReLU."""
    return nn.Sequential(*conv_bn_relu(c_in, c_out, batch_norm), *conv_bn_relu(c_out, c_out, batch_norm))


class OwnEncoder(nn.Module):
    """The contracting path: levels of double_conv at strides 1, 2, ..., 2^depth; pools keep their indices."""

    def __init__(self, in_channels: int, base: int, depth: int, batch_norm: bool):
        super().__init__()
        self.out_channels = [base * 2 ** i for i in range(depth + 1)]
        self.strides = [2 ** i for i in range(depth + 1)]
        c_in = [in_channels] + self.out_channels[:-1]
        self.levels = nn.ModuleList(double_conv(a, b, batch_norm) for a, b in zip(c_in, self.out_channels))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(maps at each stride, finest first; pooling indices, one per pool)."""
        maps, indices = [], []
        for i, level in enumerate(self.levels):
            if i:
                x, idx = self.pool(x)  # (N, c, h/2, w/2)
                indices.append(idx)
            x = level(x)
            maps.append(x)  # (N, base·2^i, H/2^i, W/2^i)
        return maps, indices


class BackboneEncoder(nn.Module):
    """A registry classifier's maps at strides 2..32 (no pooling indices)."""

    def __init__(self, backbone: str, trainable_layers: int | None):
        super().__init__()
        self.body, self.weights = registry_encoder(backbone, levels=5, trainable_layers=trainable_layers)
        self.out_channels, self.strides = list(self.body.out_channels), list(self.body.strides)
        if self.strides != [2, 4, 8, 16, 32]:
            raise CnnkitError(f"unet needs a backbone with maps at strides 2..32, {backbone} has {self.strides}")

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(self.body(x).values()), []


class UNet(SegmentationNet):
    """Encoder maps e_0 (finest) .. e_L (bottleneck); decoder level i: up(d_{i+1}) ‖ e_i → double_conv → d_i."""

    def __init__(self, num_classes: int, in_channels: int = 3, base: int = 64, depth: int = 4,
                 upsample: str = "transposed", backbone: str | None = None,
                 decoder_channels: tuple[int, ...] = DECODER_CHANNELS, batch_norm: bool = True,
                 trainable_layers: int | None = None):
        super().__init__()
        allowed = UPSAMPLE_KINDS if backbone is None else ("transposed", "bilinear", "nearest")
        self.upsample = check_upsample(upsample, allowed, "unet" + ("" if backbone is None else " on a backbone"))
        if backbone is None:
            if depth < 1:
                raise CnnkitError(f"unet depth must be at least 1, got {depth}")
            self.encoder = OwnEncoder(in_channels, base, depth, batch_norm)
            decoder = self.encoder.out_channels[:-1]  # mirrored widths, finest first
        else:
            if in_channels != 3:
                raise CnnkitError(f"unet on a backbone takes RGB images (in_channels=3), got {in_channels}")
            self.encoder = BackboneEncoder(backbone, trainable_layers)
            self.encoder_weights = self.encoder.weights
            if len(decoder_channels) != 5:
                raise CnnkitError(f"decoder_channels needs 5 widths (strides 16, 8, 4, 2, 1), got {decoder_channels}")
            decoder = list(reversed(decoder_channels))  # finest first: strides 1, 2, 4, 8, 16
        enc, strides = self.encoder.out_channels, self.encoder.strides
        self.stride = strides[-1]
        skips = [0] * (len(decoder) - len(enc) + 1) + enc[:-1]  # the stride-1 level of a backbone has no skip
        c, self.ups, self.decoder = enc[-1], nn.ModuleList(), nn.ModuleList()
        for d, s in zip(reversed(decoder), reversed(skips)):  # from the deepest
            kernel = 2 if self.upsample == "transposed" else None  # the paper's 2×2 up-convolution
            self.ups.append(Up(self.upsample, c, d, 2, kernel))
            self.decoder.append(double_conv(d + s, d, batch_norm))
            c = d
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W), H, W multiples of self.stride
        size = x.shape[-2:]
        maps, indices = self.encoder(x)  # finest first; the last is the bottleneck
        x, skips = maps[-1], maps[:-1]
        for up, block in zip(self.ups, self.decoder):
            skip = skips.pop() if skips else None
            target = skip.shape[-2:] if skip is not None else size
            x = up(x, indices.pop() if indices else None, size=target)  # (N, d, 2h, 2w)
            x = block(x if skip is None else torch.cat([x, skip], dim=1))  # (N, d, 2h, 2w)
        return self.classifier(x)  # (N, num_classes, H, W)


@register_model("unet", task="segment", paper="Ronneberger, Fischer & Brox 2015 (U-Net)", head="classifier",
                input_size=(3, 256, 256))
def unet(*, num_classes: int = 2, in_channels: int = 3, base: int = 64, depth: int = 4,
         upsample: str = "transposed", backbone: str | None = None,
         decoder_channels: tuple[int, ...] = DECODER_CHANNELS, batch_norm: bool = True,
         trainable_layers: int | None = None) -> nn.Module:
    """U-Net: own encoder of `depth` pools and `base`·2^i maps (`batch_norm` after each convolution, not in
    the paper), or `backbone` (a registry classifier or named weights, e.g. 'efficientnet_lite0.imagenet', at
    strides 2..32, decoded with `decoder_channels`; `trainable_layers`: its stages that train, None all);
    `upsample` transposed | bilinear | nearest | unpool (own encoder only)."""
    return UNet(num_classes, in_channels, base, depth, upsample, backbone, tuple(decoder_channels), batch_norm,
                trainable_layers)
