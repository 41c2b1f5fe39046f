"""cnnkit.losses.segmentation against F.cross_entropy and hand formulas on tiny images."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnkit.errors import CnnkitError
from cnnkit.losses.segmentation import SEGMENTATION_LOSSES, SMOOTH, segmentation_loss

N, C, H, W = 3, 4, 5, 6
IGNORE = 255


def batch(seed: int = 0, ignore_share: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (N, C, H, W) float64, target (N, H, W) int64 with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    target = torch.randint(0, C, (N, H, W), generator=g)
    target[torch.rand(N, H, W, generator=g) < ignore_share] = IGNORE
    return logits, target


WEIGHT = torch.tensor([0.5, 1.0, 2.0, 0.25])


def test_names() -> None:
    assert {"crossentropy", "ce", "dice", "jaccard", "soft_iou", "focal"} <= set(SEGMENTATION_LOSSES)


@pytest.mark.parametrize("weight", [None, WEIGHT])
@pytest.mark.parametrize("name", ["ce", "crossentropy"])
def test_cross_entropy_per_image_equals_torch(name: str, weight) -> None:
    logits, target = batch()
    ours = segmentation_loss(name, num_classes=C, class_weight=weight, ignore_index=IGNORE)(logits, target)
    assert ours.shape == (N,)
    w = None if weight is None else weight.double()
    expected = torch.stack(
        [F.cross_entropy(logits[i : i + 1], target[i : i + 1], weight=w, ignore_index=IGNORE) for i in range(N)]
    )
    torch.testing.assert_close(ours, expected)


def test_focal_gamma_zero_is_cross_entropy() -> None:
    logits, target = batch(1)
    ce = segmentation_loss("ce", num_classes=C, class_weight=WEIGHT)(logits, target)
    focal = segmentation_loss("focal:gamma=0", num_classes=C, class_weight=WEIGHT)(logits, target)
    torch.testing.assert_close(focal, ce)


def test_focal_formula() -> None:
    logits, target = batch(2)
    ours = segmentation_loss("focal:alpha=0.25", num_classes=C)(logits, target)  # gamma 2 by default
    valid = target != IGNORE
    p = logits.softmax(1).gather(1, target.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
    fl = -0.25 * (1 - p) ** 2 * p.log()
    expected = torch.stack([fl[i][valid[i]].mean() for i in range(N)])
    torch.testing.assert_close(ours, expected)


def overlap_by_hand(logits: torch.Tensor, target: torch.Tensor, jaccard: bool) -> torch.Tensor:
    """Per image: mean over classes present in the valid target of 1 − soft Dice / Jaccard, loops only."""
    out = []
    for i in range(logits.shape[0]):
        valid = target[i] != IGNORE
        p = logits[i].softmax(0)[:, valid]  # (C, V)
        t = target[i][valid]
        losses = []
        for c in range(logits.shape[1]):
            g = (t == c).double()
            if g.sum() == 0:
                continue
            inter, ps, gs = (p[c] * g).sum(), p[c].sum(), g.sum()
            if jaccard:
                losses.append(1 - (inter + SMOOTH) / (ps + gs - inter + SMOOTH))
            else:
                losses.append(1 - (2 * inter + SMOOTH) / (ps + gs + SMOOTH))
        out.append(torch.stack(losses).mean() if losses else torch.tensor(0.0, dtype=torch.float64))
    return torch.stack(out)


@pytest.mark.parametrize("name", ["dice", "jaccard", "soft_iou"])
def test_overlap_losses_equal_hand_formula(name: str) -> None:
    logits, target = batch(3)
    target[0, :, :] = torch.where(target[0] == 3, IGNORE, target[0])  # class 3 absent from image 0
    ours = segmentation_loss(name, num_classes=C)(logits, target)
    torch.testing.assert_close(ours, overlap_by_hand(logits, target, jaccard=name != "dice"))


def test_dice_tiny_case_by_hand() -> None:
    # 1 image, 2 classes, 2 pixels; p(class 1) = 0.5 and 1 / (1 + e^-2)
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, 2.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    q = 1 / (1 + torch.exp(torch.tensor(-2.0, dtype=torch.float64)))
    dice0 = (2 * 0.5) / ((0.5 + 1 - q) + 1)  # class 0: Σpg = .5, Σp = .5 + (1 − q), Σg = 1
    dice1 = (2 * q) / ((0.5 + q) + 1)
    expected = 1 - (dice0 + dice1) / 2
    ours = segmentation_loss("dice:smooth=1e-12", num_classes=2)(logits, target)
    torch.testing.assert_close(ours, expected.reshape(1))
    jac0, jac1 = 0.5 / ((0.5 + 1 - q) + 1 - 0.5), q / ((0.5 + q) + 1 - q)
    ours = segmentation_loss("jaccard:smooth=1e-12", num_classes=2)(logits, target)
    torch.testing.assert_close(ours, (1 - (jac0 + jac1) / 2).reshape(1))


@pytest.mark.parametrize("name", ["dice", "jaccard"])
def test_perfect_and_fully_wrong(name: str) -> None:
    _, target = batch(4, ignore_share=0.0)
    perfect = 50.0 * F.one_hot(target, C).movedim(-1, 1).double()
    wrong = 50.0 * F.one_hot((target + 1) % C, C).movedim(-1, 1).double()
    loss = segmentation_loss(name, num_classes=C)
    assert loss(perfect, target).abs().max() < 1e-6
    assert (loss(wrong, target) - 1).abs().max() < 1e-6


def test_combination_is_weighted_sum() -> None:
    logits, target = batch(5)
    parts = {
        n: segmentation_loss(n, num_classes=C, class_weight=WEIGHT)(logits, target)
        for n in ("ce", "dice", "focal", "jaccard")
    }
    combo = lambda spec: segmentation_loss(spec, num_classes=C, class_weight=WEIGHT)(logits, target)  # noqa: E731
    torch.testing.assert_close(combo("ce+dice"), parts["ce"] + parts["dice"])
    torch.testing.assert_close(combo("0.5*ce + 0.5*dice"), 0.5 * parts["ce"] + 0.5 * parts["dice"])
    torch.testing.assert_close(combo("focal+2*jaccard"), parts["focal"] + 2 * parts["jaccard"])
    gamma1 = segmentation_loss("focal:gamma=1", num_classes=C, class_weight=WEIGHT)(logits, target)
    torch.testing.assert_close(combo("0.3*focal:gamma=1+DICE"), 0.3 * gamma1 + parts["dice"])


@pytest.mark.parametrize("spec", ["ce", "dice", "jaccard", "focal", "0.5*ce+0.5*dice"])
def test_all_ignored_image_gives_zero_and_finite_gradients(spec: str) -> None:
    logits, target = batch(6)
    target[1] = IGNORE
    logits = logits.float().requires_grad_(True)
    loss = segmentation_loss(spec, num_classes=C, class_weight=WEIGHT)(logits, target)
    assert torch.isfinite(loss).all() and loss[1] == 0 and loss[0] > 0
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1].abs().max() == 0


def test_half_precision_logits_are_summed_in_float32() -> None:
    logits, target = batch(7)
    ours = segmentation_loss("dice", num_classes=C)(logits.half(), target)
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dicee", "unknown segmentation loss 'dicee'; did you mean 'dice'"),
        ("focall+dice", "did you mean 'focal'"),
        ("focal:gama=1", "did you mean 'gamma'"),
        ("ce:gamma=1", "takes no options"),
        ("focal:gamma", "key=value"),
        ("x*ce", "must be a number"),
        ("ce+", "empty segmentation loss"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(CnnkitError, match=message.replace("(", r"\(")) as info:
        segmentation_loss(spec, num_classes=C)
    assert "\n" not in str(info.value)


def test_bad_inputs() -> None:
    logits, target = batch(8)
    loss = segmentation_loss("ce+dice", num_classes=C)
    bad_label = target.clone()
    bad_label[0, 0, 0] = C
    cases = [
        ((logits, target[0]), "integer targets \\(N, H, W\\)"),
        ((logits, target.double()), "integer targets"),
        ((logits[:, :, :4], target), "differ in N, H or W"),
        ((logits[:2], target), "differ in N, H or W"),
        ((logits[:, :3], target), "needs logits \\(N, 4, H, W\\)"),
        ((logits, bad_label), "target label 4 is outside 0..3 and is not ignore_index 255"),
    ]
    for args, message in cases:
        with pytest.raises(CnnkitError, match=message) as info:
            loss(*args)
        assert "\n" not in str(info.value)
    with pytest.raises(CnnkitError, match="one weight per class"):
        segmentation_loss("ce", num_classes=C, class_weight=[1.0, 2.0])
    with pytest.raises(CnnkitError, match="1 or 4 values"):
        segmentation_loss("focal:alpha=0.1/0.9", num_classes=C)
