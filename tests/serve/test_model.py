"""The served model: the rows of `cnnkit predict` for the same files, renamed to the uploaded names, one entry per
image (a detector's boxes grouped per image, an image without boxes included); the predict options checked as
predict checks them; the metadata."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cnnkit import api
from cnnkit.errors import CnnkitError
from cnnkit.serve.model import ServedModel
from cnnkit.serve.uploads import RequestError


@pytest.fixture(scope="module")
def served(tiny_run: Path) -> ServedModel:
    return ServedModel(tiny_run)


def test_entries_are_predicts_rows_in_order_named_as_uploaded(served: ServedModel, images: dict[str, Path],
                                                              tmp_path: Path) -> None:
    names = ["rgb.png", "photo.jpg", "bitmap.bmp", "rgb.png"]  # a name may come twice
    copies = [shutil.copy(images[n], tmp_path / f"{i}{images[n].suffix}") for i, n in enumerate(names)]
    expected = api.predict(served.target, [images[n] for n in names])
    entries = served.predict([(Path(c), f"upload-{n}") for c, n in zip(copies, names)])
    assert entries == [{**row, "path": f"upload-{n}"} for row, n in zip(expected, names)]
    assert entries[0] == entries[3] and list(entries[0]) == ["path", "predictions"]


def test_an_image_the_decoder_skipped_gets_an_error_in_its_place(served: ServedModel, images: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        entries = served.predict([(images["grey.png"], "grey.png"), (broken, "broken.png")])
    assert entries[0]["path"] == "grey.png"
    assert isinstance(entries[1], RequestError) and entries[1].status == 422 and "broken.png" in entries[1].detail


class _Detector:
    """A recipe whose predict gives one row per box, as the detection recipes do."""

    def __init__(self, boxes: dict[str, int]):
        self.boxes = boxes

    def predict(self, model, card, paths: list[Path], **options) -> list[dict]:
        return [{"path": str(p), "label": "shape", "bbox": [i, 0, 1, 1], "score": 0.5}
                for p in paths for i in range(self.boxes[p.name])]


def test_a_detectors_boxes_are_grouped_per_image(served: ServedModel, tmp_path: Path) -> None:
    detector = ServedModel.__new__(ServedModel)
    detector.__dict__.update(served.__dict__, per_box=True, recipe=_Detector({"a.png": 2, "b.png": 0, "c.png": 1}))
    entries = detector.predict([(tmp_path / "a.png", "one.png"), (tmp_path / "b.png", "two.png"),
                                (tmp_path / "c.png", "three.png")])
    assert [e["path"] for e in entries] == ["one.png", "two.png", "three.png"]
    assert [len(e["detections"]) for e in entries] == [2, 0, 1]
    assert entries[0]["detections"][1] == {"path": "one.png", "label": "shape", "bbox": [1, 0, 1, 1], "score": 0.5}


def test_options_are_checked_as_predict_checks_them(tiny_run: Path, images: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="--score-threshold is not supported for a classification run"):
        ServedModel(tiny_run, options={"score_threshold": 0.3})
    top1 = ServedModel(tiny_run, options={"top_k": 1, "threshold": None})
    assert top1.options == {"top_k": 1}
    copy = shutil.copy(images["rgb.png"], tmp_path / "x.png")
    assert top1.predict([(Path(copy), "x.png")]) == [{**api.predict(tiny_run, [images["rgb.png"]], top_k=1)[0],
                                                      "path": "x.png"}]


def test_metadata_is_the_card_and_where_the_model_comes_from(served: ServedModel) -> None:
    meta = served.metadata()
    assert meta["architecture"] == "lenet5" and meta["classes"] == ["cat", "dog"] and meta["input_size"] == [1, 32, 32]
    assert meta["problem"] == "binary" and meta["runtime"] == "torch" and meta["source"] == served.target
    assert meta["precision"] == "fp32" and meta["per_box"] is False and meta["predict_options"] == {}


@pytest.mark.parametrize(("target", "options", "fragment"), [
    ("no/such/run", {}, "no run folder or pretrained weights called 'no/such/run'"),
    ("missing.onnx", {}, "ONNX file not found: missing.onnx"),
    ("runs/x", {"precision": "fp64"}, "unknown --precision 'fp64'"),
    ("TINY", {"runtime": "openvino"}, "--runtime openvino runs an exported FILE.onnx"),
])
def test_a_bad_target_is_one_line(tiny_run: Path, target: str, options: dict, fragment: str) -> None:
    with pytest.raises(CnnkitError, match=fragment):
        ServedModel(str(tiny_run) if target == "TINY" else target, **options)


@pytest.mark.slow
def test_a_real_detector_served_over_http_groups_predicts_rows_per_image(tmp_path: Path) -> None:
    """YOLO trained one epoch on synthetic shapes (about 12 s), served: each image's entry holds exactly the rows
    `cnnkit predict --json` gives for it (a low score threshold, so that an untrained detector finds boxes)."""
    import numpy as np
    from PIL import Image

    from cnnkit.cli.app import main
    from cnnkit.serve.client import Client
    from cnnkit.serve.server import Service

    run = tmp_path / "detect"
    assert main(["-q", "train", "--task", "detect", "--data", "synthetic-shapes:count=2,n=16,size=64", "--model",
                 "yolo", "--image-size", "64", "--batch-size", "8", "--model-option", "grid=4", "--epochs", "1",
                 "--out", str(run)]) == 0
    rng = np.random.default_rng(0)
    paths = []
    for i, shape in enumerate([(64, 64), (48, 96), (80, 40)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(paths[-1])
    rows = api.predict(run, paths, score_threshold=0.05)
    with Service(run, port=0, options={"score_threshold": 0.05}, log_level="warning") as service, \
            Client(service.url) as client:
        entries = client.predict(paths)
        assert client.get("/metadata").json()["per_box"] is True
    assert [e["path"] for e in entries] == ["0.png", "1.png", "2.png"]
    for entry, path in zip(entries, paths):
        assert entry["detections"] == [{**r, "path": path.name} for r in rows if r["path"] == str(path)]
    assert sum(len(e["detections"]) for e in entries) == len(rows) > 0
