"""Semantic-segmentation losses by name: per-image values for logits (N, C, H, W) and targets (N, H, W).

    loss = segmentation_loss("0.5*ce+0.5*dice", num_classes=4, ignore_index=255)
    per_image = loss(logits, target)         # (N,)
    per_image.mean().backward()

Every loss is an ``nn.Module`` called as ``loss(logits, target)`` with logits float (N, C, H, W) and
target int64 (N, H, W) holding 0..C-1 or ``ignore_index``. It returns (N,): one value per image, computed
over that image's valid pixels (target != ignore_index). An image with no valid pixel gives 0 (and a zero,
finite gradient), never NaN.

Members (p = softmax(logits) over dim 1, g = one_hot(target), sums over the image's valid pixels):

- ``crossentropy`` (alias ``ce``): Σ w_y (−log p_y) / Σ w_y, the weighted mean that
  ``F.cross_entropy(weight=w, ignore_index=..., reduction="mean")`` gives for that image alone.
- ``dice``: soft Dice (Milletari et al. 2016, V-Net), per class c:
  ℓ_c = 1 − (2 Σ p_c g_c + ε) / (Σ p_c + Σ g_c + ε), ε = 1e-7.
- ``jaccard`` (alias ``soft_iou``): soft Jaccard,
  ℓ_c = 1 − (Σ p_c g_c + ε) / (Σ p_c + Σ g_c − Σ p_c g_c + ε).
- ``focal``: Lin et al. 2017, per pixel −α_y (1 − p_y)^γ log p_y, γ = 2, α optional (None: 1; a float, or
  one value per class); averaged over valid pixels like ``crossentropy`` (with class_weight: the w_y-weighted
  mean), so γ = 0 and α = None give exactly ``crossentropy``.

Absent classes in Dice / Jaccard: a class with no valid ground-truth pixel in the image is left out, and the
loss is the mean of ℓ_c over the classes present in that image (weighted by class_weight when given:
Σ w_c ℓ_c / Σ w_c). This follows segmentation_models_pytorch's DiceLoss / JaccardLoss, which mask out
classes whose target is empty ("Dice loss is undefined for non-empty classes"); smp then divides by all C
classes (so its value is ours × present / C) and takes the sums over the whole batch, not per image.
MONAI's DiceLoss instead keeps every class (an absent class scores ε / (Σ p_c + ε), i.e. ~1 whenever any
probability mass lands on it). Probability mass put on an absent class is still penalised here, through the
smaller Σ p_c g_c of the present classes.

Combinations: ``'ce+dice'``, ``'0.5*ce+0.5*dice'``, ``'focal+jaccard'`` give Σ_k a_k ℓ_k (weights default 1).
Options after a colon, comma-separated: ``'focal:gamma=1,alpha=0.25'``, ``'dice:smooth=1'``,
``'0.5*focal:gamma=1+0.5*dice'``. ``alpha`` may list one value per class with ``/``: ``alpha=0.25/0.75``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import CnnkitError, unknown_name

SMOOTH = 1e-7


def _as_class_weight(class_weight: Tensor | Sequence[float] | None, num_classes: int) -> Tensor | None:
    if class_weight is None:
        return None
    weight = torch.as_tensor(class_weight, dtype=torch.get_default_dtype()).detach().clone()
    if weight.shape != (num_classes,):
        raise CnnkitError(
            f"class_weight must hold one weight per class ({num_classes}), got shape {tuple(weight.shape)}"
        )
    return weight


class SegmentationLoss(nn.Module):
    """Base: checks shapes and labels, then ``per_image(logits, target, valid) -> (N,)``.

    ``target`` passed to ``per_image`` has ignored pixels replaced by 0, and ``valid`` (N, H, W) bool marks the
    pixels that count.
    """

    name = "segmentation_loss"
    options: tuple[str, ...] = ()

    def __init__(
        self, *, num_classes: int, class_weight: Tensor | Sequence[float] | None = None, ignore_index: int = 255
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise CnnkitError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.register_buffer("class_weight", _as_class_weight(class_weight, num_classes), persistent=False)

    def check(self, logits: Tensor, target: Tensor) -> None:
        """One-line CnnkitError for logits not (N, C, H, W), target not (N, H, W) integer, or bad labels."""
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise CnnkitError(
                f"segmentation loss {self.name!r} needs logits (N, {self.num_classes}, H, W), "
                f"got {tuple(logits.shape)}"
            )
        if target.dim() != 3 or target.is_floating_point():
            raise CnnkitError(
                f"segmentation loss {self.name!r} needs integer targets (N, H, W), "
                f"got {target.dtype} {tuple(target.shape)}"
            )
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise CnnkitError(
                f"segmentation logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in N, H or W; "
                "resize or crop them to the same size"
            )
        bad = ((target < 0) | (target >= self.num_classes)) & (target != self.ignore_index)
        if bool(bad.any()):
            label = int(target[bad][0])
            raise CnnkitError(
                f"target label {label} is outside 0..{self.num_classes - 1} and is not ignore_index "
                f"{self.ignore_index}; fix num_classes or the masks"
            )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        self.check(logits, target)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # sums over many pixels: keep them in float32
        valid = target != self.ignore_index  # (N, H, W)
        return self.per_image(logits, target.long().masked_fill(~valid, 0), valid)

    def per_image(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        raise NotImplementedError

    def pixel_weight(self, target: Tensor, valid: Tensor, like: Tensor) -> Tensor:
        """w_y per pixel (N, H, W): class_weight[target] (1 without class_weight), 0 on ignored pixels."""
        weight = valid.to(like.dtype)
        if self.class_weight is not None:
            weight = weight * self.class_weight.to(like)[target]
        return weight

    @staticmethod
    def weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
        """Σ w ℓ / Σ w over each image (N, ...) → (N,); 0 where Σ w = 0."""
        num = (values * weight).flatten(1).sum(1)
        den = weight.flatten(1).sum(1)
        has = den > 0
        return torch.where(has, num / torch.where(has, den, torch.ones_like(den)), torch.zeros_like(num))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"


class PixelCrossEntropy(SegmentationLoss):
    """Σ w_y (−log p_y) / Σ w_y over the image's valid pixels (F.cross_entropy's weighted mean, per image)."""

    name = "crossentropy"

    def per_image(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        nll = F.cross_entropy(logits, target, reduction="none")  # (N, H, W), unweighted −log p_y
        return self.weighted_mean(nll, self.pixel_weight(target, valid, nll))


class PixelFocal(SegmentationLoss):
    """Focal loss (Lin et al. 2017) per pixel: −α_y (1 − p_y)^γ log p_y, mean over valid pixels
    (w_y-weighted with class_weight). γ = 0, α = None is ``crossentropy``."""

    name = "focal"
    options = ("gamma", "alpha")

    def __init__(self, *, gamma: float = 2.0, alpha: float | Sequence[float] | None = None, **base) -> None:
        super().__init__(**base)
        if gamma < 0:
            raise CnnkitError(f"focal gamma must be ≥ 0, got {gamma}")
        self.gamma = float(gamma)
        alpha_t = None if alpha is None else torch.as_tensor(alpha, dtype=torch.get_default_dtype()).reshape(-1)
        if alpha_t is not None and alpha_t.numel() not in (1, self.num_classes):
            raise CnnkitError(f"focal alpha needs 1 or {self.num_classes} values, got {alpha_t.numel()}")
        self.register_buffer("alpha", alpha_t, persistent=False)

    def per_image(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)  # (N, H, W)
        loss = -((1 - log_p.exp()).clamp_min(0) ** self.gamma) * log_p
        if self.alpha is not None:
            alpha = self.alpha.to(loss)
            loss = loss * (alpha if alpha.numel() == 1 else alpha[target])
        return self.weighted_mean(loss, self.pixel_weight(target, valid, loss))

    def extra_repr(self) -> str:
        alpha = None if self.alpha is None else [round(a, 6) for a in self.alpha.tolist()]
        return f"{super().extra_repr()}, gamma={self.gamma}, alpha={alpha}"


class _SoftOverlap(SegmentationLoss):
    """Soft Dice / Jaccard: per-class ℓ_c from I = Σ p_c g_c, P = Σ p_c, G = Σ g_c over valid pixels,
    averaged over the classes present in the image's ground truth (class_weight-weighted when given)."""

    options = ("smooth",)

    def __init__(self, *, smooth: float = SMOOTH, **base) -> None:
        super().__init__(**base)
        if smooth <= 0:
            raise CnnkitError(f"{self.name} smooth must be > 0 (it keeps empty sums finite), got {smooth}")
        self.smooth = float(smooth)

    def per_image(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        mask = valid.unsqueeze(1).to(logits.dtype)  # (N, 1, H, W)
        p = logits.softmax(dim=1) * mask  # (N, C, H, W)
        g = F.one_hot(target, self.num_classes).movedim(-1, 1).to(logits.dtype) * mask
        inter, p_sum, g_sum = (p * g).sum((2, 3)), p.sum((2, 3)), g.sum((2, 3))  # (N, C) each
        per_class = 1 - self.score(inter, p_sum, g_sum)  # (N, C)
        present = (g_sum > 0).to(per_class.dtype)
        if self.class_weight is not None:
            present = present * self.class_weight.to(per_class)
        return self.weighted_mean(per_class, present)

    def score(self, inter: Tensor, p_sum: Tensor, g_sum: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, smooth={self.smooth}"


class SoftDice(_SoftOverlap):
    """ℓ_c = 1 − (2 Σ p g + ε) / (Σ p + Σ g + ε) (Milletari et al. 2016), mean over present classes."""

    name = "dice"

    def score(self, inter: Tensor, p_sum: Tensor, g_sum: Tensor) -> Tensor:
        return (2 * inter + self.smooth) / (p_sum + g_sum + self.smooth)


class SoftJaccard(_SoftOverlap):
    """ℓ_c = 1 − (Σ p g + ε) / (Σ p + Σ g − Σ p g + ε) (soft IoU), mean over present classes."""

    name = "jaccard"

    def score(self, inter: Tensor, p_sum: Tensor, g_sum: Tensor) -> Tensor:
        return (inter + self.smooth) / (p_sum + g_sum - inter + self.smooth)


class CombinedLoss(nn.Module):
    """Σ_k a_k ℓ_k of per-image member losses, (N,)."""

    def __init__(self, terms: Sequence[tuple[float, SegmentationLoss]]) -> None:
        super().__init__()
        self.weights = [float(a) for a, _ in terms]
        self.members = nn.ModuleList(loss for _, loss in terms)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total = None
        for a, loss in zip(self.weights, self.members):
            value = a * loss(logits, target)
            total = value if total is None else total + value
        return total

    def extra_repr(self) -> str:
        return "weights=" + repr(self.weights)


_LOSSES: dict[str, type[SegmentationLoss]] = {
    "crossentropy": PixelCrossEntropy,
    "ce": PixelCrossEntropy,
    "dice": SoftDice,
    "jaccard": SoftJaccard,
    "soft_iou": SoftJaccard,
    "focal": PixelFocal,
}
SEGMENTATION_LOSSES: list[str] = sorted(_LOSSES)


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CnnkitError(f"{what} must be a number, got {text!r}") from None


def _parse_options(name: str, text: str) -> dict[str, float | list[float]]:
    """'gamma=1,alpha=0.25/0.75' → {'gamma': 1.0, 'alpha': [0.25, 0.75]}."""
    allowed = _LOSSES[name].options
    options: dict[str, float | list[float]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not value:
            raise CnnkitError(f"segmentation loss option {item!r} must look like key=value (e.g. 'focal:gamma=1')")
        if key not in allowed:
            if not allowed:
                raise CnnkitError(f"segmentation loss {name!r} takes no options, got {key!r}")
            raise unknown_name(f"option of segmentation loss {name!r}:", key, allowed)
        values = [_number(v, f"option {key} of {name!r}") for v in value.split("/")]
        options[key] = values if len(values) > 1 else values[0]
    return options


def _parse_term(term: str) -> tuple[float, str, dict]:
    """'0.5*focal:gamma=1' → (0.5, 'focal', {'gamma': 1.0})."""
    weight = 1.0
    head, _, option_text = term.partition(":")
    if "*" in head:
        factor, _, head = head.partition("*")
        weight = _number(factor.strip(), f"weight {factor.strip()!r} in segmentation loss {term!r}")
    name = head.strip().lower()
    if not name:
        raise CnnkitError(f"segmentation loss term {term!r} has no loss name; write e.g. '0.5*ce+0.5*dice'")
    if name not in _LOSSES:
        raise unknown_name("segmentation loss", name, _LOSSES)
    return weight, name, _parse_options(name, option_text)


def segmentation_loss(
    spec: str,
    *,
    num_classes: int,
    class_weight: Tensor | Sequence[float] | None = None,
    ignore_index: int = 255,
) -> nn.Module:
    """The loss named by `spec` (a member, 'name:key=value,...', or a sum 'a*name+b*name'), as a module
    (logits (N, C, H, W), target int64 (N, H, W)) → (N,) per-image losses. See the module docstring."""
    terms = [t.strip() for t in str(spec).split("+")]
    if not spec or not all(terms):
        raise CnnkitError(f"empty segmentation loss in {spec!r}; write e.g. 'ce', 'dice' or '0.5*ce+0.5*dice'")
    base = dict(num_classes=num_classes, class_weight=class_weight, ignore_index=ignore_index)
    parsed = [_parse_term(term) for term in terms]
    members = [(weight, _LOSSES[name](**options, **base)) for weight, name, options in parsed]
    if len(members) == 1 and members[0][0] == 1.0:
        return members[0][1]
    return CombinedLoss(members)
