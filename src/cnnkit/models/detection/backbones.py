"""Feature extractors for the detectors, built from any registry classification model.

    body = StageFeatures.from_registry("efficientnet_lite0", levels=3)   # strides 8, 16, 32
    body(x)            # OrderedDict {"0": (N, 40, H/8, W/8), "1": (N, 112, H/16, W/16), "2": (N, 1280, H/32, W/32)}
    body.out_channels  # [40, 112, 1280];  body.strides: [8, 16, 32]

The classifier is cut with cnnkit.engine.transfer.stages (its top-level children in forward order, head left out);
the stages run one after another, global pools, dropout and linear layers skipped. A dummy forward finds each
stage's stride and channels; the returned maps are the last output at each of the last `levels` strides.
This needs a classifier whose forward is its children in order (ResNets, VGG, EfficientNet, DenseNet, ...).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.tweaks import batch_norm_layers, set_batch_norm

__all__ = ["StageFeatures", "WithFPN", "LastMap", "build_backbone", "classification_backbone"]

_SKIPPED = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Linear, nn.Flatten)
_PROBE = 256  # side of the dummy image that measures strides
# classifiers whose children are not in forward order (AlexNet defines its activations after its layers), so
# replaying them would silently skip the nonlinearities
_OUT_OF_ORDER = ("AlexNet",)


def classification_backbone(backbone: str, weights: str | Path | None = None) -> tuple[nn.Module, object]:
    """(classifier, its ModelSpec) from a registry name and optional weights: a file, or named weights such as
    'efficientnet_lite0.imagenet' (whose architecture must be `backbone`'s). Unknown names raise with a
    did-you-mean over the classification models."""
    from cnnkit.models.factory import create_model, get_spec, list_models
    from cnnkit.models.pretrained import lookup

    classifiers = list_models(task="classify")
    if "." in backbone and not Path(backbone).exists():  # named weights given as the backbone
        named = lookup(backbone)
        if named is None:
            raise unknown_name("backbone weights", backbone, [f"{c}.imagenet" for c in classifiers])
        weights, backbone = backbone, named.architecture
    if backbone not in classifiers and "/" not in backbone:
        raise unknown_name("backbone", backbone, classifiers)
    spec = get_spec(backbone)
    if weights is None:
        return create_model(backbone), spec
    if Path(weights).is_file():
        with warnings.catch_warnings():  # the file's classifier head may have any size: the detector drops it
            warnings.filterwarnings("ignore", message="head .* has another shape")
            return create_model(backbone, weights=weights), spec
    named = lookup(str(weights))
    if named is None or named.architecture != backbone:
        raise CnnkitError(f"backbone_weights {str(weights)!r} is neither a file nor weights of {backbone!r} "
                          f"(e.g. '{backbone}.imagenet')")
    return create_model(str(weights)), spec


class StageFeatures(nn.Module):
    """A classifier's stages run in order, returning {"0": finest, ...} at the last `levels` strides."""

    def __init__(self, model: nn.Module, spec, levels: int = 3):
        super().__init__()
        from cnnkit.models.stages import stages

        if type(model).__name__ in _OUT_OF_ORDER:
            raise CnnkitError(f"{spec.name} cannot serve as a detection backbone (its layers are not defined in "
                              "forward order); choose e.g. resnet18, resnet50, vgg16 or efficientnet_lite0")
        groups = [[model.get_submodule(p) for p in paths] for paths in stages(model, spec)]
        groups = [[m for m in g if not isinstance(m, _SKIPPED)] for g in groups]
        shapes = self._probe(groups, model)  # (C, H) after each stage
        last_at_stride: dict[int, int] = {}
        for i, (_, h) in enumerate(shapes):
            last_at_stride[round(_PROBE / h)] = i  # a later stage at the same stride replaces an earlier one
        picked = sorted(last_at_stride.items())[-levels:]
        if len(picked) < levels:
            raise CnnkitError(f"{spec.name} has {len(last_at_stride)} strides; ask for at most that many levels")
        self.returned = [i for _, i in picked]  # indices of the stages whose outputs are returned
        self.stages = nn.ModuleList(nn.Sequential(*g) for g in groups[: self.returned[-1] + 1])
        self.strides = [s for s, _ in picked]
        self.out_channels = [shapes[i][0] for i in self.returned]

    @staticmethod
    @torch.no_grad()
    def _probe(groups: list[list[nn.Module]], model: nn.Module) -> list[tuple[int, int]]:
        was_training = model.training
        model.eval()  # a dummy batch must not move BN running statistics
        x, shapes = torch.zeros(1, 3, _PROBE, _PROBE), []
        try:
            for g in groups:
                for m in g:
                    x = m(x)
                shapes.append((x.shape[1], x.shape[2]))
        except RuntimeError as err:
            raise CnnkitError(f"{type(model).__name__} cannot be cut into stages run in order ({err}); choose a "
                              "backbone such as resnet18, resnet50, vgg16 or efficientnet_lite0") from None
        finally:
            model.train(was_training)
        return shapes

    @classmethod
    def from_registry(cls, backbone: str, *, weights: str | Path | None = None, levels: int = 3,
                      trainable_layers: int | None = None) -> StageFeatures:
        """`trainable_layers`: how many stages, counted from the last, train (torchvision's
        trainable_backbone_layers); None: 3 with weights, all without. With weights every BN layer is frozen
        (running statistics kept, γ/β fixed), as torchvision's FrozenBatchNorm2d does."""
        model, spec = classification_backbone(backbone, weights)
        body = cls(model, spec, levels)
        pretrained = weights is not None or "." in backbone
        n = len(body.stages)
        trainable = (3 if pretrained else n) if trainable_layers is None else trainable_layers
        if not 0 <= trainable <= n:
            raise CnnkitError(f"trainable_layers must be in 0..{n} for {spec.name}, got {trainable}")
        for stage in body.stages if pretrained else body.stages[: n - trainable]:
            if batch_norm_layers(stage):
                set_batch_norm(stage, "frozen")
        for stage in body.stages[: n - trainable]:
            stage.requires_grad_(False)
        return body

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """(N, 3, H, W) → {"0": (N, C_0, H/s_0, W/s_0), ...}, finest first."""
        out, wanted = OrderedDict(), set(self.returned)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in wanted:
                out[str(len(out))] = x
        return out


class WithFPN(nn.Module):
    """Backbone + torchvision's FeaturePyramidNetwork: every map gets `out_channels`; with `extra_pool` a
    stride-2 max pool of the coarsest map is added under "pool" (Faster R-CNN's fifth RPN level)."""

    def __init__(self, body: StageFeatures, out_channels: int = 256, extra_pool: bool = True):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels, out_channels, LastLevelMaxPool() if extra_pool else None)
        self.out_channels = out_channels
        self.strides = list(body.strides) + ([body.strides[-1] * 2] if extra_pool else [])

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


class LastMap(nn.Module):
    """The coarsest map only, projected to `out_channels` by a 1×1 convolution + ReLU (keeps the R-CNN box
    head's first FC layer, out_channels·7·7 → 1024, the same size whatever the backbone's width)."""

    def __init__(self, body: StageFeatures, out_channels: int = 256):
        super().__init__()
        self.body = body
        self.proj = nn.Sequential(nn.Conv2d(body.out_channels[-1], out_channels, 1), nn.ReLU(inplace=True))
        self.out_channels = out_channels
        self.strides = [body.strides[-1]]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        last = list(self.body(x).values())[-1]  # (N, C, H/32, W/32)
        return OrderedDict([("0", self.proj(last))])


def build_backbone(backbone: str, *, weights: str | Path | None = None, fpn: bool, levels: int = 3,
                   trainable_layers: int | None = None, out_channels: int = 256) -> WithFPN | LastMap:
    """The Faster R-CNN backbone: `fpn` True → WithFPN over `levels` maps + pool; False → LastMap."""
    body = StageFeatures.from_registry(backbone, weights=weights, levels=levels if fpn else 1,
                                       trainable_layers=trainable_layers)
    return WithFPN(body, out_channels) if fpn else LastMap(body, out_channels)
