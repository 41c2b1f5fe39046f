"""`cnnkit export RUN --format onnx --int8`: RUN's network as a statically quantised int8 ONNX file.

    api.export("runs/digits", int8=True)      # → runs/digits/model.int8.onnx; or: cnnkit export runs/digits --int8

How the file is made:
- RUN's model is exported in fp32 first, as `cnnkit export` does (cnnkit.export.onnx: batch norms folded, the
  model card in the metadata), to a temporary file beside the target;
- onnxruntime's `quant_pre_process` (shape inference, graph optimisation) prepares it and
  `quantize_static` quantises it: QDQ format (QuantizeLinear/DequantizeLinear pairs, which onnxruntime's CPU
  kernels fuse into int8 convolutions and matrix products), weights int8 per output channel (symmetric),
  activations uint8 with ranges from MinMax calibration (u8s8, onnxruntime's fast path on x86: on a Xeon with
  AVX512-VNNI, int8 activations made ResNet-18 2-3× slower, `benchmarks/onnx_inference.py --activations
  uint8,int8`; per-channel weights cost nothing measurable against per-tensor ones); the last layer (the
  output's Conv, Gemm or MatMul) stays fp32, so that logits and values are not on an 8-bit grid (LeNet-5 on
  digits: the probabilities' largest error 0.022 → 0.003, at 1.5 kB);
- calibration runs the fp32 network on up to CALIBRATION_IMAGES images of RUN's TRAINING split (split.json;
  never val or test), a fixed random sample over the whole split, preprocessed as the file's input expects:
  `card.transform()` for classification runs, the segmentation loader's own fitting and normalisation for
  segmentation runs;
- the fp32 file's metadata (`cnnkit.card`, `cnnkit.output`, ...) is copied into the int8 file, with
  `cnnkit.quantized` = "int8 static, calibrated on N training images"; the file is written atomically.

Detection and instance segmentation runs are refused in one line: their files (cnnkit.export.onnx_detection)
decode the boxes inside the graph, and onnxruntime's quantiser quantises that too: tried on SSD, the file ran
but its boxes came out on a grid of 1/255 of the image (4 px at 1000 px), the box decoding's activations being
uint8 like the backbone's. The files of other runs are read by `cnnkit predict FILE.onnx` as the fp32 files are
(cnnkit.export.runtime).
"""
from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import run_file

__all__ = ["CALIBRATION_IMAGES", "CalibrationReader", "CalibrationSet", "calibration_set", "check_quantisable",
           "output_layers", "quantize_onnx", "quantize_run"]

CALIBRATION_IMAGES = 256  # at most this many training images calibrate the activation ranges
CALIBRATION_BATCH = 16  # images per calibration run (of one shape)
SAMPLE_SEED = 0  # which training images: a fixed sample, so that the same run gives the same file
NOT_QUANTISED = {
    "detect": "a detector's file decodes its boxes inside the graph, and static quantisation puts them on an "
              "8-bit grid (steps of 1/255 of the image)",
    "instance": "an instance segmenter's file decodes its boxes and masks inside the graph, and static "
                "quantisation puts them on an 8-bit grid (steps of 1/255 of the image)",
}
LAST_LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})  # output_layers: where the walk stops
PASS_THROUGH = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Identity", "Resize",
                          "Relu", "Sigmoid", "Pad"})  # ... and what it walks back through (by the first input)
log = logging.getLogger("cnnkit")


@dataclass
class CalibrationSet:
    """The images that calibrate the int8 ranges: their ids (as RUN/split.json names them) and the network's
    input for each, preprocessed (C, H, W) float32."""

    ids: list[str | int]
    images: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.images)


class CalibrationReader:
    """onnxruntime's CalibrationDataReader (it only asks for `get_next`) over a CalibrationSet: batches of up to
    `batch_size` images of one shape, then None."""

    def __init__(self, images: list[torch.Tensor], input_name: str = "images",
                 batch_size: int = CALIBRATION_BATCH) -> None:
        self.images, self.input_name, self.batch_size = images, input_name, batch_size
        self.rewind()

    def rewind(self) -> None:
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(self.images):
            by_shape.setdefault(tuple(image.shape), []).append(i)
        self._batches = iter([group[k:k + self.batch_size] for group in by_shape.values()
                              for k in range(0, len(group), self.batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        return {self.input_name: np.ascontiguousarray(torch.stack([self.images[i] for i in batch]).numpy())}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.get_next, None)


def _sample(n: int, limit: int) -> np.ndarray:
    """Positions 0..n-1 of at most `limit` items, a fixed random sample over the whole split, in split order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(n, size=limit, replace=False))


def _read_all(indices: np.ndarray, read: Callable[[int], torch.Tensor], run: Path) -> tuple[list[int], list]:
    """(the positions that were read, their tensors); unreadable images are skipped with one warning."""
    kept, images, bad = [], [], []
    for position, i in enumerate(indices):
        try:
            images.append(read(int(i)))
            kept.append(position)
        except (CnnkitError, OSError, ValueError, RuntimeError) as err:
            bad.append(f"{i} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    if bad:
        log.warning("int8 calibration: skipped %d unreadable training image(s): %s", len(bad), "; ".join(bad[:3]))
    if not images:
        raise CnnkitError(f"int8 calibration: none of the {len(indices)} training images of {run} could be read")
    return kept, images


def _image_reader(card: ModelCard, source: Any, fixed: tuple[int, int] | None) -> Callable[[int], torch.Tensor]:
    """Item i of `source` → the file's input (C, H, W) float32, preprocessed as predict does for the card's task:
    card.transform() for classes; for segmentation the longer side fitted and normalised (`fixed`: the file's
    own H, W where its size is not dynamic)."""
    if card.problem != "segment":
        transform, channels = card.transform(), card.input_size[0]
        return lambda i: transform(source.load(i, channels)).float()
    from torchvision.transforms.v2 import functional as F

    from cnnkit.data.segmentation.loader import fit_image

    mean, std = torch.tensor(card.mean).view(-1, 1, 1), torch.tensor(card.std).view(-1, 1, 1)

    def read(i: int) -> torch.Tensor:
        image = source.read(i)[0]
        image = F.resize(image, list(fixed), antialias=True) if fixed else fit_image(image, card.input_size[1])
        return (image.float().div(255) - mean) / std

    return read


def check_quantisable(card: ModelCard) -> None:
    """Refuse, in one line, the runs whose graphs are not statically quantised (detection, instance)."""
    if card.problem in NOT_QUANTISED:
        raise CnnkitError(f"--int8 is not supported for {card.problem} runs: {NOT_QUANTISED[card.problem]}; "
                          "export in fp32 (drop --int8)")


def calibration_set(run: str | Path, card: ModelCard, limit: int = CALIBRATION_IMAGES,
                    fixed: tuple[int, int] | None = None) -> CalibrationSet:
    """Up to `limit` images of RUN's training split (never val or test), read from the data its config.yaml
    names and checked against split.json, preprocessed as the exported file's input; a run without split.json,
    data that changed or no readable image is a one-line error."""
    from cnnkit.config import config_from_dict
    from cnnkit.recipes import recipe_for

    run = Path(run)
    check_quantisable(card)
    record = json.loads(run_file(run, "split.json").read_text())
    cfg = config_from_dict(yaml.safe_load(run_file(run, "config.yaml").read_text()) or {})
    if "train" not in record.get("splits", {}):
        raise CnnkitError(f"{run}/split.json has no training split to calibrate the int8 ranges on")
    recipe = recipe_for(card.problem)
    source = recipe.open_source(cfg)
    indices = np.asarray(recipe.read_split(source, record, "train"), dtype=np.int64)
    if len(indices) == 0:
        raise CnnkitError(f"the training split of {run} is empty; there is nothing to calibrate the int8 ranges on")
    chosen = indices[_sample(len(indices), limit)]
    kept, images = _read_all(chosen, _image_reader(card, source, fixed), run)
    ids = getattr(source, "ids", None)
    return CalibrationSet([ids[int(chosen[k])] if ids is not None else int(chosen[k]) for k in kept], images)


def _fixed_size(fp32: Path) -> tuple[int, int] | None:
    """The (H, W) of the file's input where they are fixed numbers, else None (dynamic)."""
    import onnx

    dims = onnx.load(str(fp32), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    h, w = (d.dim_value if d.HasField("dim_value") else None for d in dims[2:4])
    return (h, w) if h and w else None


def output_layers(path: str | Path) -> list[str]:
    """The names of the nodes that make the graph's first output: from it back through shape-only operators to
    the last layer with weights (Conv, ConvTranspose, Gemm, MatMul), that included; [] where there is none."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    names, tensor = [], graph.output[0].name
    while (node := producer.get(tensor)) is not None:
        names.append(node.name)
        if node.op_type in LAST_LAYERS:
            return names
        if node.op_type not in PASS_THROUGH or not node.input:
            return []
        tensor = node.input[0]
    return []


def quantize_onnx(fp32: str | Path, out: str | Path, reader: Any, *, activations: str = "uint8",
                  per_channel: bool = True, float_output: bool = True) -> None:
    """Statically quantise the ONNX file `fp32` into `out` (QDQ, int8 weights per channel, `activations`
    uint8 or int8), its activation ranges calibrated (MinMax) on what `reader.get_next()` gives; with
    `float_output`, the last layer (output_layers) stays in fp32, so the outputs are not on an 8-bit grid. The
    metadata is not copied (quantize_run does that)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    kinds = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if activations not in kinds:
        raise CnnkitError(f"unknown activation type {activations!r}; choose uint8 or int8")
    out = Path(out)
    prepared = out.with_name(out.stem + ".prepared.onnx")
    quiet = logging.getLogger("onnxruntime")  # its shape inference and quantiser log their steps at INFO
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # ONNX's own shape inference is enough for a CNN; the symbolic one (for transformers) fails on a
        # dynamic-size U-Net and then dumps sym_shape_infer_temp.onnx and its data into the working folder
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the quantiser's advice to pre-process, which has been done
            quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=kinds[activations], weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=output_layers(prepared) if float_output else None)
    finally:
        quiet.setLevel(level)
        prepared.unlink(missing_ok=True)


def _check_runs(path: Path, batch: dict[str, np.ndarray], want: tuple) -> None:
    """The int8 file opens in onnxruntime and gives an output of the fp32 file's shape on one calibration batch."""
    from cnnkit.export.runtime import session

    got = session(path).run(None, batch)[0].shape
    if tuple(got) != tuple(want):
        raise CnnkitError(f"the int8 file gives outputs of shape {tuple(got)}, the fp32 one {tuple(want)}")


def _save_with_metadata(int8: Path, fp32: Path, target: Path, count: int) -> None:
    """Write the int8 model with the fp32 file's metadata and `cnnkit.quantized` to `target`, atomically."""
    import onnx

    from cnnkit.export.onnx import replace_metadata

    meta = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
    meta["cnnkit.quantized"] = f"int8 static, calibrated on {count} training images"
    replace_metadata(int8, meta, target)


def quantize_run(run: str | Path, model: nn.Module, card: ModelCard, target: Path,
                 limit: int = CALIBRATION_IMAGES) -> Path:
    """Write RUN's `model` (with `card`) to `target` as a statically quantised int8 ONNX file calibrated on up
    to `limit` images of RUN's training split; the path. See the module docstring."""
    from cnnkit.export.onnx import export_onnx
    from cnnkit.export.runtime import session

    try:
        import onnxruntime.quantization  # noqa: F401  (a missing package is said in one line, before any work)
    except ImportError as err:
        raise CnnkitError("--int8 needs onnx and onnxruntime: pip install 'cnnkit[onnx]'") from err
    check_quantisable(card)
    run_file(run, "split.json")  # before any work: the calibration images are those of its training split
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.stem}.") as tmp:
        fp32 = export_onnx(model, card, Path(tmp) / "fp32.onnx")
        images = calibration_set(run, card, limit, fixed=_fixed_size(fp32))
        log.info("int8: calibrating on %d training images of %s", len(images), run)
        int8 = Path(tmp) / "int8.onnx"
        try:
            quantize_onnx(fp32, int8, CalibrationReader(images.images))
        except CnnkitError:
            raise
        except Exception as err:  # onnx and onnxruntime raise many types: said in one line
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise CnnkitError(f"onnxruntime could not quantise {card.architecture}: {type(err).__name__}: "
                              f"{first}") from err
        batch = CalibrationReader(images.images[:2]).get_next()
        _check_runs(int8, batch, session(fp32).run(None, batch)[0].shape)
        _save_with_metadata(int8, fp32, target, len(images))
    return target
