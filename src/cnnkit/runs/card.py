"""The model card: everything `predict` needs besides the weights. The data contract travels with the model."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cnnkit.data.transforms import build_transform
from cnnkit.models.factory import create_model
from cnnkit.version import __version__


@dataclass
class ModelCard:
    """Everything `predict` needs besides the weights: the data contract travels with the model."""

    architecture: str
    task: str  # the problem type: binary | multiclass | multilabel | regression ('classify': multiclass)
    classes: list[str]  # class or label names; for regression the names of the target values
    input_size: list[int]  # [C, H, W]
    mean: list[float]
    std: list[float]
    whiten: bool = False
    resize: str = "resize"
    options: dict | None = None  # architecture options given to create_model
    cnnkit_version: str = __version__
    target_mean: list[float] | None = None  # regression: the model predicts (t − mean) / std
    target_std: list[float] | None = None
    bounded: bool = False  # regression to [0, 1]: a sigmoid output
    interpolation: str = "bilinear"  # how images are resized: pretrained weights carry the one they learnt with
    transfer: dict | None = None  # a transfer strategy's architecture change: {strategy: partial, keep_stages: 2}
    palette: list[list[int]] | None = None  # segmentation: one RGB colour per class, for masks and overlays
    ignore_index: int | None = None  # segmentation: the mask value that counts nowhere (255)
    pruned: dict | None = None  # structured pruning: {conv path: filters kept, "streams": [kept residual channels]}

    @property
    def problem(self) -> str:
        from cnnkit.tasks import problem_name

        return problem_name(self.task)

    @property
    def outputs(self) -> int:
        """Units of the last layer: one sigmoid for binary, else one per class, label or target."""
        return 1 if self.problem == "binary" else len(self.classes)

    def make_task(self, model: nn.Module, loss: str | None = None, **options):
        """The task of this card around `model`: its activation, loss and target scaling."""
        from cnnkit.tasks import make_task

        if self.problem == "regression":
            options.update(mean=self.target_mean, std=self.target_std, bounded=self.bounded)
        if self.problem == "segment":
            options.update(num_classes=len(self.classes),
                           ignore_index=255 if self.ignore_index is None else self.ignore_index)
        return make_task(self.problem, model, loss, **options)

    def transform(self):
        c, h, _ = self.input_size
        return build_transform(h, c, self.mean, self.std, whiten=self.whiten, resize=self.resize,
                               interpolation=self.interpolation)

    def build_model(self) -> nn.Module:
        model = create_model(self.architecture, num_classes=self.outputs, in_channels=self.input_size[0],
                             input_size=self.input_size, **(self.options or {}))
        if self.transfer and self.transfer.get("strategy") == "partial":
            from cnnkit.models.factory import get_spec
            from cnnkit.models.stages import truncate

            model = truncate(model, get_spec(self.architecture), self.transfer["keep_stages"], tuple(self.input_size))
        if self.pruned:
            from cnnkit.models.structured_groups import rebuild

            rebuild(model, self.pruned, self.input_size)
        return model
