"""The bias/variance verdict of a run, with remedies ranked for that run.

bias = training error − target error (0 when none is given); variance = validation error − training error.
The error is 1 − the task's main metric: accuracy (binary, multiclass), mAP (multilabel, detection), mask mAP
(instance segmentation), mIoU (segmentation); for regression 1 − R² = MSE / Var(y), the loss on a relative scale.

The training error is measured on the training split in eval mode (no augmentation, no dropout, batch-norm
running statistics), not the running average of the epoch, which mixes weights and is taken on augmented
images. `run_verdict` takes the measured metrics (or a `measure` function) from its caller: this module
never evaluates a model itself.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.errors import CnnkitError
from cnnkit.files import atomic_write

if TYPE_CHECKING:
    from cnnkit.config import Config

DETECTION_TASKS = ("detect", "instance")
LABELS = ("good fit", "high bias", "high variance", "high bias and high variance")
BIAS_THRESHOLD = 0.05  # training error above the target error that counts as underfitting
VARIANCE_THRESHOLD = 0.02  # val − train error that counts as overfitting (before the sampling margin)
Z = 2.0  # the gap must also exceed Z standard errors of the val error: a small val set proves less
NOTE = ("training error measured on the training split in eval mode, without augmentation or dropout; "
        "not the running average of the epoch")
# problem → (metrics key, name of the error)
_MAIN_METRIC = {"binary": ("accuracy", "1 - accuracy"), "multiclass": ("accuracy", "1 - accuracy"),
                "multilabel": ("map", "1 - mAP"), "detect": ("map", "1 - mAP"),
                "instance": ("mask_map", "1 - mask mAP"), "segment": ("miou", "1 - mIoU"),
                "regression": ("r2", "1 - R2 (MSE / Var(y))")}


@dataclass
class Verdict:
    label: str  # one of LABELS
    bias: float  # train_error − target_error
    variance: float  # val_error − train_error
    train_error: float
    val_error: float
    metric: str  # what the error is, e.g. "1 - accuracy"
    target_error: float | None
    remedies: list[str]
    note: str = NOTE
    thresholds: dict = field(default_factory=dict)  # {"bias": b, "variance": v} as applied (v with the margin)

    def as_dict(self) -> dict:
        return asdict(self)


def error_from_metrics(problem: str, metrics: dict) -> tuple[float, str]:
    """(error, its name) from a split's metrics: 1 − accuracy, 1 − mAP (box mAP for detect, mask mAP for
    instance), 1 − mIoU, or 1 − R² clipped at 0."""
    if problem not in _MAIN_METRIC:
        raise CnnkitError(f"no verdict for a {problem!r} run; known: {', '.join(_MAIN_METRIC)}")
    key, name = _MAIN_METRIC[problem]
    value = metrics.get(key)
    if value is None or not math.isfinite(value):
        raise CnnkitError(f"the verdict of a {problem} run needs its {key}, which this split does not define")
    return max(0.0, 1.0 - float(value)), name


def sampling_margin(val_error: float, val_count: int | None) -> float:
    """Z binomial standard errors of an error rate measured on `val_count` images (0 when unknown)."""
    if not val_count or not 0.0 <= val_error <= 1.0:
        return 0.0
    return Z * math.sqrt(val_error * (1.0 - val_error) / val_count)


def decide(train_error: float, val_error: float, target_error: float | None = None,
           bias_threshold: float = BIAS_THRESHOLD, variance_threshold: float = VARIANCE_THRESHOLD) -> str:
    """One of LABELS: high bias when train_error − target_error > bias_threshold; high variance when
    val_error − train_error > variance_threshold; both; or a good fit."""
    high_bias = train_error - (target_error or 0.0) > bias_threshold
    high_variance = val_error - train_error > variance_threshold
    return LABELS[int(high_bias) + 2 * int(high_variance)]


def _falling(history: list[dict], key: str = "train_loss", last: int = 3, by: float = 0.02) -> bool:
    """Did `key` fall by more than `by` (relative) over the last `last` epochs?"""
    values = [row[key] for row in history if row.get(key) is not None][-(last + 1):]
    return len(values) > 1 and values[-1] < values[0] * (1.0 - by)


def _best_epoch(history: list[dict]) -> int | None:
    rows = [row for row in history if row.get("val_loss") is not None]
    return min(rows, key=lambda r: r["val_loss"])["epoch"] if rows else None


def _variance_remedies(cfg: Config, history: list[dict]) -> list[str]:
    d, m, t = cfg.data, cfg.model, cfg.train
    first, later = [], []
    best, epochs = _best_epoch(history), len(history)
    if d.augment == "none" and not d.augment_options:
        first.append(_augment_remedy(cfg))
    else:
        later.append("Augment more strongly: --augment " + ("standard." if cfg.task == "segment" else "strong."))
    if t.patience is None:  # first when the history shows the val loss bottomed out well before the end
        if best is not None and best < epochs - 2:
            first.insert(0, f"Stop early: the val loss was lowest at epoch {best} of {epochs}; --patience 5.")
        else:
            later.insert(0, "Stop early at the best epoch: --patience 5.")
    if cfg.task in DETECTION_TASKS:
        if not _pretrained(cfg):
            first.append(_pretrained_remedy(cfg))
    elif cfg.task == "segment":  # L1/L2, dropout and mixup are classification options
        if "backbone" not in (m.options or {}):
            first.append("Start from a pretrained encoder: --model-option backbone=efficientnet_lite0.imagenet "
                         "(features learnt on many images generalise better than ones learnt from a few).")
    elif not (t.l1 or t.l2 or m.dropout or t.weight_decay or t.mixup or t.cutmix):
        first.append("Regularise with L2 or dropout: --l2 1e-4 or --dropout 0.3.")
    else:
        later.append("Regularise more: a larger --l2 or --dropout, or --mixup 0.2.")
    more = "Get more training data; `cnnkit diagnose RUN --data-curve 10,25,50,100` shows whether it helps."
    if cfg.task in DETECTION_TASKS:
        more = "Get more annotated training images, with the objects in the sizes and settings of the val images."
    return first + [more] + later


def _bias_remedies(cfg: Config, history: list[dict]) -> list[str]:
    m, t = cfg.model, cfg.train
    first, later = [], []
    longer = f"Train longer: --epochs {2 * t.epochs}"
    if _falling(history):
        first.append(longer + " (the training loss was still falling).")
    else:
        later.append(longer + " (the training loss had levelled off, so expect little).")
    if cfg.task in DETECTION_TASKS:  # detectors need many epochs: training longer comes first either way
        return [longer + " (detectors need many epochs; keep going while val mAP rises)."] \
            + _detection_bias_remedies(cfg)
    used = [flag for flag, on in (("--l1", t.l1), ("--l2", t.l2), ("--dropout", m.dropout), ("--mixup", t.mixup),
                                  ("--cutmix", t.cutmix), ("train.label_smoothing", t.label_smoothing),
                                  ("train.weight_decay", t.weight_decay)) if on]
    if used:
        first.append(f"Regularise less: lower or drop {', '.join(used)}.")
    first.append(f"Use a bigger model than {m.name}: more filters or layers (see `cnnkit models`).")
    first.append(_better_architecture(cfg))
    return first + later


def _augment_remedy(cfg: Config) -> str:
    if cfg.task in DETECTION_TASKS:  # the detection presets move the boxes (and masks) with the image
        return ("Augment the training images: --augment standard (flips, IoU crops that keep the objects, "
                "colour); --augment strong adds zoom-out for small objects.")
    return "Augment the training images: --augment standard (--augment light for small images)."


def _pretrained(cfg: Config) -> bool:
    """Does the detector start from pretrained weights (named backbone weights, or the model's own)?"""
    options = cfg.model.options or {}
    return bool(cfg.model.weights or options.get("backbone_weights") or "." in str(options.get("backbone", "")))


def _pretrained_remedy(cfg: Config) -> str:
    backbone = str((cfg.model.options or {}).get("backbone", "resnet18"))
    named = f"{backbone}.imagenet" if backbone.startswith("resnet") else "resnet18.imagenet"
    return (f"Start from a pretrained backbone: --model-option backbone={named} (or "
            "backbone=efficientnet_lite0.imagenet); a detector learns little from scratch on small data.")


def _detection_bias_remedies(cfg: Config) -> list[str]:
    """A detector that underfits: a pretrained backbone, a larger one, then another detector."""
    name, options = cfg.model.name, cfg.model.options or {}
    out = [] if _pretrained(cfg) else [_pretrained_remedy(cfg)]
    backbone = str(options.get("backbone", "resnet18")).split(".")[0]
    if backbone != "resnet50":
        out.append(f"Use a larger backbone than {backbone}: --model-option backbone=resnet50.")
    if name in ("yolo", "ssd"):
        out.append(f"Try a two-stage detector: --model {'mask_rcnn' if cfg.task == 'instance' else 'faster_rcnn'} "
                   "--model-option backbone=resnet50 (slower, usually more accurate on small objects).")
    elif not options.get("fpn", True):
        out.append("Use a feature pyramid: --model-option fpn=true (objects of many sizes).")
    return out


def _better_architecture(cfg: Config) -> str:
    """A stronger architecture of the run's own kind: a residual classifier, or a pretrained encoder."""
    name = cfg.model.name
    if cfg.task == "segment":
        pretrained = "--model-option backbone=efficientnet_lite0.imagenet"
        if name == "unet" and "backbone" not in cfg.model.options:
            return f"Try a pretrained encoder: --model unet {pretrained}."
        return f"Try another architecture, e.g. --model {'fcn8s' if name == 'unet' else 'unet'} {pretrained}."
    better = next(n for n in ("resnet20", "resnet18", "resnet50") if n != name)  # a residual net, or a bigger one
    return f"Try a better architecture for the data, e.g. --model {better} (batch norm, residual blocks)."



def remedies(label: str, cfg: Config | None = None, history: list[dict] | None = None) -> list[str]:
    """The notes' remedies for `label`, ranked for this run: what the run did not use yet comes first.
    Bias first when both: a model that cannot fit the training set has nothing to generalise."""
    if label not in LABELS:
        raise CnnkitError(f"unknown verdict {label!r}; one of: {', '.join(LABELS)}")
    if cfg is None:
        from cnnkit.config import Config

        cfg = Config()
    history = history or []
    if label == "good fit":
        return ["Nothing to fix: when development is over, measure the test split once with `cnnkit test RUN`."]
    out = _bias_remedies(cfg, history) if "bias" in label else []
    return out + (_variance_remedies(cfg, history) if "variance" in label else [])


def make_verdict(problem: str, train_metrics: dict, val_metrics: dict, cfg: Config | None = None,
                 history: list[dict] | None = None, target_error: float | None = None,
                 bias_threshold: float | None = None, variance_threshold: float | None = None,
                 val_count: int | None = None) -> Verdict:
    """The verdict from the metrics of the training split (eval mode) and the val split. Unset arguments come
    from cfg.diagnose; `val_count` widens the variance threshold by the sampling margin of a small val set."""
    diag = cfg.diagnose if cfg is not None else None
    target_error = target_error if target_error is not None else getattr(diag, "target_error", None)
    bias_t = bias_threshold if bias_threshold is not None else getattr(diag, "bias_threshold", BIAS_THRESHOLD)
    var_t = variance_threshold if variance_threshold is not None else \
        getattr(diag, "variance_threshold", VARIANCE_THRESHOLD)
    train_error, metric = error_from_metrics(problem, train_metrics)
    val_error, _ = error_from_metrics(problem, val_metrics)
    if problem != "regression":  # the binomial margin holds for error rates, not for 1 − R²
        var_t = max(var_t, sampling_margin(val_error, val_count))
    label = decide(train_error, val_error, target_error, bias_t, var_t)
    return Verdict(label, train_error - (target_error or 0.0), val_error - train_error, train_error, val_error,
                   metric, target_error, remedies(label, cfg, history), NOTE, {"bias": bias_t, "variance": var_t})


def run_verdict(run: str | Path, target_error: float | None = None, bias_threshold: float | None = None,
                variance_threshold: float | None = None, *, measure: Callable[[str], dict] | None = None,
                train_metrics: dict | None = None, val_metrics: dict | None = None) -> Verdict:
    """The verdict of RUN's saved model: its training split measured in eval mode, without augmentation or
    dropout, against its val split. The caller supplies the metrics: `train_metrics` and `val_metrics` already
    measured, or `measure(split) → metrics dict` (e.g. the recipe's evaluation of RUN on that split) for those
    not given. Without either, a CnnkitError says so; this module never evaluates a model itself."""
    import yaml

    from cnnkit.config import config_from_dict
    from cnnkit.diagnose.curves import read_history
    from cnnkit.runs.folder import read_model_file, run_file

    run = Path(run)
    if (train_metrics is None or val_metrics is None) and measure is None:
        raise CnnkitError("run_verdict needs the train and val metrics, or a measure(split) function to get them")
    cfg = config_from_dict(yaml.safe_load(run_file(run, "config.yaml").read_text()))
    train_metrics = train_metrics if train_metrics is not None else measure("train")
    val_metrics = val_metrics if val_metrics is not None else measure("val")
    problem = read_model_file(run)[0].problem  # model.pt or model.safetensors
    history = read_history(run / "history.csv") if (run / "history.csv").is_file() else []
    return make_verdict(problem, train_metrics, val_metrics, cfg, history, target_error, bias_threshold,
                        variance_threshold, val_metrics.get("count"))


def write_diagnosis(run: Path, **parts) -> Path:
    """Merge `parts` (e.g. alarm={...}, verdict={...}) into RUN/diagnosis.json, which the report reads."""
    path = run / "diagnosis.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(parts)
    atomic_write(path, json.dumps(data, indent=2) + "\n")
    return path


def format_verdict(verdict: dict, top: int = 3) -> str:
    """Console lines: the label with bias and variance, the top remedies, and how the errors were measured."""
    v = verdict
    target = f" above the target {v['target_error']:.4f}" if v.get("target_error") is not None else ""
    lines = [f"verdict: {v['label']}  (bias {v['bias']:.4f}{target}, variance {v['variance']:.4f}; "
             f"error = {v['metric']}: train {v['train_error']:.4f}, val {v['val_error']:.4f})"]
    lines += [f"  {i}. {r}" for i, r in enumerate(v["remedies"][:top], 1)]
    lines.append(f"  ({v['note']})")
    return "\n".join(lines)
