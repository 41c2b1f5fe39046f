"""`cnnkit export RUN --format onnx`: the trained network as an ONNX file that carries its own model card.

    api.export("runs/digits")                      # → runs/digits/model.onnx; or: cnnkit export runs/digits

What goes in the file:
- the network of RUN/model.pt in eval mode, fp32, with each Conv2d → BatchNorm2d pair folded into one Conv2d
  (cnnkit.engine.inference.fold_batch_norm);
- one input, `images`: (N, C, H, W) float32, already preprocessed as the card says (resized, scaled to [0, 1],
  normalised with the card's mean and std: what `card.transform()` gives);
- one output, `output`: what the PyTorch model returns, raw: logits for classes and labels (the card's `task`
  says which activation turns them into probabilities: softmax for multiclass, a sigmoid for binary and
  multilabel), standardised values for regression (× target_std + target_mean), per-pixel logits
  (N, K, H, W) for semantic segmentation;
- the batch axis is dynamic; H and W are dynamic too where the network allows it (checked by running the
  file at another size against PyTorch), else fixed at the card's input size (`cnnkit.dynamic_size`);
- metadata_props: `cnnkit.card` (the ModelCard as JSON: classes, input size, mean/std, resize mode, problem
  type ...), `cnnkit.output` (what the output means), `cnnkit.dynamic_size`, `cnnkit.version`.

The exporter is torch.onnx's TorchScript-based one (`dynamo=False`) first: it traces torchvision's detectors,
NMS included, and it is about twice as fast; its DeprecationWarning is silenced. Where it cannot translate an
operator (an adaptive pooling to a size that does not divide its input: VGG and AlexNet below 224²), the
torch.export-based one (`dynamo=True`) exports it at the card's fixed size. Detection and instance
segmentation: cnnkit.export.onnx_detection.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnkit.engine.inference import fold_batch_norm
from cnnkit.errors import CnnkitError
from cnnkit.runs.card import ModelCard
from cnnkit.version import __version__

__all__ = ["OPSET", "OUTPUT_MEANING", "export_onnx", "export_network", "write_metadata", "replace_metadata",
           "default_path"]

OPSET = 17
log = logging.getLogger("cnnkit")

# the card's problem type → what the raw `output` of the file means
OUTPUT_MEANING = {
    "multiclass": "logits (N, K): softmax gives the class probabilities",
    "binary": "logit (N, 1): a sigmoid gives the probability of the positive class",
    "multilabel": "logits (N, K): a sigmoid per label gives its probability",
    "regression": "standardised values (N, D): × target_std + target_mean gives the values",
    "segment": "logits (N, K, H, W): the argmax over K is each pixel's class",
}


def default_path(run: str | Path, int8: bool = False) -> Path:
    return Path(run) / ("model.int8.onnx" if int8 else "model.onnx")


def _atomic_save(proto, out: Path) -> None:
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def replace_metadata(source: Path, fields: dict[str, str], out: Path) -> None:
    """Write the ONNX file `source` to `out` (atomically; `out` may be `source`) with `fields` as its
    metadata_props, in place of what it had, and cnnkit as its producer."""
    import onnx

    proto = onnx.load(str(source))
    del proto.metadata_props[:]
    for key, value in fields.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.producer_version = "cnnkit", __version__
    _atomic_save(proto, out)


def write_metadata(path: Path, card: ModelCard, output: str, dynamic_size: bool, extra: dict | None = None) -> None:
    """Put the model card and what the output means into the ONNX file's metadata_props (atomically)."""
    fields = {"cnnkit.card": json.dumps(dataclasses.asdict(card)), "cnnkit.output": output,
              "cnnkit.dynamic_size": json.dumps(dynamic_size), "cnnkit.version": __version__, **(extra or {})}
    replace_metadata(path, fields, path)


def _trace(model: nn.Module, example: torch.Tensor, path: Path, dynamic_size: bool) -> None:
    """The TorchScript-based exporter: dynamic batch, and dynamic H and W when asked."""
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning and tracer warnings
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=["images"],
                          output_names=["output"], dynamic_axes={"images": axes, "output": {0: "batch"}})


def _export_program(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The torch.export-based exporter, fixed H and W, dynamic batch: it decomposes what the other cannot
    translate (an adaptive pooling to a size that does not divide its input: VGG and AlexNet below 224²)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=18, input_names=["images"],
                                    output_names=["output"], dynamic_shapes=({0: batch},))
        program.save(str(path))


def _runs_at(path: Path, model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the file at `path` gives the PyTorch model's output on `x` (an input of another shape)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a shape mismatch is the expected answer here, not an error to print
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": x.numpy()})[0]
    except Exception:  # noqa: BLE001  (onnxruntime raises its own exception types for shape errors)
        return False
    with torch.no_grad():
        want = model(x)
    return got.shape == tuple(want.shape) and bool(np.allclose(got, want.numpy(), atol=1e-3, rtol=1e-3))


def export_network(model: nn.Module, card: ModelCard, path: Path) -> bool:
    """Trace `model` (folded, fp32, eval) to `path`, with dynamic H and W when the network gives the same
    output as PyTorch at another size; whether it did. Tried in turn: the TorchScript exporter with dynamic
    H and W, then with fixed ones, then the torch.export-based exporter (fixed H and W); the first error is
    raised when all fail."""
    c, h, w = card.input_size
    example = torch.rand(2, c, h, w)
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / "dynamic.onnx"
        try:
            _trace(model, example, trial, dynamic_size=True)
            dynamic = _runs_at(trial, model, torch.rand(3, c, h + 32, w + 32))
            first = None
        except Exception as err:  # noqa: BLE001  (the tracer raises many types)
            dynamic, first = False, err
        if dynamic:
            os.replace(trial, path)
            return True
    for attempt in (lambda: _trace(model, example, path, dynamic_size=False),
                    lambda: _export_program(model, example, path)):
        try:
            attempt()
        except Exception as err:  # noqa: BLE001  (both exporters raise many types)
            first = first or err
            log.debug("ONNX export attempt failed: %s", err)
            continue
        if not _runs_at(path, model, torch.rand(3, c, h, w)):  # a trace that froze a value would pass silently
            raise CnnkitError(f"{card.architecture} cannot be exported to ONNX: the traced graph does not give "
                              "the model's output on another input (it leaves torch, or branches on the data)")
        return False
    raise first


def export_onnx(model: nn.Module, card: ModelCard, out: str | Path) -> Path:
    """Write `model` (as trained, with `card`) to `out` as ONNX with its card in the metadata; the path."""
    out = Path(out)
    if card.problem not in OUTPUT_MEANING:  # api.export sends detectors to onnx_detection, which imports this module
        raise CnnkitError(f"export_onnx writes classification and segmentation networks, not a {card.problem} "
                          "model: cnnkit.export.onnx_detection.export_detector writes detectors")
    folded = fold_batch_norm(model.float().cpu())  # a copy, in eval mode
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            dynamic = export_network(folded, card, Path(tmp))
        except CnnkitError:
            raise
        except Exception as err:
            raise CnnkitError(f"{card.architecture} cannot be exported to ONNX: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from err
        write_metadata(Path(tmp), card, OUTPUT_MEANING[card.problem], dynamic)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
