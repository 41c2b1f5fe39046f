"""`cnnkit export RUN` for detection and instance-segmentation runs, and `cnnkit predict FILE.onnx` on the file.

    api.export("runs/people")                                  # → runs/people/model.onnx (export_detector)
    api.predict("runs/people/model.onnx", ["street.jpg"])      # the JSON of api.predict("runs/people", ...)

cnnkit's detection predict letterboxes each image to the card's size S, scales it to [0, 1] and hands the model
an (N, 3, S, S) batch; the detector resizes and normalises inside and returns [{"boxes", "scores", "labels"
(, "masks")}, ...] in the input's pixels. The file keeps that contract one image at a time (torchvision's
detectors loop over the images in Python, which the tracer would unroll at the example's batch size), and
OnnxDetector (what cnnkit.export.runtime.open_onnx gives for such a file) runs it once per image of a batch.

What the graph holds, per detector of the registry:
- faster_rcnn, ssd, mask_rcnn (torchvision's detectors): everything, NMS included. Inputs `image` (3, H, W)
  float32 in [0, 1] and `score_thresh` (a float32 scalar: the minimum score; the run's own value is in the
  metadata `cnnkit.postprocess`); outputs `boxes` (D, 4) xyxy in the input's pixels, `scores` (D,), `labels`
  (D,) int64 0-based class indices, best first, and for mask_rcnn `masks` (D, 1, H, W) probabilities pasted
  into the image. The score threshold is an input so that `predict --score-threshold` works on the file; the
  NMS IoU threshold and the number of detections per image are constants of the graph: another --nms-iou is
  refused in one line, a smaller detections_per_img cuts the list (the same detections: they come best first).
  H and W are declared dynamic; `cnnkit.dynamic_size` says whether the file gave PyTorch's detections at
  another size than the card's when it was exported (else OnnxDetector takes the card's size only).
  Mask R-CNN's GroupNorm layers are traced as an equivalent formula with explicit shapes: the exporter's own
  reshapes to (N, G, -1), which onnxruntime cannot do for an image without detections (N = 0 masks).
- yolo: the network up to its head's raw output (normalisation, resizing to image_size and padding inside,
  at the card's fixed input size). NMS is outside: OnnxDetector applies the head's own post-processing in torch
  (V1Head.detect or AnchorFreeHead.detect, score threshold and NMS as the run has them or as set_postprocess
  sets them) and maps the boxes back as YOLO.forward does. YOLO's resizing computes its sizes with Python's
  round() on the image shape and the anchor-free head takes the top min(1000, len(candidates)) scores: the
  tracer would freeze both at the example's values. Outputs: `head` (1, S, S, B·5 + C) for head="v1";
  `logits` (1, L, C), `boxes` (1, L, 4), `centerness` (1, L), `points` (L, 3) for head="anchor-free".

Batch norms are folded first (cnnkit.engine.inference.fold_batch_norm; torchvision's FrozenBatchNorm2d stays as
it is). Every file is checked on onnxruntime against PyTorch on an image other than the one traced. A model of
another kind, one the tracer fails on, or one whose file fails that check (a trace that froze a value) is refused
in one line (CnnkitError). The file is written atomically, with the card, what the outputs mean and the
post-processing (`cnnkit.postprocess`: where NMS runs, the thresholds, for yolo what its head's detect needs) in
its metadata. yolo's v1 head pools its last map to the grid with an adaptive pooling, which the exporter cannot
translate where the grid does not divide the map: the file pools with the same windows as two fixed matrices.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import clip_boxes_to_image

from cnnkit.engine.inference import fold_batch_norm
from cnnkit.errors import CnnkitError
from cnnkit.export.onnx import OPSET, write_metadata
from cnnkit.models.detection.faster_rcnn import TorchvisionDetector, check_inputs
from cnnkit.models.detection.yolo import YOLO, AnchorFreeHead, V1Head
from cnnkit.runs.card import ModelCard

__all__ = ["OnnxDetector", "export_detector"]

DETECTIONS = ("boxes", "scores", "labels")
ANCHOR_FREE_OUTPUTS = ("logits", "boxes", "centerness", "points")
YOLO_HEADS = {"v1": V1Head, "anchor-free": AnchorFreeHead}
IN_GRAPH = ("per image: boxes (D, 4) xyxy in the input's pixels, scores (D,), labels (D,) 0-based class indices, "
            "best first, after the model's score threshold (input score_thresh) and NMS")
HEAD_ONLY = ("the yolo head's raw output for one image; the score threshold, NMS and the boxes' scaling back "
             "to the input's pixels are done outside the graph (cnnkit.postprocess; OnnxDetector)")


# ---------------------------------------------------------------- what is traced

class _ExplicitGroupNorm(nn.Module):
    """nn.GroupNorm with explicit shapes in the graph (see the module docstring): the same numbers."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.norm.num_groups
        y = x.unflatten(1, (groups, x.shape[1] // groups))  # (N, G, C/G, H, W)
        mean = y.mean((2, 3, 4), keepdim=True)
        var = (y - mean).pow(2).mean((2, 3, 4), keepdim=True)
        y = ((y - mean) / torch.sqrt(var + self.norm.eps)).reshape_as(x)  # Reshape to Shape(x): no -1
        if self.norm.affine:
            y = y * self.norm.weight[:, None, None] + self.norm.bias[:, None, None]
        return y


def _averaging(n: int, m: int) -> torch.Tensor:
    """(m, n): row i averages the inputs of adaptive average pooling's window i, [⌊i·n/m⌋, ⌈(i+1)·n/m⌉)."""
    weights = torch.zeros(m, n)
    for i in range(m):
        start, end = i * n // m, -(-(i + 1) * n // m)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


class _FixedAdaptivePool(nn.Module):
    """nn.AdaptiveAvgPool2d for one known input size as two averaging matrices, rows · x · colsᵀ (the same
    windows): the legacy exporter cannot translate an adaptive pooling whose output size does not divide its
    input (yolo's v1 head pools its last map to the grid: 2 × 2 → 4 × 4 at 64 px with grid=4)."""

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", _averaging(size_in[0], size_out[0]))
        self.register_buffer("cols", _averaging(size_in[1], size_out[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows @ x @ self.cols.T  # (N, C, H, W) → (N, C, h, w)


def _fix_adaptive_pools(graph: nn.Module, example: tuple[torch.Tensor, ...]) -> None:
    """Replace each nn.AdaptiveAvgPool2d of `graph` by a _FixedAdaptivePool for the input size it gets on
    `example` (the file's size is fixed)."""
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            sizes[name] = tuple(args[0].shape[-2:])
        return hook

    pools = [(n, m) for n, m in graph.named_modules() if type(m) is nn.AdaptiveAvgPool2d]
    hooks = [m.register_forward_pre_hook(record(n)) for n, m in pools]
    try:
        with torch.no_grad():
            graph(*example)
    finally:
        for hook in hooks:
            hook.remove()
    for name, pool in pools:
        if name in sizes:
            out = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 2
            out = tuple(o if o is not None else i for o, i in zip(out, sizes[name]))
            parent, _, leaf = name.rpartition(".")
            setattr(graph.get_submodule(parent) if parent else graph, leaf, _FixedAdaptivePool(sizes[name], out))


class _WholeDetector(nn.Module):
    """One image (3, H, W) in [0, 1] and the minimum score → the torchvision detector's own detections of it,
    as a tuple in `outputs` order. The score threshold is set to the input tensor while tracing, so that the
    graph compares with its input instead of a constant."""

    def __init__(self, detector: TorchvisionDetector, outputs: tuple[str, ...]):
        super().__init__()
        self.detector, self.outputs = detector, outputs

    def forward(self, image: torch.Tensor, score_thresh: torch.Tensor) -> tuple[torch.Tensor, ...]:
        owner, names = self.detector._postprocess_owner()
        kept = getattr(owner, names["score_thresh"])
        setattr(owner, names["score_thresh"], score_thresh)
        try:
            found = self.detector([image])[0]
        finally:
            setattr(owner, names["score_thresh"], kept)
        return tuple(found[k] for k in self.outputs)


def _yolo_geometry(yolo: YOLO, h: int, w: int) -> tuple[tuple[float, float], tuple[int, int]]:
    """((sx, sy), (new h, new w)): how YOLO._batch scales an h × w image (its own scale factors, and the size it
    resizes to, computed as it does) before padding it to image_size."""
    _, [(sx, sy)] = yolo._batch([torch.zeros(3, h, w)])
    return (sx, sy), (max(1, round(h * sy)), max(1, round(w * sx)))


class _YoloNetwork(nn.Module):
    """YOLO up to its head's raw output for one (3, h, w) image: normalised, resized and padded as YOLO._batch
    does, with the sizes of an h × w input as constants (the file's size is fixed)."""

    def __init__(self, yolo: YOLO, h: int, w: int):
        super().__init__()
        self.yolo = yolo
        _, self.resized = _yolo_geometry(yolo, h, w)

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        yolo, (nh, nw) = self.yolo, self.resized
        x = F.interpolate(((image - yolo.mean) / yolo.std)[None], size=(nh, nw), mode="bilinear", align_corners=False)
        x = F.pad(x, (0, yolo.image_size - nw, 0, yolo.image_size - nh))
        x = x.reshape(1, 3, yolo.image_size, yolo.image_size)  # a no-op whose constant shape the exporter sees
        out = yolo.head(list(yolo.body(x).values()))
        return out if isinstance(out, torch.Tensor) else tuple(out[k] for k in ANCHOR_FREE_OUTPUTS)


@dataclass
class _Plan:
    """What to trace and how: the module, an example input, the names, whether H and W may be dynamic, what the
    outputs mean and the post-processing record for the metadata (and OnnxDetector)."""

    graph: nn.Module
    example: tuple[torch.Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    dynamic: bool
    meaning: str
    postprocess: dict = field(default_factory=dict)


def _thresholds(model: nn.Module) -> dict:
    """The detector's eval-mode filtering as it is now: score_thresh, nms_thresh, detections_per_img."""
    if isinstance(model, YOLO):
        owner, names = model, {k: k for k in ("score_thresh", "nms_thresh", "detections_per_img")}
    else:
        owner, names = model._postprocess_owner()
    return {k: getattr(owner, attr) for k, attr in names.items()}


def _torchvision_plan(model: TorchvisionDetector, card: ModelCard, example: torch.Tensor) -> _Plan:
    """The whole detector, NMS included, with the score threshold as a second input."""
    outputs = DETECTIONS + (("masks",) if card.problem == "instance" else ())
    for name, module in list(model.named_modules()):
        if type(module) is nn.GroupNorm:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, _ExplicitGroupNorm(module))
    thresholds = _thresholds(model)
    meaning = IN_GRAPH + ("; masks (D, 1, H, W) probabilities in [0, 1]" if "masks" in outputs else "")
    return _Plan(_WholeDetector(model, outputs).eval(), (example, torch.tensor(float(thresholds["score_thresh"]))),
                 ["image", "score_thresh"], list(outputs), True, meaning, {"nms": "graph", **thresholds})


def _yolo_plan(model: YOLO, card: ModelCard, example: torch.Tensor) -> _Plan:
    """YOLO up to its head's raw output at the card's size; the post-processing's record for OnnxDetector."""
    head = next((k for k, v in YOLO_HEADS.items() if type(model.head) is v), None)
    if head is None:
        raise CnnkitError(f"{card.architecture} cannot be exported to ONNX: its head {type(model.head).__name__} "
                          f"is not one of yolo's ({', '.join(YOLO_HEADS)})")
    _, h, w = card.input_size
    (sx, sy), _ = _yolo_geometry(model, h, w)
    attributes = {k: getattr(model.head, k) for k in ("S", "B", "C") if hasattr(model.head, k)}  # what detect reads
    post = {"nms": "torch", "head": head, "attributes": attributes, "image_size": model.image_size,
            "scale": [sx, sy], **_thresholds(model)}
    graph = _YoloNetwork(model, h, w).eval()
    _fix_adaptive_pools(graph, (example,))
    outputs = ["head"] if head == "v1" else list(ANCHOR_FREE_OUTPUTS)
    return _Plan(graph, (example,), ["image"], outputs, False, HEAD_ONLY, post)


def _plan(model: nn.Module, card: ModelCard) -> _Plan:
    """The plan for `model` (folded, eval, fp32, on the CPU: changed in place); a kind of model cnnkit cannot
    export: one line."""
    _, h, w = card.input_size
    example = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    if isinstance(model, TorchvisionDetector):
        return _torchvision_plan(model, card, example)
    if isinstance(model, YOLO):
        return _yolo_plan(model, card, example)
    raise CnnkitError(f"{card.architecture} cannot be exported to ONNX: {type(model).__name__} is not one of the "
                      "detectors cnnkit exports (faster_rcnn, ssd, mask_rcnn, yolo)")


# ---------------------------------------------------------------- tracing and checking

def _trace(plan: _Plan, path: Path, dynamic: bool) -> None:
    axes = {"image": {1: "height", 2: "width"}} if dynamic else {}
    for name in plan.outputs:
        if plan.postprocess["nms"] == "graph":
            axes[name] = {0: "detections", **({2: "height", 3: "width"} if name == "masks" and dynamic else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning and tracer warnings
        torch.onnx.export(plan.graph, plan.example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=plan.inputs, output_names=plan.outputs, dynamic_axes=axes)


def _same_detections(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], box_tol: float = 0.5,
                    score_tol: float = 1e-3) -> bool:
    """Whether two images' detections are the same: as many, each of `got` matched one to one with one of `want`
    of the same label, boxes within `box_tol` pixels and scores within `score_tol` (ties may come in either
    order)."""
    if len(got["scores"]) != len(want["scores"]):
        return False
    close = (((got["boxes"][:, None] - want["boxes"][None]).abs().amax(-1) <= box_tol)
             & ((got["scores"][:, None] - want["scores"][None]).abs() <= score_tol)
             & (got["labels"][:, None] == want["labels"][None]))  # (D, D)
    free = torch.ones(len(want["scores"]), dtype=torch.bool)
    for row in close:
        candidates = (row & free).nonzero()
        if not len(candidates):
            return False
        free[candidates[0, 0]] = False
    return True


def _agrees(path: Path, plan: _Plan, image: torch.Tensor) -> bool:
    """Whether the file gives on `image` (another input than the example) what the traced module gives: the same
    detections (whole detectors), the same raw outputs within 1e-3 (yolo); False where onnxruntime fails."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a shape error is an expected answer at another size
    feed = {"image": image.numpy(), **({"score_thresh": plan.example[1].numpy()} if len(plan.example) > 1 else {})}
    try:
        got = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feed)
    except Exception:  # noqa: BLE001  (onnxruntime raises its own exception types for shape errors)
        return False
    with torch.no_grad():
        want = plan.graph(image, *plan.example[1:])
    want = (want,) if isinstance(want, torch.Tensor) else want
    if plan.postprocess["nms"] == "graph":
        return _same_detections({k: torch.from_numpy(v) for k, v in zip(plan.outputs, got)},
                                dict(zip(plan.outputs, want)))
    return all(g.shape == tuple(w.shape) and np.allclose(g, w.numpy(), atol=1e-3, rtol=1e-3) for g, w in zip(got, want))


def _write(plan: _Plan, path: Path, card: ModelCard) -> bool:
    """Trace `plan` to `path` and check the file on another image of the card's size (a trace that froze a value
    would pass silently); whether it also gives PyTorch's detections at another size (then it may be run at any
    size: `cnnkit.dynamic_size`). The input's H and W are declared dynamic in every file whose plan allows it,
    whatever that check finds: the graph is the same, and Mask R-CNN's mask-pasting loop makes onnxruntime warn
    at every run when they are fixed."""
    _trace(plan, path, dynamic=plan.dynamic)
    _, h, w = card.input_size
    if not _agrees(path, plan, torch.rand(3, h, w, generator=torch.Generator().manual_seed(1))):
        raise CnnkitError(f"{card.architecture} cannot be exported to ONNX: the traced graph does not give the "
                          "model's detections on another image (it leaves torch, or branches on the data)")
    other = torch.rand(3, h + 32, max(w - 16, 32), generator=torch.Generator().manual_seed(2))
    return plan.dynamic and _agrees(path, plan, other)


def export_detector(model: nn.Module, card: ModelCard, out: str | Path) -> Path:
    """Write the detector `model` (as trained, with `card`) to `out` as ONNX with its card, what its outputs mean
    and its post-processing in the metadata (see the module docstring); the path. A model that cannot be
    exported: a one-line CnnkitError saying why."""
    out = Path(out)
    plan = _plan(fold_batch_norm(model).float().cpu(), card)  # a folded copy, in eval mode
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            dynamic = _write(plan, Path(tmp), card)
        except CnnkitError:
            raise
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise CnnkitError(f"{card.architecture} cannot be exported to ONNX: {type(err).__name__}: "
                              f"{first[:300]}") from err
        write_metadata(Path(tmp), card, plan.meaning, dynamic, {"cnnkit.postprocess": json.dumps(plan.postprocess)})
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


# ---------------------------------------------------------------- running the file

class OnnxDetector(nn.Module):
    """An exported detector's file behind the detectors' eval contract: forward takes a list of (3, H, W) float
    images in [0, 1] (or an (N, 3, H, W) batch), runs the file once per image on onnxruntime (CPU) and returns
    [{"boxes", "scores", "labels" (, "masks")}, ...] as torch tensors on the input's device, as the PyTorch
    detector does. set_postprocess changes the thresholds as far as the file allows (module docstring)."""

    def __init__(self, onnx_model: nn.Module):
        super().__init__()
        self.model = onnx_model  # a cnnkit.export.runtime.OnnxModel: .session, .card, .metadata, .path
        self.session, self.card, self.path = onnx_model.session, onnx_model.card, onnx_model.path
        self.metadata = onnx_model.metadata
        if "cnnkit.postprocess" not in self.metadata:
            raise CnnkitError(f"{self.path} has no cnnkit.postprocess in its metadata: export it again with "
                              "`cnnkit export RUN`")
        self.post = json.loads(self.metadata["cnnkit.postprocess"])
        self.dynamic = bool(json.loads(self.metadata.get("cnnkit.dynamic_size", "false")))
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.score_thresh = float(self.post["score_thresh"])
        self.nms_thresh = float(self.post["nms_thresh"])
        self.detections_per_img = int(self.post["detections_per_img"])

    def set_postprocess(self, *, score_thresh: float | None = None, nms_thresh: float | None = None,
                        detections_per_img: int | None = None) -> None:
        """Change the eval-mode filtering as the PyTorch detectors' set_postprocess does. A file with NMS inside
        its graph refuses another NMS IoU threshold and more detections per image than it was exported with."""
        if self.post["nms"] == "graph":
            fixed = f"{self.path.name} has NMS inside its graph"
            if nms_thresh is not None and float(nms_thresh) != float(self.post["nms_thresh"]):
                raise CnnkitError(f"{fixed}, at IoU {self.post['nms_thresh']}: another NMS IoU needs the run folder "
                                  f"(cnnkit predict RUN --nms-iou {nms_thresh})")
            if detections_per_img is not None and detections_per_img > self.post["detections_per_img"]:
                raise CnnkitError(f"{fixed}, keeping at most {self.post['detections_per_img']} detections per image; "
                                  "more need the run folder")
        if score_thresh is not None:
            self.score_thresh = float(score_thresh)
        if nms_thresh is not None:
            self.nms_thresh = float(nms_thresh)
        if detections_per_img is not None:
            self.detections_per_img = int(detections_per_img)

    def forward(self, images: list[torch.Tensor] | torch.Tensor) -> list[dict[str, torch.Tensor]]:
        check_inputs(images, None, False)
        with torch.autocast("cpu", enabled=False):  # the post-processing in fp32, as the file's outputs are
            return [{k: v.to(image.device) for k, v in self._detect(image).items()} for image in images]

    def _detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One (3, H, W) image's detections, on the CPU."""
        _, h, w = self.card.input_size
        if not self.dynamic and tuple(image.shape[-2:]) != (h, w):
            raise CnnkitError(f"{self.path.name} takes {h}×{w} images (its size was fixed at export), got "
                              f"{image.shape[-2]}×{image.shape[-1]}; cnnkit predict letterboxes them so")
        feed = {"image": np.ascontiguousarray(image.detach().float().cpu().numpy())}
        if self.post["nms"] == "graph":
            feed["score_thresh"] = np.asarray(self.score_thresh, dtype=np.float32)
        out = {k: torch.from_numpy(v) for k, v in zip(self.outputs, self.session.run(None, feed))}
        if self.post["nms"] == "graph":
            return {k: v[: self.detections_per_img] for k, v in out.items()}  # best first: the same as fewer
        return self._yolo(out, image)

    def _yolo(self, out: dict[str, torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        """YOLO's own post-processing of the head's raw output: the head's detect (score threshold, per-class
        NMS) on a stand-in holding the attributes it reads, then the boxes scaled back and clipped as
        YOLO.forward does."""
        head = self.post["head"]
        raw = out["head"] if head == "v1" else out
        found = YOLO_HEADS[head].detect(SimpleNamespace(**self.post["attributes"]), raw, self.post["image_size"],
                                        self.score_thresh, self.nms_thresh, self.detections_per_img)[0]
        sx, sy = self.post["scale"]
        boxes = found["boxes"] / found["boxes"].new_tensor([sx, sy, sx, sy])
        found["boxes"] = clip_boxes_to_image(boxes, tuple(image.shape[-2:]))
        return found

    def __deepcopy__(self, memo: dict) -> OnnxDetector:
        return self  # fold_batch_norm copies the model first: there is nothing to fold, and a session cannot copy

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, nms={self.post['nms']!r}"
