"""Start-up time: `import cnnkit` and `cnnkit --help` against `import torch` (the peer every cnnkit verb that
trains must load), each a fresh interpreter, median of REPEATS alternated runs.

    .venv/bin/python benchmarks/import_time.py
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPEATS = 5
CLI = str(Path(sys.executable).parent / "cnnkit")
COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import cnnkit": [sys.executable, "-c", "import cnnkit"],
    "cnnkit --help": [CLI, "--help"],
    "cnnkit train --help": [CLI, "train", "--help"],
    "import cnnkit.api (what train loads)": [sys.executable, "-c", "import cnnkit.api"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(REPEATS):  # alternated, so a busy moment hits every command alike
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    torch_s = statistics.median(times["import torch"])
    print(f"{'command':40s} {'median s':>9s} {'× import torch':>15s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:40s} {median:9.3f} {median / torch_s:15.3f}")


if __name__ == "__main__":
    main()
