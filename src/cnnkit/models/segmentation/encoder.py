"""Registry classifiers as segmentation encoders (cnnkit.models.detection.backbones.StageFeatures).

    body, weights = registry_encoder("efficientnet_lite0.imagenet", levels=5)
    body.strides        # [2, 4, 8, 16, 32];  weights: 'efficientnet_lite0.imagenet'
    body(x)             # {"0": (N, 16, H/2, W/2), ..., "4": (N, 1280, H/32, W/32)}
    dilate(body, 16)    # DeepLab: the stride-32 stages keep stride 16, their convolutions dilated ×2

StageFeatures keeps a stage whole even when it strides twice (ResNet's stem: the 7×7/2 convolution, then
the 3×3/2 max pool), so the stride-2 map would be missing; `registry_encoder` splits such stages.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import StageFeatures, classification_backbone
from cnnkit.models.tweaks import batch_norm_layers, set_batch_norm

__all__ = ["registry_encoder", "dilate"]

_PROBE = 64


@torch.no_grad()
def _strides(modules: list[nn.Module], x: torch.Tensor) -> tuple[list[int], list[int], torch.Tensor]:
    """Stride and channels after each module, run in order from `x` (1, C, _PROBE, _PROBE)."""
    strides, channels = [], []
    for m in modules:
        x = m(x)
        strides.append(round(_PROBE / x.shape[-2]))
        channels.append(x.shape[1])
    return strides, channels, x


def _split_stages(body: StageFeatures) -> None:
    """Cut every stage of `body` where its stride changes, and return the last map at every stride."""
    was_training = body.training
    body.eval()
    x, stages, shapes = torch.zeros(1, 3, _PROBE, _PROBE), [], []
    for stage in body.stages:
        modules = list(stage)
        strides, channels, x = _strides(modules, x)
        start = 0
        for i in range(len(modules)):
            if i == len(modules) - 1 or strides[i + 1] != strides[i]:
                stages.append(nn.Sequential(*modules[start: i + 1]))
                shapes.append((strides[i], channels[i]))
                start = i + 1
    body.train(was_training)
    last = {s: i for i, (s, _) in enumerate(shapes)}  # stride → index of the last stage at that stride
    body.stages = nn.ModuleList(stages)
    body.returned = sorted(last.values())
    body.strides = [shapes[i][0] for i in body.returned]
    body.out_channels = [shapes[i][1] for i in body.returned]


def registry_encoder(backbone: str, *, levels: int, trainable_layers: int | None = None,
                     max_stride: int = 32) -> tuple[StageFeatures, str | None]:
    """(encoder returning the last `levels` strides up to `max_stride`, the named weights or None).

    `backbone`: a registry classifier ('resnet18') or named weights ('efficientnet_lite0.imagenet'). A
    pretrained encoder's BN layers are frozen (running statistics kept, as cnnkit's detectors do);
    `trainable_layers` (None: all) counts the stages that train, from the deepest."""
    model, spec = classification_backbone(backbone)
    weights = backbone if "." in backbone else None
    body = StageFeatures(model, spec, levels=1)  # every stage up to the deepest
    _split_stages(body)
    keep = [i for i, s in enumerate(body.strides) if s <= max_stride]
    if len(keep) < levels:
        raise CnnkitError(f"backbone {spec.name} has {len(keep)} strides up to {max_stride} "
                          f"({body.strides}); ask for at most that many levels")
    keep = keep[-levels:]
    last = body.returned[keep[-1]]
    body.stages = body.stages[: last + 1]
    body.returned = [body.returned[i] for i in keep]
    body.strides = [body.strides[i] for i in keep]
    body.out_channels = [body.out_channels[i] for i in keep]
    if weights is not None and batch_norm_layers(body):
        set_batch_norm(body, "frozen")
    if trainable_layers is not None:
        n = len(body.stages)
        if not 0 <= trainable_layers <= n:
            raise CnnkitError(f"trainable_layers must be in 0..{n} for {spec.name}, got {trainable_layers}")
        for stage in body.stages[: n - trainable_layers]:
            stage.requires_grad_(False)
    return body, weights


def dilate(body: StageFeatures, output_stride: int) -> None:
    """Keep `body` at `output_stride` (8, 16; 32 changes nothing) (Chen et al. 2017): in each stage that would
    stride past it, strided convolutions stride 1, the first strided k×k one keeps the previous dilation and
    the k×k convolutions after it are dilated by the stride given up, as torchvision's
    replace_stride_with_dilation. Only plain nn.Conv2d strides are handled (ResNets, EfficientNet-Lite with
    symmetric padding); a stage striding by pooling or TF-SAME convolutions raises."""
    if output_stride not in (8, 16, 32):
        raise CnnkitError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    was_training, x, stride, dilation = body.training, torch.zeros(1, 3, _PROBE, _PROBE), 1, 1
    original = 1  # the stride before this stage, as built
    body.eval()
    with torch.no_grad():
        for stage in body.stages:
            x = stage(x)
            factor = round(_PROBE / x.shape[-2]) // original
            original *= factor
            if stride * factor <= output_stride:
                stride *= factor
                continue
            strided = [m for m in stage.modules() if max(_pair(getattr(m, "stride", 1))) > 1]
            if any(type(m) is not nn.Conv2d for m in strided):
                names = sorted({type(m).__name__ for m in strided if type(m) is not nn.Conv2d})
                raise CnnkitError(f"output_stride {output_stride}: {', '.join(names)} strides past it; choose a "
                                  "backbone that strides by plain convolutions (resnet*) or output_stride=32")
            previous, dilation, seen = dilation, dilation * factor, False
            for m in stage.modules():
                if not isinstance(m, nn.Conv2d):
                    continue
                first = max(m.stride) > 1 and m.kernel_size[0] > 1 and not seen
                m.stride = (1, 1)
                if m.kernel_size[0] > 1 and (seen or first):
                    d = previous if first else dilation
                    m.dilation, m.padding = (d, d), (d * (m.kernel_size[0] - 1) // 2, d * (m.kernel_size[1] - 1) // 2)
                seen = seen or first
    body.train(was_training)
    body.strides = [min(s, output_stride) for s in body.strides]


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def deepest(body: StageFeatures, x: torch.Tensor) -> torch.Tensor:
    """The coarsest map of `body` for `x`."""
    maps: OrderedDict = body(x)
    return maps[next(reversed(maps))]
