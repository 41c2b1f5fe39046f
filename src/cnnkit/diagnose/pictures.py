"""What the layers learn, as pictures: the first conv layer's kernels and any layer's feature maps."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from cnnkit.diagnose.inspect import default_num_classes, first_tensor, resolve
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.factory import get_spec


def tile_scale(h: int, w: int, least: int = 32) -> int:
    """The integer factor that enlarges an h×w tile (nearest neighbour) to at least `least` pixels."""
    return max(1, math.ceil(least / max(h, w)))


def image_grid(tiles: torch.Tensor) -> torch.Tensor:
    """(n, C, h, w) with C in (1, 3) → one grid image: each tile min-max normalised on its own, enlarged by
    tile_scale, ceil(sqrt(n)) tiles a row, 2 px of padding (torchvision.utils.make_grid)."""
    from torchvision.utils import make_grid

    tiles = tiles.detach().float().cpu()
    low = tiles.amin(dim=(1, 2, 3), keepdim=True)
    high = tiles.amax(dim=(1, 2, 3), keepdim=True)
    tiles = (tiles - low) / (high - low).clamp_min(1e-12)
    scale = tile_scale(*tiles.shape[2:])
    tiles = tiles.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return make_grid(tiles, nrow=math.ceil(math.sqrt(len(tiles))), padding=2, pad_value=1.0)


def _for_pictures(target: str | Path):
    """(model, card, label, run folder or None) for pictures; a bare model name gets random weights and a
    card that maps [0, 255] to [-1, 1]."""
    import warnings

    from cnnkit.runs.card import ModelCard

    model, label, size, card, run = resolve(target)
    if card is not None:
        return model, card, label, run
    warnings.warn(f"{label} is a model name, not a run folder: its weights are random", stacklevel=3)
    spec = get_spec(label)
    classes = [str(i) for i in range(default_num_classes(spec))]
    card = ModelCard(label, spec.task, classes, list(size), [0.5] * size[0], [0.5] * size[0])
    return model, card, label, None


def _save(grid: torch.Tensor, out: str | Path) -> Path:
    from torchvision.utils import save_image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out)
    return out


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first Conv2d in module order (the order the model's __init__ defines them)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise CnnkitError(f"{type(model).__name__} has no Conv2d layer, so no kernels to show")


def save_kernels(target: str | Path, out: str | Path | None = None) -> Path:
    """The first conv layer's kernels as a PNG grid: RGB kernels when it reads 1 or 3 channels, else one
    grey tile per (output, input) channel pair. Default out: RUN/plots/kernels.png or ./<model>_kernels.png."""
    model, _, label, run = _for_pictures(target)
    _, conv = first_conv(model)
    w = conv.weight  # (out, in / groups, kh, kw)
    tiles = w if w.shape[1] in (1, 3) else w.reshape(-1, 1, *w.shape[2:])
    default = run / "plots" / "kernels.png" if run else Path(f"{label.replace('/', '_')}_kernels.png")
    return _save(image_grid(tiles), out or default)


def feature_maps(target: str | Path, image: str | Path, layer: str) -> tuple[torch.Tensor, Path | None]:
    """The (C, H, W) output of module `layer` (e.g. 'c1', 'layer1.0.conv1') for one image, preprocessed
    with the run's model card transform; and the run folder (None for a model name)."""
    from cnnkit.data.images import BadImage, read_image

    model, card, label, run = _for_pictures(target)
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        raise unknown_name("layer", layer, [n for n in modules if n])
    try:
        x = card.transform()(read_image(image, card.input_size[0]))
    except BadImage as err:
        raise CnnkitError(f"cannot read image {image}: {err}") from None
    seen: list[torch.Tensor | None] = []

    def keep(module: nn.Module, args: tuple, output) -> None:
        out = first_tensor(output)  # a copy: an in-place activation after the layer would overwrite it
        seen.append(None if out is None else out.detach().clone())

    handle = modules[layer].register_forward_hook(keep)
    try:
        with torch.inference_mode():
            model(x.unsqueeze(0))
    finally:
        handle.remove()
    if not seen or seen[0] is None or seen[0].ndim != 4:
        shape = "no output" if not seen or seen[0] is None else f"shape {tuple(seen[0].shape)}"
        raise CnnkitError(f"layer {layer!r} of {label} gives {shape}, not feature maps (N, C, H, W); "
                          "pick a convolution, pooling or activation layer")
    return seen[0][0], run


def save_feature_maps(target: str | Path, image: str | Path, layer: str, out: str | Path | None = None,
                      max_maps: int = 64) -> Path:
    """The first `max_maps` feature maps of `layer` for `image`, one grey tile each, as a PNG grid.
    Default out: RUN/plots/feature_maps_<layer>.png or ./<model>_feature_maps_<layer>.png."""
    maps, run = feature_maps(target, image, layer)
    stem = f"feature_maps_{layer}.png"
    default = run / "plots" / stem if run else Path(f"{str(target).replace('/', '_')}_{stem}")
    return _save(image_grid(maps[:max_maps].unsqueeze(1)), out or default)
