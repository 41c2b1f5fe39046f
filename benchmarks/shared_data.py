"""Where the benchmarks find the real datasets: $CNNKIT_DATA, else ../shared/data beside the project."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mnist_dir() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    if env:
        p = Path(env)
        return p / "mnist" if (p / "mnist").is_dir() else p
    return ROOT.parent / "shared" / "data" / "mnist"
