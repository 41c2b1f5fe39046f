"""How the CLI prints results: plain formatting of dicts and lists, no torch."""
from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cnnkit.api import TrainResult

TRAIN_METRICS = ("accuracy", "f1_macro", "map", "mask_map", "miou", "pixel_accuracy", "mae", "rmse", "r2", "loss")


def report_train(result: TrainResult) -> int:
    """The val metrics, the verdict, then the run folder as the last line; 130 when interrupted. Under torchrun
    only rank 0 prints."""
    if os.environ.get("RANK", "0") != "0":
        return 130 if result.interrupted else 0
    if result.val:
        shown = [k for k in TRAIN_METRICS if k in result.val]
        print("  ".join(f"val {k} {result.val[k]:.4f}" for k in shown))
    if result.verdict is not None and not result.interrupted:
        from cnnkit.diagnose.verdict import format_verdict

        print(format_verdict(result.verdict.as_dict()))
    if result.interrupted:
        print(f"interrupted: the weights so far are in {result.run_dir}; `cnnkit train --resume {result.run_dir}` "
              "goes on from the last whole epoch", file=sys.stderr)
    print(result.run_dir)
    return 130 if result.interrupted else 0


def report_folds(result) -> int:
    """`train --folds K`: each val metric's mean ± std over the folds (the main ones first), then OUT/folds.json
    and the OUT folder as the last line; 130 when interrupted. Under torchrun only rank 0 prints."""
    if os.environ.get("RANK", "0") != "0":
        return 130 if result.interrupted else 0
    done = len(result.folds)
    print(f"{done}-fold cross-validation, val metrics: mean ± std over the folds (sample std, ddof=1)"
          if done == result.k else f"{done} of {result.k} folds done, val metrics: mean ± std (ddof=1)")
    names = [k for k in TRAIN_METRICS if k in result.metrics] + [k for k in result.metrics if k not in TRAIN_METRICS]
    width = max((len(n) for n in names), default=0)
    for name in names:
        mean, std = ("n/a" if v is None else f"{v:.4f}" for v in (result.metrics[name]["mean"],
                                                                    result.metrics[name]["std"]))
        print(f"  {name:<{width}}  {mean} ± {std}")
    print(f"folds: {result.file}")
    if result.interrupted:
        print(f"interrupted: folds.json holds the {done} finished fold(s)", file=sys.stderr)
    print(result.out)
    return 130 if result.interrupted else 0


def print_metrics(metrics: dict, as_json: bool) -> None:
    """JSON, or the scalars on one line and each per-class/label/target table below it."""
    if as_json:
        print(json.dumps(metrics))
        return
    print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                    if not isinstance(v, dict)))
    for key, table in metrics.items():
        if isinstance(table, dict) and table and not all(isinstance(v, dict) for v in table.values()):
            print(f"{key}  " + "  ".join(f"{n} n/a" if v is None else f"{n} {v:.4f}" if isinstance(v, float)
                                         else f"{n} {v}" for n, v in table.items()))
        elif isinstance(table, dict) and table:
            columns = list(next(iter(table.values())))
            width = max(len(str(name)) for name in table)
            print(f"\n{key.removeprefix('per_'):<{width}}  " + "  ".join(f"{c:>8}" for c in columns))
            for name, row in table.items():
                print(f"{name:<{width}}  " + "  ".join("     n/a" if row[c] is None else f"{row[c]:8.4f}"
                                                       if isinstance(row[c], float) else f"{row[c]:8}"
                                                       for c in columns))


def print_other(result: dict, as_json: bool) -> None:
    """`cnnkit evaluate RUN --data OTHER`: JSON, or the metrics as print_metrics shows them, then the shift line."""
    if as_json:
        print(json.dumps(result))
        return
    shift = result.get("shift")
    print_metrics({k: v for k, v in result.items() if k != "shift"}, as_json=False)
    if shift is None:
        print("shift: no reference (the run has neither a test result nor a val split)")
        return
    against = ("the run's last `cnnkit test`" if shift["reference"] == "test" else
               "its val split (never tested; `cnnkit test RUN` reads the locked test split)")
    print(f"shift: {shift['metric']} {shift['value']:.4f} on {result['data']} vs {shift['reference_value']:.4f} "
          f"on {against}: {shift['delta']:+.4f}")


def prediction_line(r: dict) -> str:
    """One line of `cnnkit predict`: a segmentation, a detected box, regression values, labels or top-k classes."""
    if "fractions" in r:  # segmentation: each class's share of the pixels, and the files written
        shares = "  ".join(f"{c} {f:.3f}" for c, f in r["fractions"].items())
        return f"{r['path']}  {shares}" + (f"  → {r['mask']}" if "mask" in r else "")
    if "bbox" in r:  # detection: one line per box
        return f"{r['path']}  {r['label']} {r['score']:.3f}  x,y,w,h " + ",".join(f"{v:.1f}" for v in r["bbox"])
    if "values" in r:  # regression
        return r["path"] + "  " + "  ".join(f"{k} {v:.4g}" for k, v in r["values"].items())
    if "labels" in r:  # multilabel: the labels at or above the threshold, then every probability
        return (r["path"] + "  [" + ", ".join(r["labels"]) + "]  "
                + "  ".join(f"{p['label']} {p['probability']:.3f}" for p in r["predictions"]))
    return r["path"] + "  " + "  ".join(f"{p['label']} {p['probability']:.3f}" for p in r["predictions"])
