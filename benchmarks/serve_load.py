"""Load test of `cnnkit serve`: N concurrent clients posting real images for D seconds, next to in-process
`cnnkit.api.predict` on the same images.

The server is the real command, `python -m cnnkit serve RUN --port 0` in a process of its own (its default
limits and batching unless --max-batch / --max-wait-ms are given). Each of --clients threads holds one kept-alive
HTTP connection (cnnkit.serve.client, standard library only) and posts --per-request images at a time, chosen
at random, for --seconds, timing every request. Then the server is stopped (Ctrl-C) and `cnnkit.api.predict`
runs in this process on the same images: once with all of them per call (its best case, batched) and once with
one image per call (what an unbatched server would do), each for a third of --seconds.

Printed as a markdown table: images/s, the p50 and p99 latency of a request (for the api rows: of one call),
requests sent, refusals (4xx), server errors (5xx), and lost requests (no answer: a connection error or a
timeout); any 5xx or lost request is a failure (exit status 1). Images: the files of --images DIR, else 64 of
scikit-learn's handwritten digits written as PNGs (what a digits run was trained on). The clients and the server
share this machine's cores: on a small machine the numbers are a floor, and the clients' own Python costs show.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serve_load.py RUN [--clients 16] [--seconds 30]
        [--per-request 1] [--images DIR] [--max-batch 16] [--max-wait-ms 5]
"""
from __future__ import annotations

import argparse
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cnnkit.serve.client import Client, as_file


def digits_images(folder: Path, count: int = 64) -> list[Path]:
    """`count` of scikit-learn's 8×8 digits, upsampled to 32×32 grey PNGs in `folder`."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for i in range(count):
        pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
        path = folder / f"digit{i:03d}_{digits.target[i]}.png"
        Image.fromarray(pixels).resize((32, 32), Image.Resampling.BILINEAR).save(path)
        paths.append(path)
    return paths


def start_server(run: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`python -m cnnkit serve RUN --port 0 EXTRA`; (process, URL) once it serves."""
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", run, "--port", "0", "--log-level", "warning",
                                *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("serving "):
        process.kill()
        sys.exit(f"the server did not start: {line}{process.communicate(timeout=30)[1]}")
    return process, line.split(" on ", 1)[1].split()[0]


class Tally:
    """What the clients saw: each request's latency (200s), refusals, 5xx and lost requests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.images = self.refused = self.server_errors = self.lost = self.wrong = 0

    def add(self, seconds: float, status: int | None, images: int, right: bool = True) -> None:
        with self.lock:
            if status is None:
                self.lost += 1
            elif status >= 500:
                self.server_errors += 1
            elif status != 200:
                self.refused += 1
            else:
                self.latencies.append(seconds)
                self.images += images
                self.wrong += not right


def client_loop(url: str, files: list[tuple], per_request: int, until: float, tally: Tally, seed: int) -> None:
    """Post `per_request` random images at a time until `until` (time.monotonic), on one kept-alive connection."""
    rng = random.Random(seed)
    client = Client(url, timeout=60)
    while time.monotonic() < until:
        chosen = [rng.choice(files) for _ in range(per_request)]
        start = time.perf_counter()
        try:
            answer = client.post_images(chosen)
        except OSError:
            tally.add(time.perf_counter() - start, None, 0)
            client.close()
            continue
        right = answer.status != 200 or [e["path"] for e in answer.json()] == [f[0] for f in chosen]
        tally.add(time.perf_counter() - start, answer.status, per_request, right)
    client.close()


def load(url: str, paths: list[Path], clients: int, seconds: float, per_request: int) -> tuple[Tally, float]:
    files = [as_file(p) for p in paths]
    with Client(url) as warm:  # one request first: the model's first call pays for lazy initialisation
        warm.post_images(files[:1])
    tally = Tally()
    start = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(url, files, per_request, start + seconds, tally, k))
               for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.monotonic() - start


def in_process(run: str, paths: list[Path], seconds: float, per_call: int) -> tuple[float, list[float]]:
    """(images/s, seconds per call) of api.predict with `per_call` images per call, for about `seconds`."""
    import warnings

    from cnnkit import api

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    api.predict(run, paths[:per_call])  # warm-up
    calls, images, start = [], 0, time.perf_counter()
    k = 0
    while time.perf_counter() - start < seconds or not calls:
        batch = [paths[(k + i) % len(paths)] for i in range(per_call)]
        t = time.perf_counter()
        api.predict(run, batch)
        calls.append(time.perf_counter() - t)
        images += per_call
        k += per_call
    return images / (time.perf_counter() - start), calls


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def table(rows: list[list[str]]) -> str:
    head = ["", "img/s", "p50 ms", "p99 ms", "requests", "4xx", "5xx", "lost"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder, pretrained weights or FILE.onnx, as for `cnnkit serve`")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--per-request", type=int, default=1, help="images per request")
    parser.add_argument("--images", type=Path, help="a folder of images (default: 64 digits as PNGs)")
    parser.add_argument("--max-batch", help="passed to cnnkit serve")
    parser.add_argument("--max-wait-ms", help="passed to cnnkit serve")
    a = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        paths = (sorted(p for p in a.images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
                 if a.images else digits_images(Path(folder)))
        extra = [x for flag, v in (("--max-batch", a.max_batch), ("--max-wait-ms", a.max_wait_ms)) if v
                 for x in (flag, v)]
        process, url = start_server(a.run, extra)
        try:
            tally, took = load(url, paths, a.clients, a.seconds, a.per_request)
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=60)
        rows = [[f"cnnkit serve, {a.clients} clients × {a.per_request} image(s)/request", f"{tally.images / took:.1f}",
                 f"{percentile(tally.latencies, 50) * 1e3:.1f}", f"{percentile(tally.latencies, 99) * 1e3:.1f}",
                 str(len(tally.latencies) + tally.refused + tally.server_errors + tally.lost), str(tally.refused),
                 str(tally.server_errors), str(tally.lost)]]
        for per_call, name in ((len(paths), f"api.predict in-process, {len(paths)} images per call"),
                               (1, "api.predict in-process, 1 image per call")):
            rate, calls = in_process(a.run, paths, a.seconds / 3, per_call)
            rows.append([name, f"{rate:.1f}", f"{percentile(calls, 50) * 1e3:.1f}",
                         f"{percentile(calls, 99) * 1e3:.1f}", str(len(calls)), "-", "-", "-"])
    print(f"{a.run}: {len(paths)} images, {a.seconds:g} s of load\n")
    print(table(rows))
    if tally.wrong:
        print(f"\n{tally.wrong} answers named the wrong images")
    return 1 if tally.server_errors or tally.lost or tally.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
