"""The notes' detection lineage, timed side by side on this CPU: R-CNN, SPP-net, Fast R-CNN, Faster R-CNN, SSD
and YOLO, with each stage apart and each one's test mAP@0.5.

Every detector is trained by `cnnkit train --task detect` (or reused from OUT/<name> when that run exists) on
Penn-Fudan with the same seeded 80/10/10 split by image, the same ImageNet EfficientNet-Lite0 backbone and the
same 384-px letterboxed input. Then each sees the same test images one at a time (batch 1, fp32, eval mode,
`--threads` threads) with empty caches, so proposals and features are computed as a user's first call computes
them. The time of each call is split into stages, each counted once (a stage nested in another is taken out
of it): proposals (selective search, or Faster R-CNN's RPN), features (the backbone: per region for R-CNN, per
image for the others), heads (classifier and box regressor), NMS (every call, the RPN's included), and the rest
(resizing, box decoding). The table goes in docs/benchmarks.md beside the notes' 50 s / 2 s / 0.2 s.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/detection_lineage.py --out runs/lineage [--only rcnn,ssd]

Needs $CNNKIT_DATA/pennfudan or ../shared/data/pennfudan, and `pip install 'cnnkit[proposals]'`.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BACKBONE = ["--model-option", "backbone=efficientnet_lite0.imagenet"]
# name → (label, the flags of its `cnnkit train` besides the shared ones)
DETECTORS = {
    # R-CNN warps each proposal to 128 px, not the paper's 227: its first epoch runs the CNN on about 250,000
    # crops, 40 minutes on 2 cores at 128 px and about three times that at 227
    # (R-CNN and SPP-net train with their own recipe: 20 epochs of AdamW at 1e-3 over the cached features)
    "rcnn": ("R-CNN (warped regions, SVMs)", [*BACKBONE, "--model-option", "crop=128"]),
    "spp_net": ("SPP-net (pyramid pooling)", [*BACKBONE]),
    "fast_rcnn": ("Fast R-CNN (RoI pooling)", [*BACKBONE, "--epochs", "8", "--optimizer", "adamw", "--lr", "3e-4"]),
    "faster_rcnn": ("Faster R-CNN + FPN (RPN)", [*BACKBONE, "--epochs", "6", "--optimizer", "adamw", "--lr", "3e-4",
                                                "--augment", "light"]),
    "ssd": ("SSD", [*BACKBONE, "--epochs", "10", "--batch-size", "8", "--augment", "light"]),
    "yolo": ("YOLO (anchor-free head)", [*BACKBONE, "--model-option", "head=anchor-free", "--epochs", "6",
                                         "--optimizer", "adamw", "--lr", "1e-3", "--augment", "light"]),
}
STAGES = ("proposals", "features", "heads", "nms", "other")


def pennfudan() -> Path:
    base = Path(os.environ.get("CNNKIT_DATA") or ROOT.parent / "shared" / "data")
    return base / "pennfudan" if (base / "pennfudan").is_dir() else base


def train(name: str, out: Path) -> float:
    """Train `name` into out (unless it holds a run); the wall seconds it took (0 when reused)."""
    from cnnkit.cli.app import main as cnnkit

    if (out / "model.pt").is_file():
        return 0.0
    shared = ["-q", "train", "--task", "detect", "--data", str(pennfudan()), "--image-size", "384", "--val", "0.1",
              "--test", "0.1", "--batch-size", "4", "--seed", "0", "--model", name, "--out", str(out)]
    start = time.perf_counter()
    if cnnkit(shared + DETECTORS[name][1]) != 0:
        raise SystemExit(f"training {name} failed")
    return time.perf_counter() - start


class Clock:
    """Self time per stage: entering a stage pauses the one it is nested in."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[tuple[str, float]] = []

    def enter(self, stage: str) -> None:
        now = time.perf_counter()
        if self.stack:
            parent, since = self.stack[-1]
            self.seconds[parent] += now - since
        self.stack.append((stage, now))

    def leave(self) -> None:
        now = time.perf_counter()
        stage, since = self.stack.pop()
        self.seconds[stage] += now - since
        if self.stack:
            self.stack[-1] = (self.stack[-1][0], now)

    @contextmanager
    def module(self, module: torch.nn.Module, stage: str):
        handles = [module.register_forward_pre_hook(lambda *_: self.enter(stage)),
                   module.register_forward_hook(lambda *_: self.leave())]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def function(self, owner: object, name: str, stage: str):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self.enter(stage)
            try:
                return original(*args, **kwargs)
            finally:
                self.leave()

        setattr(owner, name, timed)
        try:
            yield
        finally:
            setattr(owner, name, original)


def stages(clock: Clock, name: str, model: torch.nn.Module) -> list:
    """The context managers that time `model`'s stages."""
    import torchvision.ops.boxes as box_ops

    from cnnkit.models.detection import rcnn, region, yolo

    nms = [clock.function(box_ops, "batched_nms", "nms")]
    if name == "rcnn":
        return [clock.function(region.Proposer, "__call__", "proposals"),
                clock.function(rcnn.RCNN, "region_features", "features"), clock.module(model.svm, "heads"),
                clock.module(model.regressor, "heads"), clock.function(rcnn, "batched_nms", "nms")]
    if name in ("spp_net", "fast_rcnn"):
        return [clock.function(region.Proposer, "__call__", "proposals"), clock.module(model.body, "features"),
                clock.module(model.roi_heads, "heads"), *nms]
    if name == "faster_rcnn":
        d = model.detector
        return [clock.module(d.rpn, "proposals"), clock.module(d.backbone, "features"),
                clock.module(d.roi_heads, "heads"), *nms]
    if name == "ssd":
        return [clock.module(model.detector.backbone, "features"), clock.module(model.detector.head, "heads"), *nms]
    return [clock.module(model.body, "features"), clock.module(model.head, "heads"),
            clock.function(yolo, "_nms", "nms")]


@torch.inference_mode()
def measure(name: str, run: Path, threads: int) -> dict:
    """Seconds per test image by stage, and the test mAP@0.5, of the run's model (batch 1, fp32)."""
    from cnnkit.data.detection.loader import make_detection_loader
    from cnnkit.data.detection.source import open_detection_source
    from cnnkit.metrics.detection import evaluate_detections
    from cnnkit.runs.folder import load_model

    torch.set_num_threads(threads)
    os.environ["CNNKIT_CACHE"] = tempfile.mkdtemp(prefix=f"lineage-{name}-")  # cold: as on a first call
    model, card = load_model(run)
    model.eval()
    test = json.loads((run / "split.json").read_text())["splits"]["test"]
    loader = make_detection_loader(open_detection_source(pennfudan()), test, size=card.input_size[1], batch_size=1,
                                   train=False, workers=0)
    clock, targets, predictions, total = Clock(), [], [], 0.0
    with ExitStack() as timers:
        for timer in stages(clock, name, model):
            timers.enter_context(timer)
        for batch in loader:
            start = time.perf_counter()
            clock.enter("other")
            predictions += model(list(batch.images))
            clock.leave()
            total += time.perf_counter() - start
            targets += batch.targets
    result = evaluate_detections(targets, predictions, card.classes)
    n = len(test)
    return {"images": n, "seconds": total / n, **{s: clock.seconds[s] / n for s in STAGES},
            "map50": float(result["map50"]), "test": sorted(test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "lineage", help="the runs, one folder each")
    parser.add_argument("--only", default=",".join(DETECTORS), help="comma-separated detector names")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    for name in names:
        if name not in DETECTORS:
            raise SystemExit(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    trained = {name: train(name, args.out / name) for name in names}
    print(f"Penn-Fudan test images, 384 px, batch 1, fp32, {args.threads} threads; seconds per image")
    print("| detector | total | proposals | features | heads | NMS | other | test mAP@0.5 | training |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows, tests = {}, set()
    for name in names:
        row = rows[name] = measure(name, args.out / name, args.threads)
        tests.add(tuple(row.pop("test")))
        cells = " | ".join(f"{row[s]:.3f}" for s in ("seconds", *STAGES))
        took = f"{trained[name]:.0f} s" if trained[name] else "reused"
        print(f"| {DETECTORS[name][0]} | {cells} | {row['map50']:.3f} | {took} |", flush=True)
    if len(tests) > 1:
        print("warning: the runs' test splits differ; retrain them with the same --seed, --val and --test")
    (args.out / "lineage.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
