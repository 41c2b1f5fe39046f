"""`cnnkit export RUN --int8`: a statically quantised ONNX file (QDQ, int8 weights per channel) calibrated on the
run's training split only, that carries the run's card and predicts as the fp32 file does; segmentation runs
too; one-line errors for runs that cannot be calibrated or quantised."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from cnnkit import api  # noqa: E402  (after the skips)
from cnnkit.cli.app import main  # noqa: E402
from cnnkit.config import load_config  # noqa: E402
from cnnkit.data.builtin import digits  # noqa: E402
from cnnkit.errors import CnnkitError  # noqa: E402
from cnnkit.export.quantize import CalibrationReader, calibration_set, check_quantisable  # noqa: E402
from cnnkit.export.runtime import open_onnx  # noqa: E402
from cnnkit.runs.card import ModelCard  # noqa: E402
from cnnkit.runs.folder import load_model  # noqa: E402


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quantize")


@pytest.fixture(scope="module")
def run(tmp: Path) -> Path:
    """LeNet-5 on the real digits, 3 epochs (about 90 % val accuracy)."""
    cfg = load_config(overrides={"data": {"source": "digits"}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 3, "batch_size": 32, "lr": 3e-3}, "out": str(tmp / "digits")})
    return api.train(cfg).run_dir


@pytest.fixture(scope="module")
def files(run: Path) -> dict[str, Path]:
    return {"fp32": api.export(run), "int8": api.export(run, int8=True)}


def _split_ids(run: Path) -> dict[str, list[str]]:
    record = json.loads((run / "split.json").read_text())
    return {name: entry["ids"] for name, entry in record["splits"].items()}


@pytest.fixture(scope="module")
def val_images(run: Path, tmp: Path) -> list[Path]:
    """The val split's digits as 8×8 grey PNG files (the very pixels of the source)."""
    arrays = digits().arrays
    paths = []
    for item in _split_ids(run)["val"]:
        paths.append(tmp / "val" / f"{item[1:]}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(arrays[int(item[1:])][0].numpy(), mode="L").save(paths[-1])
    return paths


def _initializers(path: Path) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in onnx.load(str(path)).graph.initializer}


def test_int8_file_is_smaller_with_int8_weights_and_qdq_nodes(files: dict[str, Path]) -> None:
    assert files["int8"].name == "model.int8.onnx" and files["int8"].parent == files["fp32"].parent
    assert files["int8"].stat().st_size < files["fp32"].stat().st_size / 3
    proto = onnx.load(str(files["int8"]))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops or "QLinearConv" in ops
    weights = _initializers(files["int8"])
    fp32_bytes = sum(t.ByteSize() for t in _initializers(files["fp32"]).values())
    int8 = [t for t in weights.values() if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert len(int8) == 4  # the weights of LeNet-5's 3 convolutions and first linear layer (not the zero points)
    last = proto.graph.node[-1]  # the output layer stays fp32: the logits are not on an 8-bit grid
    assert last.op_type == "Gemm" and last.output[0] == "output"
    assert weights[last.input[1]].data_type == onnx.TensorProto.FLOAT
    assert sum(t.ByteSize() for t in weights.values()) < fp32_bytes / 3  # ~4× on the weights
    # per output channel: each conv weight's DequantizeLinear has one scale per output channel
    for node in (n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in
                 {t.name for t in int8 if len(t.dims) == 4}):
        assert list(weights[node.input[1]].dims) == [weights[node.input[0]].dims[0]]


def test_int8_metadata_is_the_runs_card_with_a_quantisation_note(run: Path, files: dict[str, Path]) -> None:
    _, card = open_onnx(files["int8"])
    assert card == load_model(run)[1]
    fp32 = {p.key: p.value for p in onnx.load(str(files["fp32"])).metadata_props}
    int8 = {p.key: p.value for p in onnx.load(str(files["int8"])).metadata_props}
    assert int8.pop("cnnkit.quantized") == "int8 static, calibrated on 256 training images"
    assert int8 == fp32
    assert not [p for p in files["int8"].parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_int8_predictions_agree_with_fp32_on_the_val_images(files: dict[str, Path], val_images: list[Path]) -> None:
    fp32 = api.predict(files["fp32"], val_images, top_k=1)
    int8 = api.predict(files["int8"], val_images, top_k=1)
    assert [r["path"] for r in int8] == [r["path"] for r in fp32] and len(int8) == len(val_images) > 200
    same = np.mean([a["predictions"][0]["label"] == b["predictions"][0]["label"] for a, b in zip(fp32, int8)])
    assert same >= 0.95
    truth = [p.stem for p in val_images]  # the digit's index in the source
    labels = digits().labels
    accuracy = np.mean([r["predictions"][0]["label"] == str(labels[int(t)]) for r, t in zip(int8, truth)])
    assert accuracy > 0.5  # a trained model, not constant predictions that agree trivially


def test_calibration_uses_training_images_only_as_the_card_preprocesses_them(run: Path) -> None:
    model, card = load_model(run)
    ids = _split_ids(run)
    images = calibration_set(run, card)
    assert len(images) == 256 == len(set(images.ids)) and set(images.ids) <= set(ids["train"])
    assert not set(images.ids) & (set(ids["val"]) | set(ids["test"]))
    assert len({int(digits().labels[int(i[1:])]) for i in images.ids}) == 10  # a sample over the whole split
    transform, arrays = card.transform(), digits().arrays
    want = torch.stack([transform(arrays[int(i[1:])]) for i in images.ids])  # (256, 1, 32, 32)
    batches = list(CalibrationReader(images.images))
    assert all(set(b) == {"images"} and b["images"].dtype == np.float32 for b in batches)
    got = torch.from_numpy(np.concatenate([b["images"] for b in batches]))
    torch.testing.assert_close(got, want)


def test_calibration_reader_batches_one_shape_at_a_time_then_none() -> None:
    images = [torch.zeros(1, 4, 4)] * 5 + [torch.ones(1, 4, 6)] * 2
    reader = CalibrationReader(images, input_name="x", batch_size=2)
    shapes = [b["x"].shape for b in iter(reader.get_next, None)]
    assert shapes == [(2, 1, 4, 4), (2, 1, 4, 4), (1, 1, 4, 4), (2, 1, 4, 6)]
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["x"].shape == (2, 1, 4, 4)


def _one_line(err: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_run_without_split_json_is_a_one_line_error(run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.pt", "config.yaml"):
        shutil.copy(run / name, bare / name)
    with pytest.raises(CnnkitError) as err:
        api.export(bare, int8=True)
    assert "split.json" in _one_line(err)
    assert sorted(p.name for p in bare.iterdir()) == ["config.yaml", "model.pt"]  # nothing written


def test_unreadable_training_images_are_skipped_then_a_one_line_error(run: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    from cnnkit.data.sources import ImageSource

    card, load = load_model(run)[1], ImageSource.load

    def odd_ones_unreadable(self, i: int, channels: int) -> torch.Tensor:
        if i % 2:
            raise OSError("image file is truncated")
        return load(self, i, channels)

    def unreadable(self, i: int, channels: int) -> torch.Tensor:
        raise OSError("image file is truncated")

    monkeypatch.setattr(ImageSource, "load", odd_ones_unreadable)
    images = calibration_set(run, card)
    assert 0 < len(images) < 256 and all(int(i[1:]) % 2 == 0 for i in images.ids)
    assert "skipped" in caplog.text and "unreadable" in caplog.text
    monkeypatch.setattr(ImageSource, "load", unreadable)
    with pytest.raises(CnnkitError) as err:
        api.export(run, int8=True, out=tmp_path / "never.int8.onnx")
    assert "none of the 256 training images" in _one_line(err)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("task", ["detect", "instance"])
def test_detection_runs_are_refused_in_one_line(task: str) -> None:
    card = ModelCard(architecture="fasterrcnn_mobilenet_v3", task=task, classes=["person"], input_size=[3, 64, 64],
                     mean=[0.5] * 3, std=[0.25] * 3)
    with pytest.raises(CnnkitError) as err:
        check_quantisable(card)
    assert "--int8 is not supported" in _one_line(err) and "drop --int8" in str(err.value)


def test_cli_export_int8(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.int8.onnx"
    assert main(["-q", "export", str(run), "--int8", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "cnnkit.quantized" in open_onnx(out)[0].metadata


def test_segmentation_int8_masks_agree_with_fp32(tmp_path: Path) -> None:
    cfg = load_config(overrides={
        "task": "segment", "out": str(tmp_path / "seg"),
        "data": {"source": "synthetic-plants:size=48,count=24,seed=3", "image_size": 48, "val": 0.25, "test": 0.25},
        "model": {"name": "unet", "options": {"base": 8, "depth": 2}},
        "train": {"epochs": 2, "batch_size": 4, "lr": 3e-3, "device": "cpu"}})
    run = api.train(cfg).run_dir
    fp32, int8 = api.export(run), api.export(run, int8=True)
    meta = open_onnx(int8)[0].metadata
    assert meta["cnnkit.quantized"] == "int8 static, calibrated on 12 training images"
    assert open_onnx(int8)[1] == load_model(run)[1]
    from cnnkit.data.segmentation.source import open_segmentation_source

    card, source = load_model(run)[1], open_segmentation_source(cfg.data.source)
    val = json.loads((run / "split.json").read_text())["splits"]["val"]
    mean, std = torch.tensor(card.mean).view(3, 1, 1), torch.tensor(card.std).view(3, 1, 1)
    x = torch.stack([(source.read(i)[0].float() / 255 - mean) / std for i in val])  # (6, 3, 48, 48)
    a, b = open_onnx(fp32)[0](x).argmax(1), open_onnx(int8)[0](x).argmax(1)
    assert (a == b).float().mean() >= 0.95  # the pixels' classes
