"""The model a server holds: opened once, then asked for batches of image files through its task's recipe, the
very code of `cnnkit predict`, so the JSON of an image is what `cnnkit predict --json` prints for it.

    served = ServedModel("runs/digits")                  # a run folder, named weights, or an exported FILE.onnx
    served.predict([(Path("/tmp/x/0.png"), "cat.png")])  # one entry per image, "path" the uploaded name

A classifier's or a segmenter's entry is its predict row; a detector's (detect, instance), whose predict rows
are one per box, is {"path": NAME, "detections": [its rows]}, so that every image has exactly one entry, in
order, even with no box found: the concatenated "detections" are the rows of `cnnkit predict --json`.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from cnnkit.api import open_for_inference
from cnnkit.engine.inference import for_inference
from cnnkit.engine.precision import check_precision
from cnnkit.export.runtime import is_onnx
from cnnkit.recipes import recipe_for, runner
from cnnkit.serve.uploads import RequestError

PER_BOX = ("detect", "instance")  # the problems whose predict rows are one per detected object


class ServedModel:
    """A model opened once (batch norms folded, on its device, in its precision) and its recipe's predict."""

    def __init__(self, target: str | Path, *, precision: str = "auto", runtime: str | None = None,
                 options: dict | None = None):
        """Opened as `cnnkit predict` opens it (cnnkit.api.open_for_inference): a FILE.onnx on `runtime`
        (onnxruntime by default, or openvino). `options`: predict's post-processing (top_k, threshold,
        score_threshold, nms_iou) for every request; None values are left out, and one the task does not read is
        refused in one line, as by predict."""
        check_precision(precision)
        model, self.card = open_for_inference(target, precision, runtime)
        self.target = str(target)
        self.runtime = (runtime or "onnxruntime") if is_onnx(target) else "torch"
        # as api.predict: an ONNX file's runtime has its own precision, cnnkit's autocast stays out of its way
        self.precision = "fp32" if is_onnx(target) else precision
        self.recipe = recipe_for(self.card.problem)
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        runner.check_options(self.recipe.predict, self.options, self.recipe)
        self.per_box = self.card.problem in PER_BOX
        # folded here once: predict's own fold_batch_norm then finds it folded and copies nothing per batch
        self.model, mode = for_inference(model, self.precision)
        # what `auto` meant here: fp32, bf16 or fp16 (an ONNX file: the precision asked of its runtime)
        self.resolved_precision = mode.name if self.runtime == "torch" else precision

    def predict(self, items: list[tuple[Path, str]]) -> list[dict | RequestError]:
        """One entry per (file, uploaded name), in order, from one call of the recipe's predict; an image the
        predict code skipped (it should not: uploads are checked first) gets a RequestError in its place."""
        paths = [path for path, _ in items]
        rows = self.recipe.predict(self.model, self.card, paths, batch_size=max(1, len(paths)),
                                   precision=self.precision, **self.options)
        by_path: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_path[row["path"]].append(row)
        entries: list[dict | RequestError] = []
        for path, name in items:
            found = [{**row, "path": name} for row in by_path.get(str(path), [])]
            if self.per_box:
                entries.append({"path": name, "detections": found})
            elif len(found) == 1:
                entries.append(found[0])
            else:
                entries.append(RequestError(422, f"image {name!r} could not be read by the model's decoder"))
        return entries

    def metadata(self) -> dict:
        """The model card (dataclasses.asdict) with the problem type, where the model came from, what runs it and
        the predict options in force."""
        return {**dataclasses.asdict(self.card), "problem": self.card.problem, "source": self.target,
                "runtime": self.runtime, "precision": self.resolved_precision, "per_box": self.per_box,
                "predict_options": dict(self.options)}
