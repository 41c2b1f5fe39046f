"""cnnkit.tasks (the package's __init__): make_task and problem_name name every task class."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.tasks import (
    TASKS,
    BinaryTask,
    ClassificationTask,
    DetectionTask,
    InstanceTask,
    MultilabelTask,
    RegressionTask,
    SegmentationTask,
    make_task,
    problem_name,
)

LOGITS = torch.randn(6, 4)


def test_make_task_names_the_problem_types(fixed):
    assert isinstance(make_task("classify", fixed(LOGITS)), ClassificationTask)  # the old name still loads
    assert isinstance(make_task("multilabel", fixed(LOGITS)), MultilabelTask)
    with pytest.raises(CnnkitError, match="did you mean 'multilabel'"):
        make_task("multilable", fixed(LOGITS))


def test_every_task_class_is_registered_under_its_own_name():
    classes = (BinaryTask, ClassificationTask, MultilabelTask, RegressionTask, DetectionTask, SegmentationTask,
               InstanceTask)
    assert {cls.name: cls for cls in classes} == TASKS
    assert problem_name("classify") == "multiclass" and problem_name("segment") == "segment"
