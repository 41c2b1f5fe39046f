"""Regularizers: weight penalties (L1/L2) and batch mixing (Mixup, CutMix).

Weight penalty (added to the data loss E):

    R(w) = λ1 Σ_j |w_j| + λ2 Σ_j w_j²

so one SGD step with learning rate η on E + R moves each selected weight by

    L1:  w ← w − η [∂E/∂w + λ1 sign(w)]
    L2:  w ← w − η [∂E/∂w + 2 λ2 w]

Only weights are penalised by default: biases and the parameters of normalisation layers
(BatchNorm, GroupNorm, LayerNorm, InstanceNorm, LocalResponseNorm) are left out.

Mixup (Zhang et al. 2018), with λ ~ Beta(α, α) and a random permutation π of the batch:

    x̃_i = λ x_i + (1 − λ) x_π(i),    t̃_i = λ onehot(y_i) + (1 − λ) onehot(y_π(i))

CutMix (Yun et al. 2019): a box of area fraction ≈ (1 − λ) is cut from x_π(i) and pasted
into x_i; after clipping to the image, λ is recomputed from the exact box:

    λ = 1 − (box height · box width) / (H · W),    t̃_i as for Mixup.
"""
from __future__ import annotations

import fnmatch
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cnnkit.errors import CnnkitError

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
PENALTY_KEYS = ("l1", "l2", "layers", "include_bias_and_norm")


# ----------------------------------------------------------------------------- penalty


def _check_lambda(name: str, value: float) -> float:
    """A λ must be a real number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CnnkitError(f"penalty {name} must be a number >= 0, got {value!r}")
    if value < 0:
        raise CnnkitError(f"penalty {name} must be >= 0, got {value!r}")
    return float(value)


def _norm_parameter_names(model: nn.Module) -> set[str]:
    """Full names of the parameters owned directly by normalisation modules."""
    names: set[str] = set()
    for path, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            prefix = f"{path}." if path else ""
            names.update(prefix + name for name, _ in module.named_parameters(recurse=False))
    return names


def _module_path(param_name: str) -> str:
    """'classifier.1.weight' → 'classifier.1' ('' for a parameter of the root module)."""
    return param_name.rpartition(".")[0]


def _glob_matches(glob: str, param_name: str) -> bool:
    """True when the glob matches the parameter's module path or its full name."""
    return fnmatch.fnmatchcase(_module_path(param_name), glob) or fnmatch.fnmatchcase(param_name, glob)


def _no_match_error(glob: str, model: nn.Module, why: str) -> CnnkitError:
    """The error for a layer glob that selects nothing, with a few module names to pick from."""
    paths = [path for path, _ in model.named_modules() if path]
    shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
    return CnnkitError(f"penalty layers {glob!r} {why}; modules are: {shown or '(none)'}")


class Penalty:
    """R(w) = λ1 Σ|w| + λ2 Σw² over the parameters picked by ``layers`` (an fnmatch glob).

    ``layers`` is matched against each parameter's module path ("classifier.1") and its full
    name ("classifier.1.weight"): "classifier.*", "fc*" and "*" (everything) all work.
    Biases and normalisation-layer parameters are skipped unless ``include_bias_and_norm``.
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0, layers: str = "*",
                 include_bias_and_norm: bool = False) -> None:
        if not isinstance(layers, str) or not layers:
            raise CnnkitError(f"penalty layers must be a non-empty glob string, got {layers!r}")
        self.l1 = _check_lambda("l1", l1)
        self.l2 = _check_lambda("l2", l2)
        self.layers = layers
        self.include_bias_and_norm = bool(include_bias_and_norm)

    def __repr__(self) -> str:
        return (f"Penalty(l1={self.l1}, l2={self.l2}, layers={self.layers!r}, "
                f"include_bias_and_norm={self.include_bias_and_norm})")

    def _is_excluded(self, name: str, norm_names: set[str]) -> bool:
        """Biases (name ends with 'bias') and norm-layer parameters, unless included."""
        if self.include_bias_and_norm:
            return False
        return name.endswith("bias") or name in norm_names

    def parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs that the penalty applies to; CnnkitError if there are none."""
        matched = [(n, p) for n, p in model.named_parameters() if _glob_matches(self.layers, n)]
        if not matched:
            raise _no_match_error(self.layers, model, "matches no parameter")
        norm_names = _norm_parameter_names(model)
        chosen = [(n, p) for n, p in matched if not self._is_excluded(n, norm_names)]
        if not chosen:
            raise _no_match_error(self.layers, model, "matches only biases and normalisation "
                                  "parameters (set include_bias_and_norm to penalise them)")
        return chosen

    def selected(self, model: nn.Module) -> list[str]:
        """Names of the penalised parameters, for display."""
        return [name for name, _ in self.parameters(model)]

    def __call__(self, model: nn.Module) -> Tensor:
        """λ1 Σ|w| + λ2 Σw², a scalar tensor on the parameters' device."""
        params = [p for _, p in self.parameters(model)]
        total = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
        for p in params:
            if self.l1:
                total = total + self.l1 * p.abs().sum()
            if self.l2:
                total = total + self.l2 * p.pow(2).sum()
        return total

    @classmethod
    def from_config(cls, value: Penalty | Mapping[str, object] | None) -> Penalty | None:
        """None → None; a Keras-like dict {"l1": 1e-4, "l2": 1e-4, "layers": "classifier.*"} → Penalty."""
        if value is None or isinstance(value, Penalty):
            return value
        if not isinstance(value, Mapping):
            raise CnnkitError(f"penalty must be a mapping like {{'l2': 1e-4}} or null, got {value!r}")
        unknown = sorted(set(value) - set(PENALTY_KEYS))
        if unknown:
            raise CnnkitError(f"unknown penalty key(s) {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(PENALTY_KEYS)}")
        return cls(**value)  # type: ignore[arg-type]


def from_config(value: Penalty | Mapping[str, object] | None) -> Penalty | None:
    """Module-level alias of :meth:`Penalty.from_config`."""
    return Penalty.from_config(value)


# ----------------------------------------------------------------------------- mixing


@dataclass(frozen=True)
class MixResult:
    """A mixed batch and how it was drawn. Unpacks as ``images, targets = mixup(...)``.

    ``box`` is (y0, y1, x0, x1) for CutMix (rows y0:y1, columns x0:x1), None for Mixup.
    """

    images: Tensor
    targets: Tensor
    lam: float
    perm: Tensor
    box: tuple[int, int, int, int] | None = None

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.images, self.targets))


def _check_batch(images: Tensor, targets: Tensor, num_classes: int) -> None:
    """images (N, C, H, W); targets (N,) integers in [0, K) or soft (N, K)."""
    if images.dim() != 4:
        raise CnnkitError(f"mixing needs images of shape (N, C, H, W), got {tuple(images.shape)}")
    if num_classes < 1:
        raise CnnkitError(f"num_classes must be >= 1, got {num_classes}")
    n = images.shape[0]
    if targets.shape == (n, num_classes) and targets.is_floating_point():
        return
    if targets.shape != (n,) or targets.is_floating_point() or targets.dtype == torch.bool:
        raise CnnkitError(f"mixing needs integer targets of shape ({n},) or soft targets "
                          f"({n}, {num_classes}), got {targets.dtype} {tuple(targets.shape)}")
    if n and (targets.min() < 0 or targets.max() >= num_classes):
        raise CnnkitError(f"targets must lie in [0, {num_classes}), got "
                          f"[{int(targets.min())}, {int(targets.max())}]")


def _soft(targets: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """(N,) class indices → (N, K) one-hot; soft (N, K) targets pass through."""
    if targets.dim() == 2:
        return targets.to(dtype)
    return torch.nn.functional.one_hot(targets.long(), num_classes).to(dtype)


def _float_dtype(images: Tensor) -> torch.dtype:
    return images.dtype if images.is_floating_point() else torch.get_default_dtype()


def _draw_lambda(alpha: float, generator: torch.Generator | None) -> float:
    """λ ~ Beta(α, α), reproducible from the torch generator (seeds Python's random)."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise CnnkitError(f"mixing alpha must be a number > 0, got {alpha!r}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return random.Random(seed).betavariate(alpha, alpha)


def _draw_perm(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    return torch.randperm(n, generator=generator).to(device)


def _mix_targets(targets: Tensor, perm: Tensor, lam: float, num_classes: int, dtype: torch.dtype) -> Tensor:
    """t̃ = λ onehot(y) + (1 − λ) onehot(y_π)."""
    onehot = _soft(targets, num_classes, dtype)
    return lam * onehot + (1.0 - lam) * onehot[perm]


def mixup(images: Tensor, targets: Tensor, num_classes: int, alpha: float = 0.2,
          generator: torch.Generator | None = None) -> MixResult:
    """x̃ = λ x + (1 − λ) x_π, t̃ = λ onehot(y) + (1 − λ) onehot(y_π), λ ~ Beta(α, α)."""
    _check_batch(images, targets, num_classes)
    if not images.is_floating_point():
        raise CnnkitError(f"mixup needs floating-point images, got {images.dtype}")
    lam = _draw_lambda(alpha, generator)
    perm = _draw_perm(images.shape[0], images.device, generator)
    mixed = lam * images + (1.0 - lam) * images[perm]
    soft = _mix_targets(targets, perm, lam, num_classes, images.dtype)
    return MixResult(mixed, soft, lam, perm)


def cutmix_box(height: int, width: int, lam: float,
               generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """A box (y0, y1, x0, x1) of sides ⌊H√(1−λ)⌋ × ⌊W√(1−λ)⌋ about a uniform centre, clipped."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y0, x0 = cy - cut_h // 2, cx - cut_w // 2
    return (max(y0, 0), min(y0 + cut_h, height), max(x0, 0), min(x0 + cut_w, width))


def cutmix(images: Tensor, targets: Tensor, num_classes: int, alpha: float = 1.0,
           generator: torch.Generator | None = None) -> MixResult:
    """Paste a box of x_π into x; λ = 1 − box area / (H·W); t̃ = λ onehot(y) + (1 − λ) onehot(y_π)."""
    _check_batch(images, targets, num_classes)
    height, width = images.shape[-2:]
    drawn = _draw_lambda(alpha, generator)
    perm = _draw_perm(images.shape[0], images.device, generator)
    y0, y1, x0, x1 = cutmix_box(height, width, drawn, generator)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images[perm][:, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    soft = _mix_targets(targets, perm, lam, num_classes, _float_dtype(images))
    return MixResult(mixed, soft, lam, perm, (y0, y1, x0, x1))
