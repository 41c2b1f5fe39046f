"""Models from other libraries by prefixed name: `tv/<name>` (torchvision), `timm/<name>` (timm, optional).

They are built on the fly, never registered: `get_spec('tv/resnet18')` returns a ModelSpec made here,
and `list_models(include_external=True)` lists them. Weights are never downloaded (weights=None,
pretrained=False); a state-dict file can still be given to `create_model(..., weights=path)`.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torchvision
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.registry import ModelSpec

TIMM_HINT = "install the optional extra: pip install 'cnnkit[timm]'"

# torchvision's classifier layer by family (the first matching prefix wins); "fc" for the rest
_TV_HEADS = (
    ("alexnet", "classifier.6"), ("vgg", "classifier.6"), ("convnext", "classifier.2"), ("densenet", "classifier"),
    ("mobilenet_v3", "classifier.3"), ("mobilenet_v2", "classifier.1"), ("efficientnet", "classifier.1"),
    ("mnasnet", "classifier.1"), ("squeezenet", "classifier.1"), ("maxvit", "classifier.5"), ("swin", "head"),
    ("vit", "heads.head"),
)
# options that make a torchvision model return one tensor (no auxiliary logits) and silence its init warning
_TV_DEFAULTS = {"googlenet": {"aux_logits": False, "init_weights": True},
                "inception_v3": {"aux_logits": False, "init_weights": True}}
_TV_INPUT = {"inception_v3": (3, 299, 299)}


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    """torchvision's classification models (not its detection, segmentation, video or quantized ones)."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def _timm() -> ModuleType:
    """The timm module, or the CnnkitError that says how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise CnnkitError(f"timm models need timm; {TIMM_HINT}") from None


def timm_names() -> list[str]:
    """timm's architectures, or none where timm is not installed."""
    try:
        return list(_timm().list_models())
    except CnnkitError:
        return []


def replace_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Swap the first nn.Conv2d (in registration order) for a fresh one taking `in_channels` inputs."""
    name, old = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if old is None or old.groups != 1:
        raise CnnkitError(f"cannot change the input channels of {type(model).__name__}: no plain first conv")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    bias=old.bias is not None, padding_mode=old.padding_mode)
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent), leaf, new)
    return model


def _torchvision_model(arch: str, *, num_classes: int = 1000, in_channels: int = 3, **kwargs) -> nn.Module:
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    return model if in_channels == 3 else replace_first_conv(model, in_channels)


def _timm_model(arch: str, *, num_classes: int = 1000, in_channels: int = 3, **kwargs) -> nn.Module:
    return _timm().create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)


def _torchvision_spec(name: str, arch: str) -> ModelSpec:
    if arch not in torchvision_names():
        raise unknown_name("torchvision model", arch, torchvision_names())
    head = next((h for prefix, h in _TV_HEADS if arch.startswith(prefix)), "fc")
    return ModelSpec(name, functools.partial(_torchvision_model, arch), "classify", "torchvision", head,
                     _TV_INPUT.get(arch, (3, 224, 224)), dict(_TV_DEFAULTS.get(arch, {})))


def _timm_spec(name: str, arch: str) -> ModelSpec:
    timm = _timm()
    if not timm.is_model(arch):
        raise unknown_name("timm model", arch, timm.list_models())
    try:  # timm's pretrained config names the classifier and the input size; absent for some architectures
        head = timm.get_pretrained_cfg_value(arch, "classifier") or "fc"
        input_size = tuple(timm.get_pretrained_cfg_value(arch, "input_size") or (3, 224, 224))
    except (AttributeError, RuntimeError):
        head, input_size = "fc", (3, 224, 224)
    return ModelSpec(name, functools.partial(_timm_model, arch), "classify", "timm", head, input_size)


SOURCES = {"tv": _torchvision_spec, "timm": _timm_spec}


def external_spec(name: str) -> ModelSpec:
    """The spec of a prefixed name such as 'tv/mobilenet_v3_small' or 'timm/resnet50d'."""
    prefix, _, arch = name.partition("/")
    if prefix not in SOURCES:
        raise unknown_name("model source", prefix, SOURCES)
    return SOURCES[prefix](name, arch)


def external_names() -> list[str]:
    """Every prefixed name: all of torchvision's classifiers, and timm's where it is installed."""
    return [f"tv/{n}" for n in torchvision_names()] + [f"timm/{n}" for n in timm_names()]
