"""The model card: its problem and output size, the task it builds around a model (target scaling for regression,
classes and ignored value for segmentation), its preprocessing, and the model it rebuilds (a partial transfer's
truncated network included)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.data.transforms import build_transform
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec
from cnnkit.models.stages import PartialNet, truncate
from cnnkit.runs.card import ModelCard
from cnnkit.tasks import (
    BinaryTask,
    ClassificationTask,
    DetectionTask,
    InstanceTask,
    MultilabelTask,
    RegressionTask,
    SegmentationTask,
)


def _card(task: str, classes: list[str], **fields) -> ModelCard:
    fields.setdefault("input_size", [1, 32, 32])
    fields.setdefault("mean", [0.5])
    fields.setdefault("std", [0.25])
    return ModelCard(fields.pop("architecture", "lenet5"), task, classes, **fields)


@pytest.mark.parametrize(("task", "classes", "problem", "outputs"), [
    ("binary", ["no", "yes"], "binary", 1),  # one sigmoid
    ("multiclass", ["a", "b", "c"], "multiclass", 3),
    ("classify", ["a", "b", "c", "d"], "multiclass", 4),  # runs written before the problem types had names
    ("multilabel", ["red", "round"], "multilabel", 2),
    ("regression", ["x", "y", "size"], "regression", 3),
    ("segment", ["bg", "leaf"], "segment", 2),
])
def test_problem_and_outputs(task: str, classes: list[str], problem: str, outputs: int) -> None:
    card = _card(task, classes)
    assert card.problem == problem and card.outputs == outputs


def test_an_unknown_task_is_a_one_line_error_with_a_suggestion() -> None:
    with pytest.raises(CnnkitError, match="did you mean 'multiclass'") as err:
        _card("multiclas", ["a", "b"]).problem  # noqa: B018
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("task", "kind"), [("binary", BinaryTask), ("multiclass", ClassificationTask),
                                            ("classify", ClassificationTask), ("multilabel", MultilabelTask),
                                            ("detect", DetectionTask), ("instance", InstanceTask)])
def test_make_task_gives_the_task_of_the_problem(task: str, kind: type) -> None:
    model = nn.Identity()
    made = _card(task, ["a", "b"]).make_task(model)
    assert type(made) is kind and made.model is model


def test_regression_task_predicts_in_the_targets_units() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    card = _card("regression", ["x", "y"], input_size=[1, 4, 4], target_mean=[10.0, -3.0], target_std=[2.0, 0.5])
    task = card.make_task(model)
    assert isinstance(task, RegressionTask) and not task.bounded
    images = torch.randn(5, 1, 4, 4)
    expected = model(images) * torch.tensor([2.0, 0.5]) + torch.tensor([10.0, -3.0])  # t = output · std + mean
    torch.testing.assert_close(task.predict_step(images), expected)
    bounded = _card("regression", ["x", "y"], input_size=[1, 4, 4], bounded=True).make_task(model)
    torch.testing.assert_close(bounded.predict_step(images), torch.sigmoid(model(images)))


def test_segmentation_task_gets_the_classes_and_the_ignored_value() -> None:
    task = _card("segment", ["bg", "leaf", "stem"]).make_task(nn.Identity())
    assert isinstance(task, SegmentationTask) and task.num_classes == 3 and task.ignore_index == 255
    assert _card("segment", ["bg", "leaf"], ignore_index=0).make_task(nn.Identity()).ignore_index == 0


def test_transform_is_the_cards_preprocessing() -> None:
    card = _card("multiclass", ["a", "b"], input_size=[1, 8, 8], mean=[0.3], std=[0.2])
    image = torch.randint(0, 256, (1, 20, 12), dtype=torch.uint8)
    expected = build_transform(8, 1, [0.3], [0.2])(image)
    out = card.transform()(image)
    assert out.shape == (1, 8, 8)
    torch.testing.assert_close(out, expected)


def test_build_model_sizes_the_architecture_by_the_card() -> None:
    model = _card("multiclass", ["a", "b", "c"], options={"activation": "gelu"}).build_model()
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
    assert isinstance(model.act1, nn.GELU)  # the card's architecture options reach create_model
    rgb = _card("multiclass", ["a", "b"], architecture="resnet20", input_size=[3, 32, 32], mean=[0.5] * 3,
                std=[0.2] * 3).build_model()
    assert rgb.conv1.in_channels == 3 and rgb(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    assert _card("binary", ["a", "b"]).build_model()(torch.zeros(1, 1, 32, 32)).shape == (1, 1)


def test_build_model_of_a_partial_transfer_is_the_truncated_network() -> None:
    card = _card("multiclass", ["a", "b", "c"], transfer={"strategy": "partial", "keep_stages": 2})
    model = card.build_model()
    assert isinstance(model, PartialNet)
    assert list(model.body.layers) == ["c1", "act1", "s2", "c3", "act3", "s4"]  # lenet5's first two stages
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
    by_hand = truncate(create_model("lenet5", num_classes=3), get_spec("lenet5"), 2, (1, 32, 32))
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in by_hand.state_dict().items()}
    by_hand.load_state_dict(model.state_dict())  # a saved partial model loads into the rebuilt one
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(by_hand.eval()(x), model.eval()(x))
    whole = _card("multiclass", ["a", "b", "c"], transfer={"strategy": "fine-tune"}).build_model()
    assert not isinstance(whole, PartialNet)  # only "partial" changes the architecture
