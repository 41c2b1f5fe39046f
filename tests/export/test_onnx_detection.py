"""ONNX export of detection and instance-segmentation runs (cnnkit.export.onnx_detection): every registry
detector's file gives the PyTorch detector's own detections on onnxruntime (boxes within 0.5 px, scores within
1e-3, the same labels; Mask R-CNN's masks), on synthetic shapes and on Penn-Fudan's street photos; the thresholds
predict may change; `predict FILE.onnx` giving the run's JSON; and the one-line refusals."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from pycocotools import mask as mask_utils
from tests.conftest import write_image

from cnnkit import api
from cnnkit.cli.app import main
from cnnkit.data.detection.loader import FitDetection
from cnnkit.data.detection.source import open_detection_source
from cnnkit.data.images import read_image
from cnnkit.engine.inference import for_inference
from cnnkit.errors import CnnkitError
from cnnkit.export.onnx_detection import OnnxDetector, export_detector
from cnnkit.export.runtime import open_onnx
from cnnkit.models.detection.faster_rcnn import FasterRCNN
from cnnkit.models.detection.yolo import YOLO
from cnnkit.models.factory import create_model
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import load_model

torch.set_num_threads(2)
S = 64  # the cards' input size: what predict letterboxes every image to
BOX_TOL, SCORE_TOL = 0.5, 1e-3
SHAPES = "synthetic-shapes:count=2,n=16,size=64"
CLASSES = ["circle", "square", "triangle"]
# small variants of the registry's detectors (mask_rcnn: the trained run below)
SMALL = {
    "faster_rcnn": ("faster_rcnn", dict(min_size=S, max_size=S, out_channels=32, representation_size=64)),
    "ssd": ("ssd", dict(image_size=S)),
    "yolo-v1": ("yolo", dict(image_size=S, grid=4)),  # a 2 × 2 map pooled to a 4 × 4 grid
    "yolo-anchor-free": ("yolo", dict(image_size=80, head="anchor-free", letterbox=True)),  # resized inside
}
INSTANCE = ["-q", "train", "--task", "instance", "--data", SHAPES, "--model", "mask_rcnn", "--image-size", str(S),
            "--batch-size", "4", "--epochs", "1", "--model-option", "out_channels=32", "--model-option",
            "representation_size=64", "--model-option", "mask_channels=16", "--model-option", "mask_layers=2"]
KEYS = [*SMALL, "mask_rcnn"]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_detection")


@pytest.fixture(scope="module")
def instance_run(tmp: Path) -> Path:
    """Mask R-CNN trained for one epoch on synthetic shapes, exported to RUN/model.onnx."""
    run = tmp / "instance"
    assert main([*INSTANCE, "--out", str(run)]) == 0
    assert api.export(run) == run / "model.onnx"
    return run


@pytest.fixture(scope="module")
def exported(tmp: Path, instance_run: Path):
    """exported(key) → (the PyTorch detector in eval mode, its ONNX file), each made once."""
    made: dict[str, tuple[torch.nn.Module, Path]] = {}

    def get(key: str) -> tuple[torch.nn.Module, Path]:
        if key not in made:
            if key == "mask_rcnn":
                made[key] = (load_model(instance_run)[0], instance_run / "model.onnx")
            else:
                arch, options = SMALL[key]
                torch.manual_seed(0)
                model = create_model(arch, num_classes=len(CLASSES), **options).eval()
                card = ModelCard(arch, "detect", CLASSES, [3, S, S], [0.0] * 3, [1.0] * 3, resize="letterbox",
                                 options=options)
                made[key] = (model, export_detector(model, card, tmp / f"{key}.onnx"))
        return made[key]

    return get


def _letterboxed(images: list[torch.Tensor]) -> torch.Tensor:
    """uint8 (3, H, W) images → the (N, 3, S, S) batch in [0, 1] that predict hands the detector."""
    fit = FitDetection(S, "letterbox")
    return torch.stack([fit(image) for image in images]).float().div(255)


def _shapes(n: int = 3) -> list[torch.Tensor]:
    source = open_detection_source("synthetic-shapes:count=3,n=8,size=96")
    return [source.read(i)[0] for i in range(n)]


def _photos(data_root: Path, n: int = 3) -> list[Path]:
    folder = data_root / "pennfudan" / "PNGImages"
    if not folder.is_dir():
        pytest.skip(f"no Penn-Fudan photos at {folder}")
    return sorted(folder.glob("*.png"))[:n]


def _pairs(got: dict, want: dict) -> list[tuple[int, int]]:
    """One-to-one pairs (i of got, j of want) of the same label, boxes within BOX_TOL and scores within SCORE_TOL
    (detections of equal scores may come in either order); asserts that every detection has its pair."""
    assert len(got["scores"]) == len(want["scores"]), (len(got["scores"]), len(want["scores"]))
    close = (((got["boxes"][:, None] - want["boxes"][None]).abs().amax(-1) <= BOX_TOL)
             & ((got["scores"][:, None] - want["scores"][None]).abs() <= SCORE_TOL)
             & (got["labels"][:, None] == want["labels"][None]))
    free, pairs = torch.ones(close.shape[1], dtype=torch.bool), []
    for i, row in enumerate(close):
        candidates = (row & free).nonzero()
        assert len(candidates), f"detection {i} {got['boxes'][i].tolist()} {float(got['scores'][i])} has no match"
        pairs.append((i, int(candidates[0, 0])))
        free[pairs[-1][1]] = False
    return pairs


def _compare(got: list[dict], want: list[dict]) -> dict[str, float]:
    """The largest differences over all matched detections of a batch (asserting they are within the
    tolerances, and for masks: mean |Δ| < 1e-3 and ≥ 99 % of the pixels on the same side of 0.5)."""
    worst = {"boxes": 0.0, "scores": 0.0, "mask_mean": 0.0, "mask_disagree": 0.0}
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) == set(w) and g["labels"].dtype == torch.int64
        i, j = (list(v) for v in zip(*_pairs(g, w))) if len(g["scores"]) else ([], [])
        if not i:
            continue
        worst["boxes"] = max(worst["boxes"], float((g["boxes"][i] - w["boxes"][j]).abs().max()))
        worst["scores"] = max(worst["scores"], float((g["scores"][i] - w["scores"][j]).abs().max()))
        if "masks" in g:
            assert g["masks"].shape[1:] == w["masks"].shape[1:]
            worst["mask_mean"] = max(worst["mask_mean"], float((g["masks"][i] - w["masks"][j]).abs().mean()))
            disagree = ((g["masks"][i] > 0.5) != (w["masks"][j] > 0.5)).float().mean()
            worst["mask_disagree"] = max(worst["mask_disagree"], float(disagree))
    assert worst["mask_mean"] < 1e-3 and worst["mask_disagree"] <= 0.01, worst
    return worst


def _both(key: str, exported, batch: torch.Tensor) -> tuple[list[dict], list[dict]]:
    model, path = exported(key)
    detector, card = open_onnx(path)
    assert isinstance(detector, OnnxDetector) and card.input_size == [3, S, S]
    with torch.inference_mode():
        return detector(batch), model(batch)


# ---------------------------------------------------------------- the file gives the detector's detections

@pytest.mark.parametrize("key", KEYS)
def test_the_file_gives_the_detectors_detections_on_synthetic_shapes(key: str, exported) -> None:
    got, want = _both(key, exported, _letterboxed(_shapes()))
    assert sum(len(w["scores"]) for w in want) > 0, "no detections to compare"
    worst = _compare(got, want)
    print(f"\n{key}: {sum(len(w['scores']) for w in want)} detections, max |Δ| {worst}")


@pytest.mark.parametrize("key", KEYS)
def test_the_file_gives_the_detectors_detections_on_penn_fudan_photos(key: str, exported, data_root: Path) -> None:
    batch = _letterboxed([read_image(p) for p in _photos(data_root)])
    got, want = _both(key, exported, batch)
    worst = _compare(got, want)
    print(f"\n{key} on Penn-Fudan: {sum(len(w['scores']) for w in want)} detections, max |Δ| {worst}")


def _op_types(graph) -> set[str]:
    """The operators of an ONNX graph and of its subgraphs (the bodies of If and Loop nodes)."""
    found = set()
    for node in graph.node:
        found.add(node.op_type)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found |= _op_types(attribute.g)
    return found


def test_the_files_say_what_they_hold(exported) -> None:
    for key, nms, inputs in (("faster_rcnn", "graph", ["image", "score_thresh"]), ("yolo-v1", "torch", ["image"])):
        proto = onnx.load(str(exported(key)[1]))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["cnnkit.card"])["classes"] == CLASSES
        post = json.loads(meta["cnnkit.postprocess"])
        assert post["nms"] == nms and post["nms_thresh"] == 0.5 and post["detections_per_img"] == 100
        assert [i.name for i in proto.graph.input] == inputs
        assert ("NonMaxSuppression" in _op_types(proto.graph)) == (nms == "graph")
    assert json.loads(meta["cnnkit.dynamic_size"]) is False  # yolo's resizing is fixed at the card's size


def test_a_graph_with_nms_takes_other_sizes(exported) -> None:
    model, path = exported("faster_rcnn")
    detector, _ = open_onnx(path)
    assert detector.dynamic
    images = [torch.rand(3, 80, 48, generator=torch.Generator().manual_seed(3)), _shapes(1)[0].float() / 255]
    with torch.inference_mode():
        _compare(detector(images), model(images))


# ---------------------------------------------------------------- thresholds, precision, sizes

@pytest.mark.parametrize("key", ["faster_rcnn", "yolo-anchor-free"])
def test_set_postprocess_gives_what_the_detector_gives(key: str, exported) -> None:
    model, path = exported(key)
    batch = _letterboxed(_shapes(2))
    changes = [dict(score_thresh=0.01), dict(score_thresh=0.3), dict(detections_per_img=5)]
    if key.startswith("yolo"):
        changes.append(dict(nms_thresh=0.2))  # NMS runs in torch for yolo: any threshold
    for change in changes:
        detector, _ = open_onnx(path)
        detector.set_postprocess(**change)
        reference = copy.deepcopy(model)
        reference.set_postprocess(**change)
        with torch.inference_mode():
            _compare(detector(batch), reference(batch))


def test_a_graph_with_nms_refuses_what_it_cannot_do_in_one_line(exported) -> None:
    detector, _ = open_onnx(exported("ssd")[1])
    for change, fragment in ((dict(nms_thresh=0.3), "has NMS inside its graph, at IoU 0.45"),
                             (dict(detections_per_img=500), "at most 200 detections per image")):
        with pytest.raises(CnnkitError, match=fragment) as info:
            detector.set_postprocess(**change)
        assert "\n" not in str(info.value)
    detector.set_postprocess(nms_thresh=0.45, detections_per_img=200)  # what it holds: accepted


def test_for_inference_keeps_the_session_and_the_file_runs_in_fp32(exported) -> None:
    detector, _ = open_onnx(exported("yolo-v1")[1])
    batch = _letterboxed(_shapes(2))
    with torch.inference_mode():
        plain = detector(batch)
        model, mode = for_inference(detector, "bf16", device="cpu")  # what predict does: copy, prepare, autocast
        assert model is detector
        with mode.autocast():
            cast = model(mode.input(batch))
    for p, c in zip(plain, cast):
        assert all(torch.equal(p[k], c[k]) for k in p) and c["boxes"].dtype == torch.float32


def test_a_fixed_size_file_refuses_another_size_in_one_line(exported) -> None:
    detector, _ = open_onnx(exported("yolo-v1")[1])
    with pytest.raises(CnnkitError, match=r"takes 64×64 images .* got 48×64") as info:
        detector([torch.rand(3, 48, 64)])
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- refusals

def test_a_model_that_cannot_be_exported_is_refused_in_one_line(tmp: Path) -> None:
    folder = tmp / "refused"
    card = ModelCard("my_detector", "detect", CLASSES, [3, S, S], [0.0] * 3, [1.0] * 3, resize="letterbox")
    yolo = create_model("yolo", num_classes=3, image_size=S, grid=2)
    odd = YOLO(yolo.body, torch.nn.Identity(), 3, S, False, 0.05, 0.5, 100)  # a head of no known kind
    for model, why in ((torch.nn.Conv2d(3, 3, 1), "Conv2d is not one of the detectors cnnkit exports (faster_rcnn, "
                                                  "ssd, mask_rcnn, yolo)"),
                       (odd, "its head Identity is not one of yolo's (v1, anchor-free)")):
        with pytest.raises(CnnkitError) as info:
            export_detector(model, card, folder / "model.onnx")
        assert str(info.value) == f"my_detector cannot be exported to ONNX: {why}"
    assert not folder.exists() or not any(folder.iterdir())  # nothing half-written


class _LeavesTorch(FasterRCNN):
    """Faster R-CNN whose scores go through NumPy: the tracer records them as the example's constants."""

    def forward(self, images, targets=None):
        found = super().forward(images, targets)
        return [{**f, "scores": torch.from_numpy(f["scores"].detach().numpy().copy())} for f in found]


def test_a_trace_that_freezes_values_is_refused_in_one_line(tmp: Path) -> None:
    arch, options = SMALL["faster_rcnn"]
    torch.manual_seed(0)
    model = _LeavesTorch(create_model(arch, num_classes=3, **options).detector, 3).eval()
    card = ModelCard(arch, "detect", CLASSES, [3, S, S], [0.0] * 3, [1.0] * 3, resize="letterbox", options=options)
    with pytest.raises(CnnkitError, match=r"^faster_rcnn cannot be exported to ONNX: the traced graph does not give "
                                          r"the model's detections on another image") as info:
        export_detector(model, card, tmp / "frozen" / "model.onnx")
    assert "\n" not in str(info.value) and not any((tmp / "frozen").iterdir())


# ---------------------------------------------------------------- predict FILE.onnx: the run's JSON

def _rows_by_image(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["path"], []).append(row)
    return grouped


def _same_json(got: list[dict], want: list[dict]) -> int:
    """Assert that two predict results are the same up to the tolerances (rows of equal scores in either
    order; masks on ≥ 99 % of their pixels); the number of rows."""
    got_by, want_by = _rows_by_image(got), _rows_by_image(want)
    assert list(got_by) == list(want_by)
    for path, rows in want_by.items():
        as_tensors = [{"boxes": torch.tensor([r["bbox"] for r in rs]).reshape(-1, 4),
                       "scores": torch.tensor([r["score"] for r in rs]),
                       "labels": torch.tensor([r["category_id"] for r in rs])} for rs in (got_by[path], rows)]
        for i, j in _pairs(*as_tensors):
            g, w = got_by[path][i], rows[j]
            assert set(g) == set(w) and g["label"] == w["label"]
            if "segmentation" in w:
                a, b = (mask_utils.decode({**r["segmentation"], "counts": r["segmentation"]["counts"].encode()})
                        for r in (g, w))
                assert (a != b).mean() <= 0.01
    return len(got)


def _images(tmp: Path, data_root_or_none: Path | None) -> list[Path]:
    """Synthetic shapes, a wide random image and (where present) a Penn-Fudan photo, as files."""
    folder = tmp / "images"
    paths = [write_image(folder / f"shape{i}.png", image.permute(1, 2, 0).numpy())
             for i, image in enumerate(_shapes(2))]
    paths.append(write_image(folder / "wide.png", np.random.default_rng(0).integers(0, 256, (40, 96, 3))))
    photos = data_root_or_none / "pennfudan" / "PNGImages" if data_root_or_none else None
    return paths + (sorted(photos.glob("*.png"))[:1] if photos and photos.is_dir() else [])


def test_predict_on_the_exported_file_gives_the_runs_json(instance_run: Path, tmp: Path, request) -> None:
    try:
        root = request.getfixturevalue("data_root")
    except pytest.skip.Exception:
        root = None
    images = _images(tmp, root)
    for options in ({}, {"score_threshold": 0.01}):  # the run's own threshold (0.05), and a lower one
        images = images if not options else images[:3]  # the photo once: its 100 masks at full size are slow
        want = api.predict(instance_run, images, precision="fp32", **options)
        got = api.predict(instance_run / "model.onnx", images, **options)
        assert _same_json(got, want) > 0
        assert all("segmentation" in row for row in got)


@pytest.mark.slow
def test_predict_on_an_exported_yolo_gives_the_runs_json(tmp: Path) -> None:
    run = tmp / "yolo"
    assert main(["-q", "train", "--task", "detect", "--data", SHAPES, "--model", "yolo", "--image-size", str(S),
                 "--batch-size", "8", "--model-option", "grid=4", "--epochs", "1", "--out", str(run)]) == 0
    path = api.export(run)
    images = _images(tmp, None)
    for options in ({}, {"score_threshold": 0.01, "nms_iou": 0.3}):
        assert _same_json(api.predict(path, images, **options),
                          api.predict(run, images, precision="fp32", **options)) > 0
