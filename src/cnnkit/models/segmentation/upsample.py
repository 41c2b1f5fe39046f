"""What every segmentation net shares: pad to the encoder's stride and crop back, and the upsampling layers.

    padded, (h, w) = pad_to_multiple(x, 32)   # (N, 3, 37, 53) → (N, 3, 64, 64), (37, 53)
    logits = crop(net(padded), (h, w))        # (N, C, 64, 64) → (N, C, 37, 53)
    up = Up("transposed", 64, 32, factor=2)   # (N, 64, h, w) → (N, 32, 2h, 2w)

Upsampling kinds (option `upsample` of every model, each model allows a subset):
  nearest / bilinear  F.interpolate (after a 1×1 convolution when the channel count changes)
  transposed          a learned ConvTranspose2d, kernel 2·factor (or `kernel`), bilinear-initialised when
                      it keeps the channel count (Long et al. 2015, §3.3)
  unpool              MaxUnpool2d with the max-pooling indices of the encoder (Badrinarayanan et al. 2015)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["UPSAMPLE_KINDS", "check_upsample", "pad_to_multiple", "crop", "bilinear_kernel", "Up", "SegmentationNet"]

UPSAMPLE_KINDS = ("nearest", "bilinear", "unpool", "transposed")


def check_upsample(kind: str, allowed: tuple[str, ...], model: str) -> str:
    """`kind` when `model` supports it; otherwise a CnnkitError (with "did you mean" for unknown names)."""
    if kind in allowed:
        return kind
    if kind in UPSAMPLE_KINDS:
        why = " (unpool needs the max-pooling indices of an own encoder)" if kind == "unpool" else ""
        raise CnnkitError(f"{model} cannot upsample by {kind!r}{why}; choose one of: {', '.join(allowed)}")
    raise unknown_name("upsample", kind, allowed)


def pad_to_multiple(x: torch.Tensor, stride: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (N, C, H, W) at the bottom and right to multiples of `stride` (zero is the mean of normalised
    images); returns the padded tensor and the original (H, W) for `crop`."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % stride, -w % stride
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (h, w)


def crop(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H', W') → (N, C, h, w): the top-left part that `pad_to_multiple` left unpadded."""
    return y[..., : size[0], : size[1]]


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """(channels, channels, k, k) weights of a transposed convolution that upsamples each channel bilinearly
    (the "bilinear filler" of FCN's Caffe code), zero across channels."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    og = torch.arange(kernel, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor  # (k,)
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = filt1d[:, None] * filt1d[None, :]
    return weight


class Up(nn.Module):
    """Upsample (N, c_in, h, w) by `factor` to (N, c_out, factor·h, factor·w) in one of UPSAMPLE_KINDS.
    forward(x, indices=None, size=None): `indices` the encoder's MaxPool2d(return_indices=True) indices
    (needed by "unpool", whose factor is the pool's 2); `size` the output (H, W) when known."""

    def __init__(self, kind: str, c_in: int, c_out: int, factor: int = 2, kernel: int | None = None):
        super().__init__()
        if kind not in UPSAMPLE_KINDS:
            raise unknown_name("upsample", kind, UPSAMPLE_KINDS)
        self.kind, self.factor = kind, factor
        if kind == "transposed":
            k = 2 * factor if kernel is None else kernel
            self.reduce = nn.Identity()
            self.up = nn.ConvTranspose2d(c_in, c_out, k, stride=factor, padding=(k - factor) // 2, bias=False)
            if c_in == c_out:
                with torch.no_grad():
                    self.up.weight.copy_(bilinear_kernel(c_in, k))
            return
        if kind == "unpool" and factor != 2:
            raise CnnkitError(f"unpool upsamples by the 2×2 pool's factor 2, not {factor}")
        self.reduce = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.up = nn.MaxUnpool2d(2, 2) if kind == "unpool" else None

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.reduce(x)  # (N, c_out, h, w)
        size = tuple(size) if size is not None else (x.shape[-2] * self.factor, x.shape[-1] * self.factor)
        if self.kind == "unpool":
            if indices is None:
                raise CnnkitError("upsample 'unpool' needs the encoder's max-pooling indices")
            return self.up(x, indices, output_size=size)  # values back at the argmax positions, zeros elsewhere
        if self.kind == "transposed":
            return self.up(x, output_size=size)
        if self.kind == "bilinear":
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=size, mode="nearest")

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, factor={self.factor}"


class SegmentationNet(nn.Module):
    """Base of the segmentation nets: forward pads to `self.stride`, runs `segment`, crops the logits back.

    Attributes: `stride` (the padding multiple), `encoder_weights` (named weights of the encoder, or None)."""

    stride: int = 32
    encoder_weights: str | None = None

    def segment(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W), H and W multiples of stride → (N, C, H, W)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images, any H, W → logits (N, num_classes, H, W)."""
        padded, size = pad_to_multiple(x, self.stride)
        return crop(self.segment(padded), size)
