"""Seconds per image of each detector on this CPU, the notes' R-CNN / Fast / Faster table for cnnkit's detectors.

Each detector (random weights, 2 classes) sees one image at a time (batch 1) at each stated input size, in
eval mode under torch.inference_mode, after two warm-up calls; the script prints the best and the median of
`--repeats` calls. Post-processing is part of the time (score threshold 0.05, NMS at IoU 0.5, as by default).

    .venv/bin/python benchmarks/detection_speed.py [--sizes 128,512] [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from cnnkit.models.factory import create_model

# (label, registry name, options for an input of `s` pixels)
DETECTORS = (
    ("Faster R-CNN, ResNet-18 + FPN", "faster_rcnn", lambda s: {"min_size": s, "max_size": s}),
    ("Faster R-CNN, ResNet-18, no FPN", "faster_rcnn", lambda s: {"fpn": False, "min_size": s, "max_size": s}),
    ("Faster R-CNN, EfficientNet-Lite0 + FPN", "faster_rcnn",
     lambda s: {"backbone": "efficientnet_lite0", "min_size": s, "max_size": s}),
    ("SSD, ResNet-18", "ssd", lambda s: {"image_size": s}),
    ("YOLO v1 (S=7, B=2), ResNet-18", "yolo", lambda s: {"image_size": s}),
    ("YOLO anchor-free, ResNet-18", "yolo", lambda s: {"image_size": s, "head": "anchor-free"}),
)


@torch.inference_mode()
def seconds_per_image(name: str, size: int, repeats: int, **options) -> tuple[float, float]:
    """(best, median) seconds of one forward pass on one size × size image."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, **options).eval()
    image = [torch.rand(3, size, size)]
    for _ in range(2):
        model(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(image)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,512", help="input sizes in pixels, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, best (median) seconds per image")
    print(f"{'detector':40s}" + "".join(f"{f'{s}×{s}':>20s}" for s in sizes))
    for label, name, options in DETECTORS:
        cells = [seconds_per_image(name, s, args.repeats, **options(s)) for s in sizes]
        print(f"{label:40s}" + "".join(f"{f'{best:.3f} ({median:.3f})':>20s}" for best, median in cells), flush=True)


if __name__ == "__main__":
    main()
