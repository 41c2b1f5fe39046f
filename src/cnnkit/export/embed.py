"""Embeddings: one feature vector per image, from a run or pretrained weights, written for search or clustering.

    api.embed("runs/ants", ["val/"], out="ants.npz")      # or: cnnkit embed runs/ants val/ --out ants.npz

An image's embedding is the input of the model's last linear layer: the pooled features its classifier sees
(`cnnkit.engine.transfer.capture_input`, the hook the linear probe uses too). `layer="NAME"` takes that module's
output instead, global-average-pooled when it is a feature map (N, C, H, W) → (N, C), flattened otherwise.
Images go through the run's own preprocessing (`card.transform()`), decoded a batch at a time by worker
processes, through the model with its batch norms folded (a pair that `layer` names stays unfused), in eval mode
under torch.inference_mode, in the chosen precision (cnnkit.engine.inference.for_inference; the features are
stored as fp32); unreadable ones are skipped with a warning. The extension of the output file picks its
format (FORMATS): .npy (+ a `.paths.txt` sidecar), .npz or .parquet; it is written atomically.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnkit.engine.inference import for_inference
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.factory import get_spec
from cnnkit.models.stages import capture_input, last_linears
from cnnkit.runs.card import ModelCard
from cnnkit.runs.inputs import image_batches

__all__ = ["FORMATS", "PARQUET_HINT", "check_format", "embedding_layer", "embed_images", "write_embeddings",
           "embed"]

FORMATS = (".npy", ".npz", ".parquet")
PARQUET_HINT = "pip install 'cnnkit[parquet]'"
log = logging.getLogger("cnnkit")


def check_format(out: str | Path) -> str:
    """The format of `out` by its extension (one of FORMATS); pyarrow must be importable for .parquet."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise CnnkitError(f"cannot write embeddings to {str(out)!r}: --out must end in "
                          f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise CnnkitError(f"writing .parquet needs pyarrow: {PARQUET_HINT} (or use .npz/.npy)") from None
    return suffix


def embedding_layer(model: nn.Module, card: ModelCard) -> str:
    """The module path of the model's last linear layer (a "partial" run's PartialNet: its own head `fc`)."""
    return last_linears(model, get_spec(card.architecture))[0]


def _module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    modules.pop("", None)
    if name not in modules:
        raise unknown_name("layer", name, modules)
    return modules[name]


def _pooled(output: torch.Tensor | tuple, name: str) -> torch.Tensor:
    """A module's output as (N, F): feature maps (N, C, H, W) averaged over H and W, anything else flattened."""
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise CnnkitError(f"layer {name!r} does not output a tensor; choose a module that does (e.g. a conv layer)")
    return output.mean(dim=(2, 3)) if output.dim() == 4 else output.flatten(1)  # (N, C) or (N, F)


@contextmanager
def _capture_output(layer: nn.Module, name: str) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward of `layer` appends its pooled output (N, F) to the yielded list."""
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda m, args, out: seen.append(_pooled(out, name).float().cpu()))
    try:
        yield seen
    finally:
        hook.remove()


@torch.inference_mode()
def embed_images(model: nn.Module, card: ModelCard, paths: list[Path], batch_size: int = 64,
                 layer: str | None = None, precision: str = "auto") -> tuple[np.ndarray, list[Path]]:
    """(features (N, F) float32, the N paths they belong to): see the module docstring."""
    if batch_size < 1:
        raise CnnkitError(f"--batch-size must be at least 1, got {batch_size}")
    if layer:
        _module(model, layer)  # an unknown name fails before any work
    name = layer or embedding_layer(model, card)
    model, mode = for_inference(model, precision, keep=(name,))  # a conv named by --layer keeps its own output
    capture = _capture_output(_module(model, layer), layer) if layer else capture_input(model.get_submodule(name))
    kept, skipped = [], []
    with capture as seen:
        for batch_paths, images in image_batches(paths, card, batch_size, skipped):
            with mode.autocast():
                model(mode.input(images.to(mode.device)))
            kept += batch_paths
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {'; '.join(skipped[:5])}", stacklevel=2)
    if not kept:
        raise CnnkitError("no readable images to embed")
    features = torch.cat(seen).float().numpy()  # (N, F)
    if len(features) != len(kept):
        raise CnnkitError(f"layer {layer or embedding_layer(model, card)!r} runs {len(features) / len(kept):.3g} "
                          "times per image; choose a module that runs once per forward pass")
    return features, kept


def _atomic(out: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a temporary file beside `out`, then rename it to `out` (readers never see half a file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private (0600); give it a new file's usual mode
        write(Path(tmp))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _save_npz(path: Path, features: np.ndarray, names: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, features=features, paths=names)


def _save_parquet(path: Path, features: np.ndarray, names: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, dim = features.shape
    values = pa.array(features.reshape(-1), type=pa.float32())  # (N·F,)
    table = pa.table({"path": pa.array(names, type=pa.string()),
                      "embedding": pa.FixedSizeListArray.from_arrays(values, dim)})  # N rows of F floats
    pq.write_table(table, path)


def write_embeddings(features: np.ndarray, paths: list[Path], out: str | Path) -> Path:
    """Write features (N, F) and their paths to `out` in the format of its extension; returns `out`."""
    out, suffix = Path(out), check_format(out)
    features = np.ascontiguousarray(features, dtype=np.float32)  # (N, F)
    names = [str(p) for p in paths]
    if suffix == ".npy":
        _atomic(out, lambda tmp: _save_npy(tmp, features))
        sidecar = out.with_suffix(".paths.txt")
        _atomic(sidecar, lambda tmp: tmp.write_text("".join(n + "\n" for n in names)))
    elif suffix == ".npz":
        _atomic(out, lambda tmp: _save_npz(tmp, features, np.array(names, dtype=str)))
    else:
        _atomic(out, lambda tmp: _save_parquet(tmp, features, names))
    return out


def embed(model: nn.Module, card: ModelCard, paths: list[Path], out: str | Path, batch_size: int = 64,
          layer: str | None = None, precision: str = "auto") -> Path:
    """Embed `paths` with `model` and write them to `out` (see write_embeddings); returns `out`."""
    check_format(out)
    if not paths:
        raise CnnkitError("no images to embed; give image files or folders of images")
    features, kept = embed_images(model, card, paths, batch_size, layer, precision)
    log.info("%d images → %d-dim features", *features.shape)
    return write_embeddings(features, kept, out)
