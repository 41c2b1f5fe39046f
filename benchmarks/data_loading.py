"""Data loading: decode + 'standard' augmentation of real photos, torchvision decoding against PIL.

Reads every image of hymenoptera/train (ants and bees: 244 JPEGs and one palette GIF, median 500x375)
under $CNNKIT_DATA (default ../shared/data beside the repository), decodes each with cnnkit's
`read_image` (torchvision.io.decode_image for JPEG, PIL for the rest, PNG included) or with a plain PIL
open + convert('RGB') + to-tensor baseline, applies the same training transform (fit to 224, the
'standard' augmentation, float, normalise), and batches with a DataLoader at num_workers 0, 1 and 2.
Workers persist across epochs; one warm-up epoch is not timed. Decoders alternate at each worker count;
the median images/s of each and the ratio torchvision/PIL are printed. A decode-only line (no
augmentation, in the main process) shows how much of the time is decoding.

First, on synthetic photo-like 224x224 RGB images written to a temporary folder (--synthetic N of them, 500 by
default; no data needed), the decode cost of each path of `read_image`: PNG is checked (cnnkit.data.png: chunk
CRCs and one inflate) and decoded by PIL, never by torchvision's libpng, which crashes on a broken PNG; that is
timed against torchvision's decode_image on the same files, and the PNG check alone. JPEG (quality 90) still goes
through torchvision after PIL reads its header's size: timed against decode_image alone. Decoders alternate.

    .venv/bin/python benchmarks/data_loading.py [--quick] [--repeats N] [--workers 0 1 2] [--synthetic N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image

from cnnkit.data.images import MAX_PIXELS, is_image_file, read_image
from cnnkit.data.png import png_problem
from cnnkit.data.transforms import build_transform, make_augment

SIZE = 224
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
Decoder = Callable[[Path], torch.Tensor]


def pil_decode(path: Path) -> torch.Tensor:
    """The baseline: PIL open, convert to RGB, HWC array to a CHW uint8 tensor."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1)


def cnnkit_decode(path: Path) -> torch.Tensor:
    return read_image(path, 3)


DECODERS: dict[str, Decoder] = {"torchvision": cnnkit_decode, "pil": pil_decode}


class Images(Dataset):
    def __init__(self, paths: list[Path], decode: Decoder, transform: Callable | None):
        self.paths, self.decode, self.transform = paths, decode, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self.decode(self.paths[i])
        return self.transform(img) if self.transform is not None else img


def data_root() -> Path:
    repo = Path(__file__).resolve().parent.parent
    return Path(os.environ.get("CNNKIT_DATA", repo.parent / "shared" / "data"))


def images_per_second(loader: DataLoader, epochs: int) -> float:
    """Images/s over `epochs` full passes of `loader`."""
    n = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += len(batch)
    return n / (time.perf_counter() - start)


def bench_loading(paths: list[Path], workers: int, repeats: int, epochs: int, batch_size: int) -> dict[str, float]:
    torch.manual_seed(0)
    transform = build_transform(SIZE, 3, MEAN, STD, augment=make_augment("standard"))
    loaders = {name: DataLoader(Images(paths, decode, transform), batch_size=batch_size, shuffle=True,
                                num_workers=workers, persistent_workers=workers > 0)
               for name, decode in DECODERS.items()}
    for loader in loaders.values():  # warm-up: start the workers, fill the page cache
        images_per_second(loader, 1)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(repeats):
        for name, loader in loaders.items():
            rates[name].append(images_per_second(loader, epochs))
    return {name: statistics.median(r) for name, r in rates.items()}


def bench_decode_only(paths: list[Path], repeats: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {name: [] for name in DECODERS}
    for decode in DECODERS.values():
        [decode(p) for p in paths]  # warm-up
    for _ in range(repeats):
        for name, decode in DECODERS.items():
            start = time.perf_counter()
            for p in paths:
                decode(p)
            rates[name].append(len(paths) / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def photo_like(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A (size, size, 3) uint8 image with a photo's statistics for a compressor: smooth shading of a few random
    waves and blobs, plus sensor-like noise (PNG of one: about 100 KB)."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for c in range(3):
        for _ in range(4):
            fx, fy, phase = rng.uniform(0.5, 6, 2).tolist() + [rng.uniform(0, 6.3)]
            img[..., c] += rng.uniform(20, 50) * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
        cx, cy, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.05, 0.25)]
        img[..., c] += rng.uniform(-80, 80) * (((x - cx) ** 2 + (y - cy) ** 2) < r * r)
    img += 128 + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def torchvision_decode(path: Path) -> torch.Tensor:
    """torchvision's decode_image on the file's bytes: what read_image did for PNG before (unsafe on broken PNGs)."""
    return decode_image(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8), mode=ImageReadMode.RGB)


def png_check(path: Path) -> None:
    assert png_problem(path.read_bytes(), MAX_PIXELS) is None


def bench_synthetic(n: int, repeats: int) -> None:
    """Images/s of each decoder on `n` synthetic PNGs and the same as JPEGs, median of `repeats` alternated passes."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        pngs, jpegs = [Path(tmp, f"{i}.png") for i in range(n)], [Path(tmp, f"{i}.jpg") for i in range(n)]
        for png, jpeg in zip(pngs, jpegs):
            im = Image.fromarray(photo_like(rng))
            im.save(png)
            im.save(jpeg, quality=90)
        for p in pngs[:3]:  # the two PNG paths give the same pixels
            assert torch.equal(cnnkit_decode(p), torchvision_decode(p))
        kb = sum(p.stat().st_size for p in pngs) / n / 1024
        print(f"{n} synthetic photo-like {SIZE}x{SIZE} RGB images: PNG {kb:.0f} KB, JPEG q90 "
              f"{sum(p.stat().st_size for p in jpegs) / n / 1024:.0f} KB on average")
        cases = {"PNG": (pngs, {"read_image": cnnkit_decode, "decode_image": torchvision_decode,
                                "png check only": png_check}),
                 "JPEG": (jpegs, {"read_image": cnnkit_decode, "decode_image": torchvision_decode})}
        for fmt, (paths, decoders) in cases.items():
            rates = {name: [] for name in decoders}
            for _ in range(repeats + 1):  # the first pass warms up
                for name, decode in decoders.items():
                    start = time.perf_counter()
                    for p in paths:
                        decode(p)
                    rates[name].append(n / (time.perf_counter() - start))
            med = {name: statistics.median(r[1:]) for name, r in rates.items()}
            line = "  ".join(f"{name} {rate:.0f} img/s" for name, rate in med.items())
            print(f"{fmt:<5} decode only, main: {line}  ratio read_image/decode_image "
                  f"{med['read_image'] / med['decode_image']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 images, 1 repeat (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each decoder (alternated)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed pass")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    parser.add_argument("--synthetic", type=int, default=500, help="synthetic PNG/JPEG images to time (0: none)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.synthetic:
        bench_synthetic(args.synthetic if not args.quick else min(args.synthetic, 64), 1 if args.quick else
                        args.repeats)

    folder = data_root() / "hymenoptera" / "train"
    if not folder.is_dir():
        print(f"SKIP: {folder} not found; set CNNKIT_DATA to the folder that holds hymenoptera/")
        sys.exit(0)
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    repeats = args.repeats
    if args.quick:
        paths, repeats = paths[::max(1, len(paths) // 64)][:64], 1

    print(f"{len(paths)} images from {folder}; size {SIZE}, 'standard' augmentation, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, cpus {len(os.sched_getaffinity(0))}, repeats {repeats}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'pipeline':<22} {'torchvision img/s':>17} {'PIL img/s':>10} {'ratio tv/PIL':>12}")
    d = bench_decode_only(paths, repeats)
    print(f"{'decode only, main':<22} {d['torchvision']:>17.1f} {d['pil']:>10.1f} {d['torchvision'] / d['pil']:>12.3f}",
          flush=True)
    for w in args.workers:
        r = bench_loading(paths, w, repeats, args.epochs, args.batch_size)
        label = f"+augment, workers={w}"
        print(f"{label:<22} {r['torchvision']:>17.1f} {r['pil']:>10.1f} {r['torchvision'] / r['pil']:>12.3f}",
              flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f} (other processes on the CPU make the numbers noisy)")


if __name__ == "__main__":
    main()
