"""The pieces of a classification run: the card's normalisation is the training images' own statistics, regression
targets are bounded or standardised from the training rows, an attack's budget is in pixel units (and refused for
whitened runs), and one image's prediction lists the top-k classes, the labels over the threshold or the values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.config import load_config
from cnnkit.data.builtin import open_source
from cnnkit.data.sources import problem_source
from cnnkit.errors import CnnkitError
from cnnkit.recipes.classifier import _target_scaling, card_for, make_attack, new_model, prediction
from cnnkit.runs.card import ModelCard


def test_card_for_normalises_with_the_training_images_statistics(make_image_folder) -> None:
    folder = make_image_folder({"cat": 6, "dog": 6}, size=32)
    cfg = load_config(overrides={"task": "multiclass", "model": {"name": "lenet5"},
                                 "data": {"source": str(folder), "channels": 3}})
    _, source = problem_source("multiclass", open_source(str(folder)))
    train = np.array([0, 3, 4, 7, 9, 11])
    card = card_for(cfg, source, {"train": train, "val": np.array([1, 2]), "test": np.array([5])}, seed=0)
    pixels = np.stack([np.asarray(Image.open(source.paths[i]).convert("RGB"), dtype=np.float64) / 255 for i in train])
    np.testing.assert_allclose(card.mean, pixels.mean(axis=(0, 1, 2)), atol=1e-6)  # the 32×32 images as they are
    np.testing.assert_allclose(card.std, pixels.std(axis=(0, 1, 2)), atol=1e-6)  # population std
    assert (card.architecture, card.task, card.classes) == ("lenet5", "multiclass", ["cat", "dog"])
    assert card.input_size == [3, 32, 32] and card.outputs == 2
    assert card.target_mean is None and not card.bounded
    model = new_model(cfg, card)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


class Targets:
    """A stand-in source: _target_scaling reads only the targets."""

    def __init__(self, targets):
        self.targets = np.asarray(targets, dtype=np.float64)


def _regression(loss: str | None = None):
    return load_config(overrides={"task": "regression", "train": {"loss": loss}})


def test_targets_in_0_1_give_a_sigmoid_output() -> None:
    source = Targets([[0.0, 0.2], [1.0, 0.7], [0.5, 0.5], [3.0, -1.0]])  # the last row is not training data
    assert _target_scaling(_regression(), source, np.array([0, 1, 2])) == {"bounded": True}


def test_other_targets_are_standardised_by_the_training_rows() -> None:
    source = Targets([[10.0, 5.0], [14.0, 5.0], [12.0, 5.0], [1000.0, -7.0]])
    train = np.array([0, 1, 2])
    scaling = _target_scaling(_regression(), source, train)
    t = source.targets[train]
    np.testing.assert_allclose(scaling["target_mean"], t.mean(0))
    assert scaling["target_std"][0] == pytest.approx(np.std([10.0, 14.0, 12.0]))
    assert scaling["target_std"][1] == 1.0  # a constant target keeps its scale instead of dividing by zero
    assert _target_scaling(_regression("huber"), source, train) == scaling  # a shift- and scale-free loss
    assert _target_scaling(_regression("mape"), source, train) == {}  # a loss in the targets' own units


CARD = ModelCard("lenet5", "multiclass", ["a", "b", "c"], [1, 4, 4], [0.5], [0.25])


def test_make_attack_none_unknown_and_whitened() -> None:
    assert make_attack(None, 0.1, CARD) is None
    with pytest.raises(CnnkitError, match="unknown attack 'fgms'; did you mean 'fgsm'"):
        make_attack("fgms", 0.1, CARD)
    whitened = ModelCard("lenet5", "multiclass", ["a", "b"], [1, 4, 4], [0.5], [0.25], whiten=True)
    with pytest.raises(CnnkitError, match="train without --whiten") as err:
        make_attack("fgsm", 0.1, whitened)
    assert "\n" not in str(err.value)


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))


def test_fgsm_moves_each_pixel_by_eps_over_std_along_the_gradient_sign() -> None:
    model, attack = _linear(), make_attack("fgsm", 0.1, CARD)
    images, targets = torch.zeros(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])  # pixel 0.5: far from [0, 1]'s ends
    x = images.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), targets).backward()
    expected = images + (0.1 / 0.25) * x.grad.sign()  # 0.1 in pixel units is 0.4 in normalised units
    torch.testing.assert_close(attack(model, images, targets), expected)


def test_pgd_stays_within_the_budget_and_the_valid_pixel_range() -> None:
    model, attack = _linear(), make_attack("pgd", 0.3, CARD)
    images = torch.full((4, 1, 4, 4), 1.6)  # pixel 0.9: the budget reaches past 1
    adv = attack(model, images, torch.tensor([0, 1, 2, 0]))
    assert (adv - images).abs().max() <= 0.3 / 0.25 + 1e-5
    assert adv.max() <= (1 - 0.5) / 0.25 + 1e-6 and adv.min() >= (0 - 0.5) / 0.25 - 1e-6
    assert not torch.equal(adv, images)


def test_prediction_top_k_classes() -> None:
    output = torch.tensor([0.1, 0.6, 0.3])
    result = prediction(CARD, "x.png", output, k=2, threshold=0.5)
    assert result == {"path": "x.png", "predictions": [{"label": "b", "probability": 0.6},
                                                       {"label": "c", "probability": 0.3}]}


def test_prediction_multilabel_lists_every_label_and_those_over_the_threshold() -> None:
    card = ModelCard("lenet5", "multilabel", ["red", "round", "big"], [1, 4, 4], [0.5], [0.25])
    result = prediction(card, "x.png", torch.tensor([0.7, 0.2, 0.5]), k=1, threshold=0.5)
    assert [p["label"] for p in result["predictions"]] == ["red", "big", "round"]  # all, best first
    assert result["labels"] == ["red", "big"]  # at or above the threshold


def test_prediction_regression_gives_named_values() -> None:
    card = ModelCard("lenet5", "regression", ["x", "y"], [1, 4, 4], [0.5], [0.25])
    result = prediction(card, "x.png", torch.tensor([1.23456789, -2.0]), k=5, threshold=0.5)
    assert result == {"path": "x.png", "values": {"x": 1.234568, "y": -2.0}}
