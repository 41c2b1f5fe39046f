"""`cnnkit evaluate RUN --data OTHER`: a digits run measured on sets it never saw. A shifted MNIST-format copy of
held-out digits evaluates with the accuracy that predict gives image by image; a folder of a reordered subset of
the classes is mapped by name; a set holding training images or an unknown class is refused in one line; the
shift is read against the val split until the run is tested, then against its last test."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import assert_one_line_error, run_cli, write_image

from cnnkit import api
from cnnkit.config import load_config
from cnnkit.data.builtin import digits
from cnnkit.data.detection.annotations.source import DetectionSource, make_item
from cnnkit.data.segmentation.base import SegmentationSource
from cnnkit.errors import CnnkitError
from cnnkit.recipes.other_data import last_test, match_classes


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("other") / "digits"
    cfg = load_config(overrides={"data": {"source": "digits"}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 1, "batch_size": 16}, "out": str(out)})
    return api.train(cfg).run_dir


def _split_ids(run: Path, *names: str) -> np.ndarray:
    record = json.loads((run / "split.json").read_text())
    return np.sort([int(i[1:]) for name in names for i in record["splits"][name]["ids"]])  # digits ids: "#i"


def _held_out(run: Path, n: int = 120, shift: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n held-out digits (val and test split), shifted right by `shift` pixels: (n, 8, 8) uint8 and labels."""
    source = digits()
    idx = _split_ids(run, "val", "test")[:n]
    images = np.roll(source.arrays[idx, 0].numpy(), shift, axis=-1)
    return images, source.labels[idx]


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """The four MNIST IDX files (big-endian magic 2051 / 2049): the first half as train, the rest as t10k."""
    folder.mkdir(parents=True, exist_ok=True)
    half = len(images) // 2
    for part, sl in (("train", slice(0, half)), ("t10k", slice(half, None))):
        x, y = images[sl].astype(np.uint8), labels[sl].astype(np.uint8)
        header = np.asarray([2051, len(x), *x.shape[1:]], dtype=">i4").tobytes()
        (folder / f"{part}-images-idx3-ubyte").write_bytes(header + x.tobytes())
        (folder / f"{part}-labels-idx1-ubyte").write_bytes(np.asarray([2049, len(y)], ">i4").tobytes() + y.tobytes())
    return folder


def _hand_accuracy(run: Path, images: np.ndarray, labels: np.ndarray, folder: Path) -> float:
    """The accuracy computed image by image from `cnnkit.api.predict` on PNG copies of `images`."""
    paths = [write_image(folder / f"{i:04d}.png", img) for i, img in enumerate(images)]
    rows = api.predict(run, paths, top_k=1, precision="fp32")
    return float(np.mean([r["predictions"][0]["label"] == str(y) for r, y in zip(rows, labels)]))


def test_a_shifted_mnist_format_set_evaluates_as_predict_counts_it(run: Path, tmp_path: Path) -> None:
    images, labels = _held_out(run)
    data = f"mnist:{write_idx(tmp_path / 'shifted', images, labels)}"
    result = api.evaluate(run, data=data, precision="fp32")
    assert result["data"] == data and result["count"] == len(images)
    assert result["accuracy"] == pytest.approx(_hand_accuracy(run, images, labels, tmp_path / "png"))
    val = api.evaluate(run, split="val", verdict=False, precision="fp32")["accuracy"]
    shift = result["shift"]  # never tested: against the val split
    assert shift["metric"] == "accuracy" and shift["reference"] == "val"
    assert shift["reference_value"] == pytest.approx(val) and shift["value"] == result["accuracy"]
    assert shift["delta"] == pytest.approx(result["accuracy"] - val)
    unshifted = api.evaluate(run, data=f"mnist:{write_idx(tmp_path / 'plain', *_held_out(run, shift=0))}")
    assert unshifted["accuracy"] != result["accuracy"]


def test_the_shift_is_against_the_last_test_once_the_run_is_tested(run: Path, tmp_path: Path) -> None:
    tested = tmp_path / "tested"
    shutil.copytree(run, tested)
    assert last_test(tested, "accuracy") is None
    test_accuracy = api.test(tested, precision="fp32")["accuracy"]
    assert last_test(tested, "accuracy") == pytest.approx(test_accuracy)
    data = f"mnist:{write_idx(tmp_path / 'shifted', *_held_out(run, n=40))}"
    shift = api.evaluate(tested, data=data, precision="fp32")["shift"]
    assert shift["reference"] == "test" and shift["reference_value"] == pytest.approx(test_accuracy)


def test_a_reordered_subset_of_the_classes_is_mapped_by_name(run: Path, tmp_path: Path) -> None:
    images, labels = _held_out(run, n=300, shift=1)
    keep = np.isin(labels, [7, 3, 1])
    images, labels = images[keep], labels[keep]
    root = tmp_path / "subset"
    for i, (img, y) in enumerate(zip(images, labels)):
        write_image(root / str(y) / f"{i}.png", img)  # classes 1, 3, 7: indices 0, 1, 2 of the folder source
    result = api.evaluate(run, data=str(root), precision="fp32")
    assert result["count"] == len(images)
    assert result["accuracy"] == pytest.approx(_hand_accuracy(run, images, labels, tmp_path / "png"))


def test_training_images_in_the_other_set_are_refused_in_one_line(run: Path, tmp_path: Path, capsys) -> None:
    images, labels = _held_out(run, n=20)
    source, train = digits(), _split_ids(run, "train")[:3]
    images = np.concatenate([images, source.arrays[train, 0].numpy()])
    labels = np.concatenate([labels, source.labels[train]])
    data = f"mnist:{write_idx(tmp_path / 'leaky', images, labels)}"
    code, _, err = run_cli(capsys, "-q", "evaluate", str(run), "--data", data)
    assert code == 2
    assert_one_line_error(code, err, f"3 of 23 images of {data} are in {run}'s training split (e.g. {data} #",
                          "remove them")


def test_an_unknown_class_is_one_line_naming_it(run: Path, tmp_path: Path, capsys) -> None:
    images, labels = _held_out(run, n=10)
    for i, img in enumerate(images):
        write_image(tmp_path / "odd" / ("cat" if i % 2 else str(labels[i])) / f"{i}.png", img)
    with pytest.raises(CnnkitError, match=r"class 'cat' of .* is not a class of the run \(its classes: 0, 1, 2"):
        api.evaluate(run, data=str(tmp_path / "odd"))
    code, _, err = run_cli(capsys, "-q", "evaluate", str(run), "--data", str(tmp_path / "odd"))
    assert_one_line_error(code, err, "class 'cat'")


def test_the_cli_prints_count_accuracy_and_the_shift(run: Path, tmp_path: Path, capsys) -> None:
    data = f"mnist:{write_idx(tmp_path / 'shifted', *_held_out(run, n=40))}"
    code, out, _ = run_cli(capsys, "-q", "evaluate", str(run), "--data", data, "--json")
    result = json.loads(out)
    assert code == 0 and result["count"] == 40 and 0 <= result["accuracy"] <= 1 and "verdict" not in result
    code, out, _ = run_cli(capsys, "-q", "evaluate", str(run), "--data", data, "--attack", "fgsm", "--eps", "0.05")
    assert code == 0 and "count 40" in out and "robust_accuracy" in out
    assert "shift: accuracy" in out and "its val split (never tested" in out
    code, _, err = run_cli(capsys, "-q", "evaluate", str(run), "--data", data, "--split", "train")
    assert_one_line_error(code, err, "leave out --split")


def test_detection_and_segmentation_labels_are_mapped_by_name() -> None:
    item = make_item(1, None, 16, 16, np.asarray([[0, 0, 4, 4], [2, 2, 8, 8]], float), np.asarray([0, 1]))
    boxes = match_classes(DetectionSource("d", ["square", "circle"], [item]), ["circle", "triangle", "square"], "d")
    assert boxes.classes == ["circle", "triangle", "square"] and boxes.items[0].labels.tolist() == [2, 0]
    mask = np.asarray([[0, 1], [255, 1]])
    seg = SegmentationSource("s", ["background", "leaf"], [(0, 0, 0), (0, 255, 0)],
                             lambda i: (torch.zeros(3, 2, 2, dtype=torch.uint8), mask), 1)
    mapped = match_classes(seg, ["leaf", "background"], "s")
    assert mapped.read(0)[1].tolist() == [[1, 0], [255, 0]] and mapped.palette == [(0, 255, 0), (0, 0, 0)]


@pytest.mark.slow
def test_an_mnist_run_on_shifted_real_test_digits(data_root: Path, tmp_path: Path) -> None:
    """The ImageNetV2 question on real MNIST: the official test digits shifted by two pixels, against the run."""
    from cnnkit.data.builtin import mnist

    out = tmp_path / "mnist"
    cfg = load_config(overrides={"data": {"source": f"mnist:{data_root / 'mnist'}"}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 1, "batch_size": 128}, "out": str(out)})
    api.train(cfg)
    source = mnist(data_root / "mnist")
    test = source.presplit["test"][:2000]
    images = np.roll(source.arrays[test, 0].numpy(), 2, axis=-1)
    result = api.evaluate(out, data=f"mnist:{write_idx(tmp_path / 'shifted', images, source.labels[test])}")
    assert result["count"] == 2000 and result["shift"]["reference"] == "val"
    assert result["accuracy"] < result["shift"]["reference_value"]  # the shifted digits are harder


@pytest.mark.parametrize(("task", "data", "other", "model", "metric"), [
    ("detect", "synthetic-shapes:count=2,n=24,size=32", "synthetic-shapes:count=2,n=8,size=32,seed=5",
     {"name": "yolo", "options": {"grid": 4}}, "map"),
    ("segment", "synthetic-plants:size=32,count=24,seed=3", "synthetic-plants:size=32,count=8,seed=9",
     {"name": "unet", "options": {"base": 8, "depth": 2}}, "miou"),
])
def test_detection_and_segmentation_runs_evaluate_on_another_set(task: str, data: str, other: str, model: dict,
                                                                 metric: str, tmp_path: Path) -> None:
    cfg = load_config(overrides={"task": task, "data": {"source": data, "image_size": 32}, "model": model,
                                 "train": {"epochs": 1, "batch_size": 8}, "out": str(tmp_path / "run")})
    out = api.train(cfg).run_dir
    result = api.evaluate(out, data=other, precision="fp32")
    assert result["count"] == 8 and result["shift"]["metric"] == metric and result["shift"]["reference"] == "val"
    assert result["shift"]["value"] == result[metric]
    with pytest.raises(CnnkitError, match=rf"^\d+ of 24 images of {data} are in {out}'s training split"):
        api.evaluate(out, data=data)
