"""Atomic checkpoint files: serialised in memory, then written whole through cnnkit.files (a temporary file in
the same folder, fsynced, renamed over the target). A kill or a full disk keeps the previous version intact."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from cnnkit.errors import CnnkitError
from cnnkit.files import atomic_write
from cnnkit.models.weights_file import load_torch_file

CHECKPOINT_FIX = "a checkpoint of cnnkit's is written by `cnnkit train`; train again, or resume from another copy"


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save that never leaves a half-written file. The bytes are made in memory first: torch turns a failed
    write into a RuntimeError without its errno, and a full disk must be told as such (cnnkit.files.DiskFull)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True: tensors and plain containers only, never arbitrary pickled code. A file that
    asks to run code, is unreadable, or holds no dict is a one-line CnnkitError."""
    state = load_torch_file(path, "checkpoint", CHECKPOINT_FIX)
    if not isinstance(state, dict):
        raise CnnkitError(f"{path} holds a {type(state).__name__}, not a cnnkit checkpoint or model file (a dict of "
                          "tensors and plain values)")
    return state
