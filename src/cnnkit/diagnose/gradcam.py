"""Grad-CAM (Selvaraju et al. 2017): where in the image the evidence for a class lies, from one conv layer.

For class c and layer activations A (N, C, h, w): the weights α_k = mean over (h, w) of ∂y_c/∂A_k, the map
ReLU(Σ_k α_k A_k), brought to the input size and min-max normalised per image to [0, 1]. y_c is the class
score before the softmax (the logit; for a one-output binary model, ±the logit).

Bringing the map to the input size: map cell i sits at the centre of its receptive field, input pixel
start + i·jump, and the map is sampled bilinearly there. Plain upsampling (F.interpolate) assumes the map
covers the whole image, true for padded convolutions (ResNet) but not for valid ones: LeNet-5's C3 map (10×10)
covers only the central 18 of 32 pixels, and stretching it shifts the heat outwards by up to 6 pixels.
The jump comes from probing the layer at twice the input size (h grows by H / jump); the start assumes the
layer crops the input symmetrically. For padded networks this is exactly bilinear upsampling.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import CnnkitError, unknown_name

PROBE_SIZE = 32  # the probe input's side when default_target_layer gets no sample


def _spatial_conv_outputs(model: nn.Module, sample: Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every Conv2d in the order they run on `sample`."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = [m.register_forward_hook(lambda m, a, o, name=name: seen.append((name, tuple(o.shape))))
               for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(sample)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen


def default_target_layer(model: nn.Module, sample: Tensor | None = None) -> str:
    """The name of the last Conv2d (in the order the forward pass runs them) whose output is still spatial
    (h and w > 1) on `sample` (N, C, H, W); without a sample, a 32×32 zero image probes the model.

    Why: the last conv layer holds the most class-specific features that still have a place in the image
    (the paper's choice). LeNet-5's C5 gives 1×1 on a 32×32 input, so C3 (10×10) is taken; for ResNet-20 it
    is layer3.2.conv2 (8×8 at 32×32)."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CnnkitError(f"{type(model).__name__} has no Conv2d layer; Grad-CAM needs a convolutional model")
    if sample is None:
        sample = torch.zeros(1, convs[0][1].in_channels, PROBE_SIZE, PROBE_SIZE)
    sample = sample.to(_device(model))
    spatial = [name for name, shape in _spatial_conv_outputs(model, sample[:1])
               if len(shape) == 4 and shape[2] > 1 and shape[3] > 1]
    if not spatial:
        raise CnnkitError(f"no Conv2d of {type(model).__name__} keeps a spatial output (h, w > 1) at input size "
                          f"{tuple(sample.shape[2:])}; give target_layer")
    return spatial[-1]


class _Stop(Exception):
    """Raised by a probe hook to end a forward pass at the target layer."""


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _output_size(model: nn.Module, module: nn.Module, size: tuple[int, int], channels: int) -> tuple[int, int]:
    """(h, w) of `module`'s output on a zero image of `size`; the forward pass stops there."""
    def stop(m, a, output):
        raise _Stop(output)

    handle = module.register_forward_hook(stop)
    try:
        with torch.inference_mode():
            model(torch.zeros(1, channels, *size, device=_device(model)))
    except _Stop as found:
        output = found.args[0]
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise CnnkitError("the target layer does not give feature maps (N, C, h, w); pick a conv layer") from None
        return output.shape[2], output.shape[3]
    finally:
        handle.remove()
    raise CnnkitError("the target layer did not run in the forward pass")


def layer_geometry(model: nn.Module, module: nn.Module, size: tuple[int, int], channels: int
                   ) -> tuple[tuple[float, float], tuple[float, float]]:
    """((start_y, start_x), (jump_y, jump_x)): input pixel index of the centre of map cell 0, and the input
    pixels between neighbouring cells, for `module`'s output on an input of `size` (see the module docstring)."""
    small = _output_size(model, module, size, channels)
    try:
        large = _output_size(model, module, (2 * size[0], 2 * size[1]), channels)
    except (RuntimeError, CnnkitError):  # the layer cannot take a larger input: plain upsampling
        large = small
    starts, jumps = [], []
    for n, h, h2 in zip(size, small, large):
        jump = n / (h2 - h) if h2 > h else n / h  # fixed-size outputs (adaptive pooling): stretched
        starts.append((n - 1 - (h - 1) * jump) / 2)
        jumps.append(jump)
    return (starts[0], starts[1]), (jumps[0], jumps[1])


def _to_input(cam: Tensor, size: tuple[int, int], start: tuple[float, float], jump: tuple[float, float]) -> Tensor:
    """(N, 1, h, w) map → (N, 1, H, W): input pixel u reads the map at (u − start) / jump, bilinearly. Each cell
    stands for the jump × jump tile around its centre (edge values repeat to the tile's edge, as in plain
    upsampling); pixels outside every tile (the border valid convolutions crop away) get no heat."""
    n, _, h, w = cam.shape
    axes, inside = [], []
    for length, cells, s0, j in zip(size, (h, w), start, jump):
        where = (torch.arange(length, dtype=torch.float32) - s0) / j  # (L,) in cell units
        axes.append(2 * where / max(cells - 1, 1) - 1 if cells > 1 else torch.zeros(length))  # ±1 at the outer cells
        inside.append((where >= -0.5) & (where <= cells - 0.5))
    gy, gx = torch.meshgrid(axes[0], axes[1], indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).expand(n, -1, -1, -1)  # (N, H, W, 2) as (x, y)
    full = F.grid_sample(cam, grid.to(cam), mode="bilinear", padding_mode="border", align_corners=True)
    return full * (inside[0][:, None] & inside[1][None, :]).to(cam)  # (N, 1, H, W)


def _class_scores(logits: Tensor) -> Tensor:
    """(N, K) scores; a one-output binary model's logit z becomes (−z, z), the scores of classes 0 and 1."""
    return torch.cat([-logits, logits], dim=1) if logits.shape[1] == 1 else logits


def gradcam(model: nn.Module, images: Tensor, target_layer: str | None = None,
            class_idx: Tensor | None = None) -> Tensor:
    """Grad-CAM heat maps (N, H, W) in [0, 1] of normalised model inputs `images` (N, C, H, W), for `class_idx`
    (N,) (None: each image's predicted class), from module `target_layer` (None: default_target_layer).

    The model runs in eval mode (restored afterwards); only the activations' gradients are computed
    (torch.autograd.grad), so no parameter's .grad changes. A map that is zero everywhere stays zero."""
    if images.ndim != 4:
        raise CnnkitError(f"Grad-CAM needs a batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    modules = dict(model.named_modules())
    name = target_layer or default_target_layer(model, images[:1])
    if name not in modules or not name:
        raise unknown_name("layer", name, [n for n in modules if n])
    seen: dict[str, Tensor] = {}

    def keep(module: nn.Module, args, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise CnnkitError(f"layer {name!r} does not give feature maps (N, C, h, w); pick a conv layer")
        seen["A"] = output
        return output.clone()  # later in-place ops (ReLU(inplace=True)) then leave A as it was

    was_training = model.training
    size = (images.shape[2], images.shape[3])
    model.eval()
    handle = None
    try:
        start, jump = layer_geometry(model, modules[name], size, images.shape[1])
        handle = modules[name].register_forward_hook(keep)
        with torch.enable_grad():
            x = images.detach().to(_device(model), torch.float32, copy=True).requires_grad_(True)  # a graph through A
            scores = _class_scores(model(x).float())  # (N, K)
            if class_idx is None:
                class_idx = scores.argmax(1)
            chosen = scores.gather(1, torch.as_tensor(class_idx).long().reshape(-1, 1).to(scores.device))
            (grads,) = torch.autograd.grad(chosen.sum(), seen["A"])  # (N, C, h, w); images are independent
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    acts = seen["A"].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): α_k
    cam = F.relu((weights * acts).sum(1, keepdim=True))  # (N, 1, h, w)
    cam = _to_input(cam, size, start, jump)[:, 0]  # (N, H, W)
    low = cam.amin(dim=(1, 2), keepdim=True)
    span = cam.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (cam - low) / span.clamp_min(1e-12), torch.zeros_like(cam)).cpu()


def gradcam_overlay(image: Tensor, heat: Tensor, alpha: float = 0.5) -> Tensor:
    """The heat map (H, W) in [0, 1] in the jet colours, blended over `image` (C, H, W) with C = 1 or 3, uint8
    or float (a float image is min-max scaled first): (3, H, W) uint8, alpha the heat map's weight."""
    from matplotlib import colormaps

    if image.ndim != 3 or image.shape[0] not in (1, 3) or tuple(image.shape[1:]) != tuple(heat.shape):
        raise CnnkitError(f"need an image (1 or 3, H, W) and a heat map (H, W) of the same size, got "
                          f"{tuple(image.shape)} and {tuple(heat.shape)}")
    img = image.detach().cpu().float()
    if image.dtype == torch.uint8:
        img = img / 255.0
    else:
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    img = img.expand(3, -1, -1)  # (3, H, W)
    colours = colormaps["jet"](heat.detach().cpu().clamp(0, 1).numpy())[..., :3]  # (H, W, 3)
    colours = torch.from_numpy(np.ascontiguousarray(colours)).permute(2, 0, 1).float()
    return ((1 - alpha) * img + alpha * colours).mul(255).round().clamp(0, 255).to(torch.uint8)


def plot_gradcam(run: str | Path, path: str | Path, split: str = "val", n: int = 8,
                 target_layer: str | None = None) -> Path:
    """The first n images of RUN's `split` as pairs original | Grad-CAM overlay of the predicted class, captioned
    with the true class and the prediction with its probability."""
    from cnnkit.diagnose.classification import captioned_grid, open_split

    data = open_split(run, split)
    positions = np.arange(min(n, len(data.indices)))
    images = data.images(positions)  # (n, C, S, S) uint8
    inputs = data.inputs(images)
    with torch.inference_mode():
        probs = data.task().predict_step(inputs)  # (n, K)
    p, pred = probs.max(1)
    layer = target_layer or default_target_layer(data.model, inputs[:1])
    heat = gradcam(data.model, inputs, layer, pred)
    classes, targets = data.card.classes, data.source.target_tensor(data.indices[positions])
    tiles, captions = [], []
    for i in range(len(positions)):
        tiles += [images[i].expand(3, -1, -1), gradcam_overlay(images[i], heat[i])]
        captions += [f"true {classes[int(targets[i])]}", f"{classes[int(pred[i])]} {float(p[i]):.2f}"]
    return captioned_grid(torch.stack(tiles), captions, path, columns=8,
                          title=f"Grad-CAM of the predicted class at {layer} ({split})")
