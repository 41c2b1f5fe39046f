"""Weight files read safely, the one place that does it: `load_torch_file` (torch.load with weights_only=True:
tensors and plain containers, never pickled code) and `load_safetensors_file`. A file that is not plain weights
is one line that says so, names what it asked to run and how to fix it; the code it carries never runs.
tests/test_safe_loading.py checks that every torch.load under src/cnnkit passes weights_only=True.

    state = load_torch_file("model.pt")              # or CnnkitError("model.pt is not a plain weights file ...")
    tensors, metadata = load_safetensors_file("model.safetensors")
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from cnnkit.errors import CnnkitError

RESAVE = "re-save it with torch.save(model.state_dict(), PATH) where it was made"
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _first_sentence(err: BaseException) -> str:
    """The first line of an error, cut after its first sentence (torch's zip errors run on for three more)."""
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0]


def refused(path: Path, err: BaseException, what: str, fix: str) -> str:
    """The one line of a file that weights-only unpickling refused: the global it asks for (code to run), or the
    instruction it stopped at (not a torch.save file, or more than tensors and plain containers)."""
    text = str(err)
    found = _GLOBAL.search(text)
    if found:
        name = found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"
        return f"{path} is not a plain weights file (it asks to run code: {name}); cnnkit never unpickles code — {fix}"
    detail = next((line.strip() for line in text.split("WeightsUnpickler error:")[-1].splitlines() if line.strip()),
                  "refused by weights-only loading")
    return (f"cannot read {what} {path}: not a plain weights file (not written by torch.save, or it holds more than "
            f"tensors and plain containers: {detail.rstrip('.').lower()}); {fix}")


def load_torch_file(path: str | Path, what: str = "weight file", fix: str = RESAVE) -> Any:
    """torch.load(path) with weights_only=True on the CPU; any failure is one line (CnnkitError) naming `what`."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the error, if any, says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CnnkitError(refused(path, err, what, fix)) from None
    except Exception as err:  # noqa: BLE001  (a corrupt or truncated file is the user's bad input)
        raise CnnkitError(f"cannot read {what} {path}: {_first_sentence(err).rstrip('.')} (not a torch file, or "
                          "corrupt or truncated)") from None


def load_safetensors_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on the CPU, the header's string metadata) of a .safetensors file; a corrupt or truncated file, or
    a header that claims more bytes than the file holds, is one line."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"weight file not found: {path}")
    try:
        from safetensors import safe_open
    except ImportError:
        raise CnnkitError(f"{path.name} is a safetensors file: pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # noqa: BLE001  (safetensors' own SafetensorError, or an OSError)
        raise CnnkitError(f"{path} is not a valid safetensors file ({_first_sentence(err)}): it is corrupt or "
                          "truncated; save it again") from None


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The .safetensors file of `state` (each tensor copied to the CPU, contiguous, none sharing memory) with
    `metadata` (strings) in its header."""
    try:
        from safetensors.torch import save
    except ImportError:
        raise CnnkitError("--save-format safetensors needs the safetensors package: pip install safetensors") from None
    return save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, metadata=metadata)
