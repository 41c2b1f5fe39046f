"""Acceptance of the box audit (cnnkit.audit.boxes) on real Penn-Fudan with planted annotation errors.

The annotations are corrupted in memory, seeded: 10 % of the boxes deleted, another 10 % shifted sideways by half
their width (to the right, or to the left where the right would leave the image). Every image (all 170: the
audit questions the whole data set, not a split) is then predicted out of fold by `--folds` Faster R-CNNs
(EfficientNet-Lite0 ImageNet backbone + FPN, 384 px, AdamW 3e-4, batch 4, `--augment light`, precision auto: the
recipe of docs/detection.md) trained on the other folds' corrupted boxes, and audit_detection ranks its issues.

Measured: of the top 20 % of issue rows (20 % of the audited true boxes), the share of deleted boxes found (a
"missing" row of IoU ≥ 0.5 with the deleted box) and of shifted boxes found (a "contradicted" row on the shifted
box). Target ≥ 70 % of both.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/audit_detection.py [--folds 3] [--epochs 6] [--out DIR]

Needs $CNNKIT_DATA/pennfudan or ../shared/data/pennfudan (Annotation/, PNGImages/).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def pennfudan_dir() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    base = Path(env) if env else ROOT.parent / "shared" / "data"
    return base / "pennfudan" if (base / "pennfudan").is_dir() else base


def corrupt(source, fraction: float, seed: int):
    """(corrupted DetectionSource, deleted [(image, box)], shifted [(image, new box index)]): `fraction` of the
    boxes deleted and another `fraction` shifted by half their width, chosen at random (seeded)."""
    from cnnkit.data.detection.annotations.source import DetectionSource, make_item

    rng = np.random.default_rng(seed)
    every = [(i, k) for i, item in enumerate(source.items) for k in range(len(item.boxes))]
    n = round(fraction * len(every))
    picked = rng.permutation(len(every))
    deleted_set = {every[j] for j in picked[:n]}
    shifted_set = {every[j] for j in picked[n:2 * n]}
    items, deleted, shifted = [], [], []
    for i, item in enumerate(source.items):
        boxes, labels = [], []
        for k, (box, label) in enumerate(zip(item.boxes, item.labels)):
            if (i, k) in deleted_set:
                deleted.append((i, box.copy()))
                continue
            box = box.copy()
            if (i, k) in shifted_set:
                half = (box[2] - box[0]) / 2
                box[[0, 2]] += half if box[2] + half <= item.width else -min(half, box[0])
                shifted.append((i, len(boxes)))
            boxes.append(box)
            labels.append(label)
        items.append(make_item(item.image_id, item.path, item.width, item.height, np.reshape(boxes, (-1, 4)),
                               labels))
    return DetectionSource(f"{source.name}-corrupted", list(source.classes), items), deleted, shifted


def _iou(a: np.ndarray, b: list) -> float:
    from torchvision.ops import box_iou

    return float(box_iou(torch.tensor(a, dtype=torch.float64)[None], torch.tensor([b], dtype=torch.float64))[0, 0])


def planted(row: dict, deleted: list, shifted: set) -> bool:
    """Whether an issue row finds a planted error: a "missing" row of IoU ≥ 0.5 with a deleted box of its image,
    or a "contradicted" row on a shifted box."""
    if row["kind"] == "missing":
        return any(i == row["index"] and _iou(box, row["box"]) >= 0.5 for i, box in deleted)
    return row["kind"] == "contradicted" and (row["index"], row["box_index"]) in shifted


def found(rows: list[dict], deleted: list, shifted: list) -> tuple[float, float]:
    """The shares of deleted boxes with a "missing" row (IoU ≥ 0.5) and of shifted boxes with a "contradicted"
    row among `rows`."""
    missing = [r for r in rows if r["kind"] == "missing"]
    contradicted = {(r["index"], r["box_index"]) for r in rows if r["kind"] == "contradicted"}
    hit_deleted = [any(r["index"] == i and _iou(box, r["box"]) >= 0.5 for r in missing) for i, box in deleted]
    return float(np.mean(hit_deleted)), float(np.mean([(i, k) in contradicted for i, k in shifted]))


def config(data: Path, args: argparse.Namespace, work: Path):
    from cnnkit.config import load_config

    return load_config(overrides={
        "task": "detect", "out": str(work),
        "data": {"source": str(data), "image_size": args.image_size, "augment": "light"},
        "model": {"name": "faster_rcnn", "options": {"backbone": "efficientnet_lite0.imagenet", "fpn": True}},
        "train": {"epochs": args.epochs, "batch_size": 4, "optimizer": "adamw", "lr": 3e-4, "precision": "auto",
                  "seed": args.seed}})


def report(out: dict, deleted: list, shifted: list, seconds: float) -> dict:
    rows = out["issues"]
    top = rows[: round(0.2 * out["items"])]
    (d_top, s_top), (d_all, s_all) = found(top, deleted, shifted), found(rows, deleted, shifted)
    kinds = {k: sum(r["kind"] == k for r in top) for k in ("contradicted", "wrong_class", "missing", "size")}
    precision = float(np.mean([planted(r, deleted, set(shifted)) for r in top])) if top else 0.0
    result = {"images": out["images"], "boxes_audited": out["items"], "folds": out["folds"], "rows": len(rows),
              "top_rows": len(top), "top_kinds": kinds, "top_precision": precision, "deleted": len(deleted),
              "deleted_found_top": d_top, "deleted_found_any": d_all, "shifted": len(shifted),
              "shifted_found_top": s_top, "shifted_found_any": s_all, "seconds": round(seconds, 1)}
    print(f"Penn-Fudan box audit: {out['images']} images, {out['items']} boxes audited, {out['folds']} folds, "
          f"{len(rows)} issue rows, top 20 % = {len(top)} rows ({kinds}), {seconds:.0f} s")
    print(f"| planted error | count | found in the top {len(top)} rows | found at any rank |")
    print("|---|---:|---:|---:|")
    print(f"| deleted box → missing | {len(deleted)} | {d_top:.1%} | {d_all:.1%} |")
    print(f"| shifted box → contradicted | {len(shifted)} | {s_top:.1%} | {s_all:.1%} |")
    print(f"precision of the top rows (rows on a planted error): {precision:.1%}")
    print(f"target ≥ 70 % of both: {'met' if d_top >= 0.7 and s_top >= 0.7 else 'NOT met'}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (fold runs, issues.json); default: temp")
    parser.add_argument("--rescore", action="store_true", help="reuse OUT/predictions.pt instead of training")
    args = parser.parse_args()

    from cnnkit.audit.boxes import detection_issues, out_of_fold_detections
    from cnnkit.audit.crossfit import fold_parts
    from cnnkit.data.detection.source import open_detection_source
    from cnnkit.recipes import recipe_for

    data = pennfudan_dir()
    work = args.out or Path(tempfile.mkdtemp(prefix="audit-detection-"))
    cfg = config(data, args, work)
    recipe = recipe_for("detect")
    source, deleted, shifted = corrupt(open_detection_source(data), args.fraction, args.seed)
    saved = work / "predictions.pt"  # --rescore: the rows again from the saved out-of-fold predictions
    start = time.perf_counter()
    if args.rescore and saved.is_file():
        order, predictions = torch.load(saved, weights_only=False)
    else:  # what audit_detection does, with the predictions kept
        parts = fold_parts(np.arange(len(source)), None, args.folds, args.seed)
        order, predictions = np.concatenate(parts), out_of_fold_detections(recipe, cfg, source, parts, work)
        torch.save((order, predictions), saved)
    out = detection_issues(source, order, predictions, args.folds)
    result = report(out, deleted, shifted, time.perf_counter() - start)
    (work / "issues.json").write_text(json.dumps({"result": result, "issues": out["issues"]}, indent=1))
    print(f"rows: {work / 'issues.json'}")


if __name__ == "__main__":
    main()
