"""`cnnkit transfer compare`: several transfer strategies on the same split with the same budget.

    result = compare_strategies(cfg, ["feature-extractor", "fine-tune", "linear-probe", "scratch"], "runs/cmp")
    result.rows  # one dict per strategy: val_accuracy, train_seconds, trainable_params, ...

Each strategy is an ordinary `cnnkit.api.train` run in OUT/<strategy>, from a copy of `cfg` that differs only in
train.strategy (and the strategy's own knobs: keep_stages for partial, unfreeze_every for fine-tune): the same
seed and val/test fractions give the same split (each run's split.json is identical), the same epochs, batch
size and lr give the same budget. "scratch" is the baseline: the same architecture from random weights, no
strategy. The table lands in OUT/compare.json, OUT/compare.csv and OUT/compare.png (three bar panels).
A strategy that fails with a CnnkitError becomes a row with its error; Ctrl-C keeps the finished rows.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from cnnkit.config import Config, TrainConfig, load_config
from cnnkit.errors import CnnkitError, unknown_name

log = logging.getLogger("cnnkit")

SCRATCH = "scratch"
DEFAULT_STRATEGIES = ("feature-extractor", "head-only", "fine-tune", "partial", "linear-probe", SCRATCH)
COLUMNS = ("strategy", "chosen", "val_accuracy", "val_loss", "train_seconds", "trainable_params", "total_params",
           "epochs", "run", "note", "error")
# train fields that belong to one strategy: validate() refuses them with another, so each run gets them alone
_OWN_FIELDS = {"keep_stages": "partial", "unfreeze_every": "fine-tune"}
_NOTES = {
    "linear-probe": "no epochs: a scikit-learn probe fitted once on the pooled features",
    "partial": "first {k} of {n} stages + a new head",
    SCRATCH: "random initialisation, no strategy: the baseline",
}


@dataclass
class CompareResult:
    """The comparison's folder, its rows (COLUMNS) and whether Ctrl-C cut it short."""

    out: Path
    rows: list[dict] = field(default_factory=list)
    interrupted: bool = False

    @property
    def files(self) -> dict[str, Path]:
        return {ext: self.out / f"compare.{ext}" for ext in ("json", "csv", "png")}


def strategy_choices() -> tuple[str, ...]:
    from cnnkit.engine.transfer import STRATEGIES

    return (*STRATEGIES, SCRATCH)


def parse_strategies(text: str | list[str] | None) -> list[str]:
    """'fine-tune,scratch' (or a list) → checked names in order, duplicates dropped; None → DEFAULT_STRATEGIES."""
    if text is None:
        return list(DEFAULT_STRATEGIES)
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not names:
        raise CnnkitError("--strategies needs at least one name, e.g. --strategies fine-tune,scratch")
    choices = strategy_choices()
    for name in names:
        if name not in choices:
            raise unknown_name("transfer strategy", name, choices)
    return list(dict.fromkeys(names))


def load_compare_config(path: str | Path | None, overrides: dict) -> Config:
    """load_config for a comparison: --keep-stages and --unfreeze-every are kept for the strategy they belong to
    (validate() alone would refuse them without --strategy); --strategy itself has no meaning here."""
    train = dict(overrides.get("train", {}))
    if train.pop("strategy", None) is not None:
        raise CnnkitError("`cnnkit transfer compare` runs several strategies: give them as --strategies A,B,... "
                          "instead of --strategy")
    own = {k: train.pop(k) for k in _OWN_FIELDS if k in train}
    cfg = load_config(path, {**overrides, "train": train})
    cfg.train = replace(cfg.train, **own)
    return cfg


def _architecture(cfg: Config) -> tuple[str, dict]:
    """The bare architecture name of cfg.model.name (named weights → their architecture) and its options."""
    from cnnkit.models.pretrained import lookup

    weights = lookup(cfg.model.name)
    if weights is None:
        return cfg.model.name, dict(cfg.model.options)
    return weights.architecture, {**weights.options, **cfg.model.options}


def _stage_count(cfg: Config) -> int:
    from cnnkit.models.factory import create_model, get_spec
    from cnnkit.models.stages import stages

    name, options = _architecture(cfg)
    return len(stages(create_model(name, num_classes=2, **options), get_spec(name)))


def strategy_config(cfg: Config, strategy: str, out: Path) -> Config:
    """A copy of `cfg` for one strategy, its run folder `out`: only the strategy's own fields differ."""
    run = copy.deepcopy(cfg)
    run.out = str(out)
    t = run.train
    own = {k: getattr(t, k) if _OWN_FIELDS[k] == strategy else getattr(TrainConfig(), k) for k in _OWN_FIELDS}
    head_init = t.head_init if strategy in ("fine-tune", "feature-extractor", "head-only", "partial") else "random"
    if strategy == "partial" and own["keep_stages"] is None:  # as choose_strategy: half the stages
        own["keep_stages"] = max(1, _stage_count(cfg) // 2)
    if strategy == SCRATCH:
        name, options = _architecture(cfg)
        run.model = replace(run.model, name=name, options=options, weights=None)
    run.train = replace(t, strategy=None if strategy == SCRATCH else strategy, head_init=head_init, **own)
    run.validate()
    return run


def _saved_train(run_dir: Path) -> dict:
    """The train section of RUN/config.yaml: "auto" records its choice there."""
    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("train", {}) if path.is_file() else {}


def _total_params(run_dir: Path) -> int | None:
    from cnnkit.runs.folder import find_model_file, load_model

    if find_model_file(run_dir) is None:
        return None
    model, _ = load_model(run_dir)
    return sum(p.numel() for p in model.parameters())


def _note(strategy: str, chosen: str | None, keep_stages: int | None, stage_count) -> str:
    used = chosen or strategy
    text = _NOTES.get(used, "")
    if used == "partial":
        text = text.format(k=keep_stages, n=stage_count())
    return f"auto chose {used}" + (f"; {text}" if text else "") if strategy == "auto" else text


def _row(strategy: str, result, seconds: float, cfg: Config) -> dict:
    saved = _saved_train(result.run_dir)
    chosen = saved.get("strategy") if strategy == "auto" else None
    used = chosen or strategy
    trainable = getattr(result, "trainable", None)
    return {
        "strategy": strategy, "chosen": chosen,
        "val_accuracy": result.val.get("accuracy"), "val_loss": result.val.get("loss"),
        "train_seconds": round(seconds, 3), "trainable_params": trainable,
        "total_params": _total_params(result.run_dir),
        "epochs": 0 if used == "linear-probe" else len(result.history), "run": str(result.run_dir),
        "note": ("interrupted; " if result.interrupted else "")
                + _note(strategy, chosen, saved.get("keep_stages"), lambda: _stage_count(cfg)),
        "error": None,
    }


def _error_row(strategy: str, run_dir: Path, seconds: float, err: Exception) -> dict:
    row = dict.fromkeys(COLUMNS)
    return {**row, "strategy": strategy, "train_seconds": round(seconds, 3), "run": str(run_dir), "error": str(err)}


def compare_strategies(cfg: Config, strategies: list[str] | str | None = None,
                       out: str | Path | None = None) -> CompareResult:
    """Train `cfg` once per strategy into OUT/<strategy> (see the module docstring); write and return the table."""
    from cnnkit.recipes import recipe_for
    from cnnkit.recipes.runner import train
    from cnnkit.runs.folder import new_run_dir

    names = parse_strategies(strategies)
    out = Path(out or cfg.out or new_run_dir(f"compare-{cfg.model.name}"))
    if cfg.model.weights is None and "." not in cfg.model.name and set(names) - {SCRATCH}:
        log.warning("no pretrained weights (model.weights, or a name such as efficientnet_lite0.imagenet): every "
                    "strategy starts from random weights, as scratch does")
    result = CompareResult(out)
    for strategy in names:
        run_dir = out / strategy
        log.info("compare: %s → %s", strategy, run_dir)
        start = time.perf_counter()
        try:
            run_cfg = strategy_config(cfg, strategy, run_dir)
            trained = train(recipe_for(run_cfg.task), run_cfg)
        except CnnkitError as err:
            log.warning("compare: %s failed: %s", strategy, err)
            result.rows.append(_error_row(strategy, run_dir, time.perf_counter() - start, err))
            continue
        except KeyboardInterrupt:
            result.interrupted = True
            break
        result.rows.append(_row(strategy, trained, time.perf_counter() - start, cfg))
        if trained.interrupted:
            result.interrupted = True
            break
    if result.rows and all(r["error"] for r in result.rows) and not result.interrupted:
        raise CnnkitError("every strategy failed: " + "; ".join(f"{r['strategy']}: {r['error']}" for r in result.rows))
    if result.rows:
        write_table(result)
    return result


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_table(result: CompareResult) -> None:
    """OUT/compare.json, OUT/compare.csv and OUT/compare.png, each written atomically."""
    result.out.mkdir(parents=True, exist_ok=True)
    files = result.files
    payload = {"rows": result.rows, "interrupted": result.interrupted}
    _atomic_write(files["json"], (json.dumps(payload, indent=2) + "\n").encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if r.get(k) is None else r[k] for k in COLUMNS} for r in result.rows)
    _atomic_write(files["csv"], text.getvalue().encode())
    plot_table(result.rows, files["png"])


def plot_table(rows: list[dict], path: Path) -> Path:
    """Three horizontal bar panels, one bar per strategy: val accuracy, training time (s), trainable
    parameters (log axis). A failed strategy has no bar; its label says 'failed'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [(f"{r['strategy']} ({r['chosen']})" if r["chosen"] else r["strategy"])
              + (" failed" if r["error"] else "") for r in rows]
    panels = (("val_accuracy", "val accuracy"), ("train_seconds", "training time (s)"),
              ("trainable_params", "trainable parameters"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.5 * len(rows) + 1.5), sharey=True)
    for ax, (key, title) in zip(axes, panels):
        values = [0 if r["error"] or r[key] is None else r[key] for r in rows]
        bars = ax.barh(range(len(rows)), values, color="tab:blue")
        shown = {"val_accuracy": "{:.3f}", "train_seconds": "{:.0f} s", "trainable_params": "{:,.0f}"}[key]
        ax.bar_label(bars, [shown.format(v) if v else "" for v in values], padding=2, fontsize=8)
        ax.margins(x=0.25)  # room for the labels
        ax.set_title(title, fontsize=10)
        if key == "trainable_params" and any(v > 0 for v in values):
            ax.set_xscale("log")
        if key == "val_accuracy":
            ax.set_xlim(0, 1.12)  # 1 and the labels
    axes[0].set_yticks(range(len(rows)), labels)
    axes[0].invert_yaxis()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def format_table(rows: list[dict]) -> str:
    """The rows as aligned text, the way `cnnkit prune` prints its table, notes and errors last."""
    head = f"{'strategy':<22}  {'val acc':>7}  {'val loss':>8}  {'time s':>7}  {'trainable':>10}  {'total':>10}  " \
           f"{'epochs':>6}  note"
    lines = [head]
    for r in rows:
        name = f"{r['strategy']} → {r['chosen']}" if r["chosen"] else r["strategy"]
        if r["error"]:
            lines.append(f"{name:<22}  failed: {r['error']}")
            continue
        num = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
        lines.append(f"{name:<22}  {num(r['val_accuracy'], '.4f'):>7}  {num(r['val_loss'], '.4f'):>8}  "
                     f"{r['train_seconds']:7.1f}  {num(r['trainable_params'], ','):>10}  "
                     f"{num(r['total_params'], ','):>10}  {r['epochs']:>6}  {r['note']}")
    return "\n".join(lines)
