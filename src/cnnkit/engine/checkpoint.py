"""Atomic checkpoint files: write to a temp file in the same folder, fsync, then rename over the target."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from cnnkit.errors import CnnkitError


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save that never leaves a half-written file: a crash keeps the previous version intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True: tensors and plain containers only, never arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise CnnkitError(f"cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None
