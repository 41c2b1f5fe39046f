"""Tasks: a model plus the maths of one problem type (the notes' table in cnnkit.tasks.pairing)."""
from torch import nn

from cnnkit.errors import unknown_name
from cnnkit.tasks.base import Batch, StepOutput, Task
from cnnkit.tasks.classification import ClassificationTask
from cnnkit.tasks.detection import DetectionTask, InstanceTask
from cnnkit.tasks.multilabel import BinaryTask, MultilabelTask
from cnnkit.tasks.regression import RegressionTask
from cnnkit.tasks.segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {"binary": BinaryTask, "multiclass": ClassificationTask,
                                "multilabel": MultilabelTask, "regression": RegressionTask, "detect": DetectionTask,
                                "segment": SegmentationTask, "instance": InstanceTask}
ALIASES = {"classify": "multiclass"}  # runs written before the problem types had names


def problem_name(name: str) -> str:
    """The canonical problem type of a task name; unknown names fail with a suggestion."""
    name = ALIASES.get(name, name)
    if name not in TASKS:
        raise unknown_name("task", name, TASKS)
    return name


def make_task(problem: str, model: nn.Module, loss: str | nn.Module | None = None, **options) -> Task:
    """The task object of `problem` ('binary', 'multiclass', 'multilabel', 'regression') around `model`."""
    return TASKS[problem_name(problem)](model, loss, **options)


__all__ = ["Batch", "StepOutput", "Task", "ClassificationTask", "DetectionTask", "InstanceTask", "BinaryTask",
           "MultilabelTask", "RegressionTask", "SegmentationTask", "TASKS", "make_task", "problem_name"]
