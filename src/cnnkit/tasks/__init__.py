"""Tasks: a model plus the maths of one problem type."""
from cnnkit.tasks.base import Batch, StepOutput, Task
from cnnkit.tasks.classification import ClassificationTask

__all__ = ["Batch", "StepOutput", "Task", "ClassificationTask"]
