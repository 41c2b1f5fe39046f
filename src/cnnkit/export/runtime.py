"""Run an exported ONNX file on onnxruntime behind the same verbs as a run folder.

    model, card = open_onnx("runs/digits/model.onnx")   # card: from the file's metadata
    model(images)                                       # (N, C, H, W) preprocessed → the output, as torch's

`OnnxModel` is an nn.Module with no parameters whose forward hands its input to an onnxruntime session, so
`cnnkit predict FILE.onnx` goes through the very code of `cnnkit predict RUN` (reading, preprocessing with the
card, the activation, the JSON) and gives the same JSON. Only the network runs on onnxruntime; cnnkit's
preprocessing still needs torch and torchvision installed (docs/export.md says so).

`runtime="openvino"` runs the same file on Intel's OpenVINO instead (`pip install openvino`), through
`OpenVinoSession`, which answers the few calls of onnxruntime's InferenceSession that cnnkit makes. OpenVINO
picks its own inference precision (bf16 on a CPU with AMX, where it ran ResNet-18 6-7× faster than
onnxruntime fp32 here: docs/benchmarks.md); `precision="fp32"` forces f32, "bf16" asks for bf16.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.runs.card import ModelCard

__all__ = ["RUNTIMES", "OnnxModel", "is_onnx", "open_onnx", "read_metadata", "session"]

RUNTIMES = ("onnxruntime", "openvino")
ONNX_HINT = "pip install onnxruntime (or: pip install 'cnnkit[onnx]')"
OPENVINO_HINT = "pip install openvino (or: pip install 'cnnkit[openvino]')"
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}  # cnnkit's --precision → OpenVINO's INFERENCE_PRECISION_HINT


def is_onnx(target: str | Path) -> bool:
    return str(target).lower().endswith(".onnx")


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime InferenceSession of `path` on the CPU; a missing package or a broken file: one line."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise CnnkitError(f"running an ONNX file needs onnxruntime: {ONNX_HINT}") from err
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CnnkitError(f"{path} is not a readable ONNX model: {first[:200]}") from err


def read_metadata(sess) -> dict[str, str]:
    return dict(sess.get_modelmeta().custom_metadata_map)


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO for the CPU, answering what cnnkit asks of an onnxruntime session:
    run(None, {name: array}) → [arrays], get_inputs(), get_outputs(), get_modelmeta().custom_metadata_map."""

    def __init__(self, path: Path, precision: str = "auto", threads: int | None = None):
        try:
            import openvino as ov
        except ImportError as err:
            raise CnnkitError(f"--runtime openvino needs OpenVINO: {OPENVINO_HINT}") from err
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision]} if precision in OPENVINO_PRECISION else {}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CnnkitError(f"OpenVINO cannot compile {path}: {first[:200]}") from err
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        self._meta = type("Meta", (), {"custom_metadata_map": meta})()
        self._inputs = [type("Arg", (), {"name": p.get_any_name(), "shape": [d if d.is_static else None for d in
                                                                            p.get_partial_shape()]})()
                        for p in self.compiled.inputs]
        self._outputs = [type("Arg", (), {"name": p.get_any_name()})() for p in self.compiled.outputs]
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.compiled(feed)
        outputs = self.compiled.outputs if names is None else [self.compiled.output(n) for n in names]
        return [np.asarray(result[o]) for o in outputs]

    def get_inputs(self) -> list:
        return self._inputs

    def get_outputs(self) -> list:
        return self._outputs

    def get_modelmeta(self):
        return self._meta


def _card(meta: dict[str, str], path: Path) -> ModelCard:
    if "cnnkit.card" not in meta:
        raise CnnkitError(f"{path} has no cnnkit model card in its metadata; export it with `cnnkit export RUN`")
    fields = json.loads(meta["cnnkit.card"])
    known = {f.name for f in dataclasses.fields(ModelCard)}
    return ModelCard(**{k: v for k, v in fields.items() if k in known})


class OnnxModel(nn.Module):
    """The network of an exported file as a parameter-free nn.Module: forward runs onnxruntime on the CPU and
    returns torch tensors on the input's device. Classification and segmentation files take (N, C, H, W)."""

    def __init__(self, path: str | Path, threads: int | None = None, runtime: str = "onnxruntime",
                 precision: str = "auto"):
        super().__init__()
        self.path, self.runtime = Path(path), runtime
        if runtime not in RUNTIMES:
            raise CnnkitError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        if runtime == "onnxruntime" and precision not in ("auto", "fp32"):
            raise CnnkitError(f"an ONNX file runs on onnxruntime in the precision it was exported in; drop "
                              f"--precision {precision} (or use --runtime openvino)")
        self.session = (session(self.path, threads) if runtime == "onnxruntime"
                        else OpenVinoSession(self.path, precision, threads))
        self.metadata = read_metadata(self.session)
        self.card = _card(self.metadata, self.path)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().float().cpu().numpy())
        out = self.session.run(None, {self.input_name: x})[0]
        return torch.from_numpy(out).to(images.device)

    def __deepcopy__(self, memo: dict) -> OnnxModel:
        return self  # fold_batch_norm copies the model first: there is nothing to fold, and a session cannot copy

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}"


def open_onnx(path: str | Path, threads: int | None = None, runtime: str = "onnxruntime",
              precision: str = "auto") -> tuple[nn.Module, ModelCard]:
    """(model, card) of an exported ONNX file on `runtime` (onnxruntime or openvino), the card from its
    metadata; a detector's file gives a module that takes a list of (3, H, W) images, as the PyTorch detector
    does."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"ONNX file not found: {path}")
    model = OnnxModel(path, threads, runtime, precision)
    if model.card.problem in ("detect", "instance"):
        from cnnkit.export.onnx_detection import OnnxDetector

        return OnnxDetector(model), model.card
    return model, model.card
