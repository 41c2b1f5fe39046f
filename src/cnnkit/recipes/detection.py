"""`--task detect`: train, evaluate and predict with a detector, in the same run folder as every other task.

    cnnkit train --task detect --data synthetic-shapes:objects=3 --model yolo --out runs/boxes
    cnnkit evaluate runs/boxes --json        # map, map50, map75, per_class, errors
    cnnkit predict runs/boxes photo.jpg --json --out drawn/   # COCO results; images with the boxes drawn

`--task instance` (instance segmentation, Mask R-CNN) runs the same way on data with instance masks (COCO
segmentation, Penn-Fudan, synthetic-shapes): the targets carry masks, evaluate adds mask_map, mask_map50 and
mask_map75, the checkpoints select on val_mask_map, and predict adds each object's "segmentation" (COCO RLE)
and draws NAME_instances.png:

    cnnkit train --task instance --data ../shared/data/pennfudan --model mask_rcnn --out runs/people

The data is a cnnkit.data.detection.source.DetectionSource (COCO, VOC, YOLO, Penn-Fudan or built-in); the split is
by image, seeded, recorded in split.json (the test share locked, as for classification). The model card says
`task: detect` and how images were fitted (letterbox to input_size); the detectors normalise inside.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.data.detection.loader import FitDetection, fit_geometry, make_detection_loader, to_image_coordinates
from cnnkit.diagnose.detection import open_source, score_detections
from cnnkit.engine.inference import fold_batch_norm, for_inference, fp32_outputs
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec
from cnnkit.recipes.base import Build, Context, Recipe
from cnnkit.recipes.by_image import index_record, index_split, read_index_split
from cnnkit.runs.card import ModelCard
from cnnkit.runs.inputs import readable_batches
from cnnkit.tasks.detection import DetectionTask, InstanceTask

POSTPROCESS = ("score_thresh", "nms_thresh")
TASK_CLASSES = {"detect": DetectionTask, "instance": InstanceTask}
FROZEN_REGIONS = ("rcnn", "spp_net")  # frozen backbones whose region features are cached per image
PROPOSERS = ("rcnn", "spp_net", "fast_rcnn")  # the R-CNN line: selective-search proposals, model.propose(images)
PROPOSAL_GREY = (160, 160, 160)


def _card(cfg: Config, source) -> ModelCard:
    spec = get_spec(cfg.model.name)
    if spec.task != cfg.task:
        if cfg.task == "detect" and spec.task == "instance":
            raise CnnkitError(f"{cfg.model.name} is an instance-segmentation model; train it with --task instance, "
                              "or pick a detector for --task detect (see `cnnkit models --task detect`)")
        wanted = "a detector" if cfg.task == "detect" else "an instance-segmentation model (mask_rcnn)"
        raise CnnkitError(f"{cfg.model.name} is a {spec.task} model; --task {cfg.task} needs {wanted} "
                          f"(see `cnnkit models --task {cfg.task}`)")
    size = cfg.data.image_size or spec.input_size[1]
    card = ModelCard(cfg.model.name, cfg.task, list(source.classes), [3, size, size], [0.0] * 3, [1.0] * 3,
                     resize="letterbox", options=dict(cfg.model.options))
    card.options = _sized_options(card)  # so predict rebuilds the detector as it trained
    return card


def _sized_options(card: ModelCard) -> dict:
    """The card's model options, and the input size for the detectors' own resizing (min_size/max_size of the
    R-CNN line and SSD, image_size of YOLO) unless given: the loader already letterboxed to that size."""
    options = dict(card.options or {})
    accepted = inspect.signature(get_spec(card.architecture).fn).parameters
    size = card.input_size[1]
    for key in ("min_size", "max_size", "image_size"):
        if key in accepted:
            options.setdefault(key, size)
    return options


def _model(card: ModelCard, cfg: Config | None = None) -> torch.nn.Module:
    options = dict(card.options or {})
    if cfg is not None and cfg.model.weights:
        return create_model(card.architecture, num_classes=len(card.classes), weights=cfg.model.weights, **options)
    return create_model(card.architecture, num_classes=len(card.classes), **options)


class DetectionRecipe(Recipe):
    """--task detect: boxes from a COCO, VOC, YOLO, Penn-Fudan or built-in source; COCO mAP; the verdict on
    1 − mAP; predictions as COCO results."""

    name = "detection"
    tasks = ("detect",)
    options = frozenset({"data.images"})
    excluded = frozenset({"train.loss"})
    report_sections = ("summary", "verdict", "curves", "detection", "data", "timing", "config")
    curve_metric = "map"
    unsupported_reason = {"train.loss": "a detector trains with its own losses"}

    def check(self, cfg: Config) -> None:
        if cfg.model.name in FROZEN_REGIONS and cfg.data.augment != "none":
            warnings.warn(f"{cfg.model.name} caches each training image's region features once; with --augment "
                          f"{cfg.data.augment} every augmented image is new to the cache (computed again and "
                          "stored every epoch): --augment none keeps its epochs fast", stacklevel=2)

    def open_source(self, cfg: Config) -> Any:
        return open_source(cfg)

    def new_split(self, cfg: Config, source: Any) -> tuple[dict[str, np.ndarray], dict]:
        split = index_split(cfg, source)
        return split, index_record(cfg, source, split)

    def split_record(self, cfg: Config, source: Any, split: dict[str, np.ndarray]) -> dict:
        return index_record(cfg, source, split)

    def read_split(self, source: Any, record: dict, name: str) -> np.ndarray:
        return read_index_split(source, record, name)

    def loader(self, cfg: Config, source: Any, indices: np.ndarray, card: ModelCard, *, train: bool,
               dist: Any = None) -> Any:
        return make_detection_loader(source, indices, size=card.input_size[1], batch_size=cfg.train.batch_size,
                                     workers=cfg.data.workers, seed=cfg.train.seed, masks=card.problem == "instance",
                                     train=train, augment=cfg.data.augment if train else "none", dist=dist)

    def card(self, cfg: Config, source: Any, split: dict) -> ModelCard:
        return _card(cfg, source)

    def model(self, cfg: Config, card: ModelCard, *, fresh: bool) -> torch.nn.Module:
        return _model(card, cfg if fresh else None)

    def build(self, ctx: Context, model: torch.nn.Module) -> Build:
        task_class = TASK_CLASSES[ctx.card.problem]
        task = task_class(model, ctx.cfg.train.loss, classes=ctx.card.classes)
        # detectors have no val loss in eval mode: val_map (boxes), or val_mask_map for instance segmentation
        monitor = task_class.monitor if ctx.cfg.train.monitor == "val_loss" else ctx.cfg.train.monitor
        return Build(task, monitor=monitor)

    def metrics(self, model: torch.nn.Module, card: ModelCard, cfg: Config, loader: Any, *,
                plot: Path | None = None, precision: str = "auto") -> dict:
        """COCO mAP, mAP50, mAP75, per-class AP and the error breakdown's totals (batch norms folded, in
        `precision`, scored from fp32 boxes); with `plot`, the PR curves."""
        return _metrics(model, card, loader, cfg.train.device, plot, precision)

    def measure_options(self, run: Path, split: str) -> dict:
        plot = run / "plots" / f"pr_curves_{split}.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        return {"plot": plot}

    def predict(self, model: torch.nn.Module, card: ModelCard, paths: list[Path], *,
                score_threshold: float | None = None, nms_iou: float | None = None,
                out: str | Path | None = None, batch_size: int = 8, precision: str = "auto",
                proposals: int | None = None) -> list[dict]:
        return predict_detector(model, card, paths, score_thresh=score_threshold, nms_thresh=nms_iou, out=out,
                                batch_size=batch_size, precision=precision, proposals=proposals)

    def augment_preview(self, source: str, out: str | Path, *, preset: str = "standard", n: int = 8,
                        size: int | None = None, seed: int = 0) -> Path:
        """Each image with its boxes, then augmented copies with their moved boxes (an instance run: masks too)."""
        from cnnkit.data.detection.preview import augment_preview

        return augment_preview(source, out, preset, n=n, size=size or 128, seed=seed, masks="instance" in self.tasks)


class InstanceRecipe(DetectionRecipe):
    """--task instance: Mask R-CNN on data with instance masks; box and mask mAP; the verdict on 1 − mask mAP;
    predictions with each object's mask as COCO RLE."""

    name = "instance segmentation"
    tasks = ("instance",)
    curve_metric = "mask_map"


@torch.inference_mode()
def _detections(model: torch.nn.Module, loader, device: str = "auto", problem: str = "detect",
                precision: str = "auto") -> tuple[list[dict], list[dict]]:
    """(targets, predictions) per image of `loader`, in network pixels, on the CPU (fp32); for "instance" with
    the masks as COCO RLEs ("rles"). The model runs with its batch norms folded, in `precision`."""
    from cnnkit.tasks.detection import with_rles

    trainer = Trainer(TASK_CLASSES[problem](fold_batch_norm(model)), None, epochs=1, device=device,
                      precision=precision)
    trainer.model.eval()
    targets, predictions = [], []
    for batch in loader:
        with trainer.precision.autocast():  # predict_step gives fp32 boxes, scores and masks on the CPU
            predictions += trainer.task.predict_step(trainer.precision.input(batch.images.to(trainer.device)))
        if problem == "instance":
            targets += [{k: v for k, v in with_rles(t).items() if k in ("boxes", "labels", "rles")}
                        for t in batch.targets]
        else:
            targets += [{"boxes": t["boxes"], "labels": t["labels"]} for t in batch.targets]
    return targets, predictions


def _metrics(model: torch.nn.Module, card: ModelCard, loader, device: str = "auto", plot: Path | None = None,
             precision: str = "auto") -> dict:
    """COCO metrics and the error breakdown's totals; with `plot`, the precision/recall curves there (PNG).
    Instance runs: the box metrics and the same with mask IoU, prefixed mask_ (mask_map, mask_map50, ...)."""
    from cnnkit.metrics.detection import plot_pr_curves

    targets, predictions = _detections(model, loader, device, card.problem, precision)
    result, errors = score_detections(targets, predictions, card.classes, card.problem)
    if plot is not None:
        plot_pr_curves(result, plot)
    shown = {k: v for k, v in result.items() if k not in ("pr_curves", "mask_pr_curves")}
    shown["errors"] = {k: v for k, v in errors.items() if not isinstance(v, dict)}  # the totals
    return shown


def set_postprocess(model: torch.nn.Module, score_thresh: float | None, nms_thresh: float | None) -> None:
    options = {k: v for k, v in zip(POSTPROCESS, (score_thresh, nms_thresh)) if v is not None}
    for name, value in options.items():
        if not 0 <= value <= 1:
            raise CnnkitError(f"the {name.replace('_', ' ')}old must be in [0, 1], got {value}")
    if options:
        model.set_postprocess(**options)


def check_proposals(model: torch.nn.Module, card: ModelCard, proposals: int | None, out: str | Path | None
                    ) -> None:
    """Refuse `--proposals` in one line where there is nothing to draw: no `out`, or a model without proposals."""
    if proposals is None:
        return
    if not callable(getattr(model, "propose", None)):
        what = "an exported file" if type(model).__name__ == "OnnxModel" else f"a {card.architecture} run"
        raise CnnkitError(f"--proposals draws the region proposals of {', '.join(PROPOSERS)} runs (selective "
                          f"search); {what} (--task {card.problem}) has none")
    if proposals < 1:
        raise CnnkitError(f"--proposals must be at least 1, got {proposals}")
    if out is None:
        raise CnnkitError("--proposals draws on the images that --out DIR gets; add --out DIR")


@torch.inference_mode()
def predict_detector(model: torch.nn.Module, card: ModelCard, paths: list[Path], *, score_thresh: float | None = None,
                     nms_thresh: float | None = None, out: str | Path | None = None, batch_size: int = 8,
                     precision: str = "auto", proposals: int | None = None) -> list[dict]:
    """COCO-style results, one dict per detection: path, label, category_id (1-based, as COCO), bbox [x, y, w, h]
    in the image's pixels, score. With `out`, each image is saved there with its boxes drawn (NAME_boxes.png);
    with `proposals` (the R-CNN line: models with `propose`), the first that many region proposals drawn too,
    thin and grey, under the detections.
    An instance model's rows also hold "segmentation": the object's mask in the image's pixels as COCO RLE
    {"size": [H, W], "counts": str}, and `out` gets NAME_instances.png (masks blended, boxes drawn).
    Images are decoded by worker processes and letterboxed `batch_size` at a time into one forward pass of the
    model with its batch norms folded, in `precision` (boxes read as fp32)."""
    if batch_size < 1:
        raise CnnkitError(f"--batch-size must be at least 1, got {batch_size}")
    check_proposals(model, card, proposals, out)
    set_postprocess(model, score_thresh, nms_thresh)
    model, mode = for_inference(model, precision)
    fit = FitDetection(card.input_size[1], "letterbox")
    results = []
    for kept, images in readable_batches(paths, batch_size):  # uint8 (3, H, W) each
        x = mode.input(torch.stack([fit(image) for image in images]).float().div(255).to(mode.device))  # (n, 3, S, S)
        with mode.autocast():
            found = fp32_outputs(model(x))
        # the proposals the forward pass just made (cached on disk), in network pixels
        regions = [p[:proposals].float().cpu() for p in model.propose(x)] if proposals else [None] * len(kept)
        for path, image, detections, region in zip(kept, images, found, regions):
            results += _image_results(path, image, {k: v.cpu() for k, v in detections.items()}, card, out, region)
    return results


def _image_results(path: Path, image: torch.Tensor, found: dict, card: ModelCard, out: str | Path | None,
                   proposals: torch.Tensor | None = None) -> list[dict]:
    """One image's rows (see predict_detector) from the model's detections in network pixels; drawn to `out`
    (with `proposals` (P, 4) in network pixels under the detections)."""
    h, w = image.shape[-2:]
    shape, scale, pad = fit_geometry(h, w, card.input_size[1], "letterbox")  # (nh, nw), (sx, sy), (left, top)
    boxes = to_image_coordinates(found["boxes"].float(), torch.tensor(scale), torch.tensor(pad), h, w)
    rows = [{"path": str(path), "label": card.classes[int(c)], "category_id": int(c) + 1,
             "bbox": [round(float(b[0]), 2), round(float(b[1]), 2), round(float(b[2] - b[0]), 2),
                      round(float(b[3] - b[1]), 2)], "score": round(float(s), 5)}
            for b, s, c in zip(boxes, found["scores"], found["labels"])]
    if "masks" in found:
        masks = to_image_masks(found["masks"], shape, pad, h, w)  # (D, H, W) bool
        for row, rle in zip(rows, _rles(masks)):
            row["segmentation"] = rle
        if out is not None:
            _draw(image, boxes, rows, Path(out) / f"{Path(path).stem}_instances.png", masks)
    elif out is not None:
        if proposals is not None:  # in the image's pixels; those wholly on the letterbox's padding leave
            proposals = to_image_coordinates(proposals, torch.tensor(scale), torch.tensor(pad), h, w)
            proposals = proposals[(proposals[:, 2] > proposals[:, 0]) & (proposals[:, 3] > proposals[:, 1])]
        _draw(image, boxes, rows, Path(out) / f"{Path(path).stem}_boxes.png", proposals=proposals)
    return rows


def to_image_masks(masks: torch.Tensor, shape: tuple[int, int], pad: tuple[int, int], h: int, w: int,
                   threshold: float = 0.5) -> torch.Tensor:
    """Mask R-CNN's masks (D, 1, S, S) probabilities in network pixels, the image letterboxed to `shape`
    (nh, nw) at `pad` (left, top) → bool (D, H, W) in the image's pixels: the padding cut off, the rest resized
    (bilinear) to H × W, then thresholded."""
    (nh, nw), (left, top) = shape, pad
    inside = masks[:, :, top:top + nh, left:left + nw].float()  # (D, 1, nh, nw)
    if len(inside) == 0:
        return torch.zeros(0, h, w, dtype=torch.bool)
    return torch.nn.functional.interpolate(inside, size=(h, w), mode="bilinear", align_corners=False)[:, 0] > threshold


def _rles(masks: torch.Tensor) -> list[dict]:
    """bool (D, H, W) → COCO RLEs with str counts (JSON-ready)."""
    from cnnkit.metrics.mask_rle import encode_masks

    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in encode_masks(masks)]


def _draw(image: torch.Tensor, boxes: torch.Tensor, rows: list[dict], path: Path,
          masks: torch.Tensor | None = None, proposals: torch.Tensor | None = None) -> None:
    from torchvision.io import write_png
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [f"{r['label']} {r['score']:.2f}" for r in rows]
    if masks is not None and len(masks):
        palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                   (70, 240, 240), (240, 50, 230)]  # one colour per object, cycling
        image = draw_segmentation_masks(image, masks, alpha=0.5, colors=[palette[i % len(palette)]
                                                                          for i in range(len(masks))])
    if proposals is not None and len(proposals):  # thin and grey, under the detections
        image = draw_bounding_boxes(image, proposals, colors=PROPOSAL_GREY, width=1)
    drawn = draw_bounding_boxes(image, boxes, labels=labels, colors="red", width=2) if rows else image
    tmp = path.with_name(f".{path.name}.tmp")
    write_png(drawn, str(tmp))
    tmp.replace(path)
