#!/usr/bin/env bash
# Mask R-CNN on Penn-Fudan (instance segmentation): the run the docs' mask AP comes from.
#
# 170 photos, 423 pedestrians with PedMasks instance masks; a seeded 80/10/10 split by image (seed 0); the
# backbone is EfficientNet-Lite0 with its ImageNet weights + FPN, images letterboxed to 384 × 384, 6 epochs
# (the recipe of the Faster R-CNN row of docs/benchmarks.md §9, plus the mask branch). Then the val split's
# box and mask COCO metrics, and the locked test split once. Prints mask AP@0.5 (and the rest) at the end.
#
#     bash benchmarks/pennfudan_mask_rcnn.sh [RUN_DIR]      # default runs/penn-mask; ~15-20 min on 2 CPU cores
#
# Needs ../shared/data/pennfudan (Annotation/, PNGImages/, PedMasks/) or DATA=/path/to/pennfudan.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/pennfudan}
OUT=${1:-runs/penn-mask}
CNNKIT=${CNNKIT:-.venv/bin/cnnkit}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

start=$(date +%s)
$CNNKIT train --task instance --data "$DATA" --image-size 384 --val 0.1 --test 0.1 --seed 0 \
  --model mask_rcnn --model-option backbone=efficientnet_lite0.imagenet --model-option fpn=true \
  --optimizer adamw --lr 3e-4 --batch-size 4 --epochs 6 --augment light --out "$OUT"
echo "train: $(( $(date +%s) - start )) s"
$CNNKIT evaluate "$OUT" --json > "$OUT/val_metrics.json"
$CNNKIT test "$OUT" --json > "$OUT/test_metrics.json"

.venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

run = Path(sys.argv[1])
for split in ("val", "test"):
    m = json.loads((run / f"{split}_metrics.json").read_text())
    print(f"{split:>4} ({m['count']} images): mask AP@0.5 {m['mask_map50']:.3f}  mask AP@[.5:.95] {m['mask_map']:.3f}  "
          f"mask AP@0.75 {m['mask_map75']:.3f}  |  box AP@0.5 {m['map50']:.3f}  box AP@[.5:.95] {m['map']:.3f}")
PY
