"""`cnnkit sweep SPACE.yaml --trials N --out DIR`: a hyperparameter search with Optuna over any training setting.

    result = sweep("space.yaml", trials=12, out="sweeps/lenet")      # SweepResult: rows, best, importance, files

SPACE.yaml has two keys: `base:` the fixed settings and `search:` the tuned ones, each named as in a config file
(`train.lr`, or a section mapping `train: {lr: 0.01}` under base) or as the `cnnkit train` flag (`lr`, `batch-size`,
`data`, `model`); a key below a mapping option reaches into it (`model.options.activation`). A searched setting maps
to a list (categorical) or to `{low, high, log}` (a number; an int when low and high are ints):

    base: {data: digits, model: lenet5, epochs: 2}
    search:
      lr: {low: 1.0e-4, high: 1.0e-1, log: true}
      optimizer: [sgd, adam]

Every trial is an ordinary run folder DIR/trial-0000, ... trained by the one runner as `cnnkit train` trains it; its
val metric is reported to Optuna after every epoch (an EpochReporter callback), so the pruner (Optuna's MedianPruner)
stops a trial whose learning curve is below the median of the earlier trials at the same epoch. The study lives in
DIR/study.db (SQLite): a second call with the same DIR goes on where the first stopped, counting the finished trials
(complete or pruned) toward --trials; a trial left RUNNING by a killed process on this machine (its pid gone) is
marked failed and retried with the same parameters, and one on another machine after Optuna's heartbeat goes stale,
so several processes can share one study. DIR/trials.csv (one row per finished trial) is rewritten after each trial;
at the end DIR/parallel.png (parallel coordinates) and DIR/importance.json (Optuna's fANOVA importance, with at least
two complete trials).
"""
from __future__ import annotations

import copy
import csv
import logging
import math
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.config import FLAGS, Config, load_config, load_yaml, option_keys, option_value, parse_key_values
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.experiments.sweep_report import SweepResult, direction_of, trial_rows, write_outputs, write_trials_csv

log = logging.getLogger("cnnkit")

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
STUDY = "cnnkit-sweep"
HEARTBEAT_S, GRACE_S = 10, 30  # Optuna's heartbeat: a trial of another machine is stale after GRACE_S without one
PRUNE_AFTER_TRIALS = 2  # the median pruner waits for this many finished trials before it prunes
MAX_RETRIES = 2  # a killed trial is retried at most this often
INSTALL = "cnnkit sweep needs Optuna: pip install 'cnnkit[sweep]' (or pip install 'optuna>=4,<6')"
_SPACE_KEYS = ("base", "search")
_RANGE_KEYS = ("low", "high", "log", "step")


@dataclass(frozen=True)
class Param:
    """One searched setting: `name` as SPACE.yaml writes it, its dotted config `key`, and either `choices`
    (categorical) or a numeric range low..high (an int range when both ends are ints)."""

    name: str
    key: str
    choices: tuple | None = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)

    def example(self) -> Any:
        return self.choices[0] if self.choices is not None else self.low


@dataclass
class Space:
    base: dict[str, Any]  # dotted config key → value
    search: list[Param]


# ---------------------------------------------------------------- SPACE.yaml → settings → a Config

def config_key(name: str) -> str:
    """The dotted config key a SPACE.yaml name means: a config key (`train.lr`), a key inside a mapping option
    (`model.options.width`), a `cnnkit train` flag without its dashes (`lr`, `batch-size`), or a unique field name
    (`weight_decay`); anything else is a one-line error that suggests the nearest."""
    text = str(name).strip().lstrip("-")
    keys = option_keys()
    if text in keys:
        return text
    for key in keys:
        if text.startswith(key + ".") and isinstance(option_value(Config(), key), dict):
            return text
    by_flag = {flag.lstrip("-"): key for key, flag in FLAGS.items()}
    for candidate in (text, text.replace("_", "-")):
        if candidate in by_flag:
            return by_flag[candidate]
    leaves = [k for k in keys if k.rsplit(".", 1)[-1] == text.replace("-", "_")]
    if len(leaves) == 1:
        return leaves[0]
    raise unknown_name("setting in SPACE.yaml (a config key or a train flag)", str(name),
                       sorted(by_flag) + sorted(keys))


def _flatten_base(base: dict) -> dict[str, Any]:
    """base: → {dotted key: value}; a section written as a mapping (`train: {lr: 0.1}`) is opened."""
    sections = {k.split(".")[0] for k in option_keys() if "." in k}
    flat: dict[str, Any] = {}
    for name, value in base.items():
        if name in sections and isinstance(value, dict):
            items = {f"{name}.{sub}": v for sub, v in value.items()}
        else:
            items = {config_key(name): value}
        for key, v in items.items():
            key = config_key(key)
            if key in flat:
                raise CnnkitError(f"SPACE.yaml base: {key} is set twice")
            flat[key] = v
    return flat


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range(name: str, key: str, spec: dict) -> Param:
    where = f"SPACE.yaml search.{name}"
    for k in spec:
        if k not in _RANGE_KEYS:
            raise unknown_name(f"key in {where} (a range is {{low, high, log}})", str(k), _RANGE_KEYS)
    if "low" not in spec or "high" not in spec:
        raise CnnkitError(f"{where} needs low and high, e.g. {{low: 1.0e-4, high: 0.1, log: true}}")
    low, high, logscale, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if not (_number(low) and _number(high)) or low >= high:
        raise CnnkitError(f"{where}: low and high must be numbers with low < high, got low={low!r} high={high!r}")
    if not isinstance(logscale, bool):
        raise CnnkitError(f"{where}: log must be true or false, got {logscale!r}")
    if logscale and low <= 0:
        raise CnnkitError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (not _number(step) or step <= 0 or logscale):
        raise CnnkitError(f"{where}: step must be a positive number, and not with log: true, got {step!r}")
    return Param(name, key, low=low, high=high, log=logscale, step=step)


def parse_param(name: str, spec: Any) -> Param:
    """One `search:` entry: a list of choices, or {low, high[, log][, step]}; a bad one is a one-line error."""
    key = config_key(name)
    if isinstance(spec, list):
        if not spec:
            raise CnnkitError(f"SPACE.yaml search.{name}: the list of choices is empty")
        if any(isinstance(v, (dict, list)) for v in spec):
            raise CnnkitError(f"SPACE.yaml search.{name}: choices must be plain values (numbers, words, true/false)")
        return Param(name, key, choices=tuple(spec))
    if isinstance(spec, dict):
        return _range(name, key, spec)
    raise CnnkitError(f"SPACE.yaml search.{name} must be a list (categorical) or {{low, high, log}} (a number), "
                      f"got {spec!r}")


def load_space(path: str | Path) -> Space:
    """SPACE.yaml, checked: only base and search, every name a known setting, every range sound."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"search space not found: {path}")
    data = load_yaml(path)  # safe_load; bad YAML and billion laughs are one-line errors
    if not isinstance(data, dict):
        raise CnnkitError(f"{path} must hold a mapping with base: (fixed settings) and search: (tuned ones)")
    for key in data:
        if key not in _SPACE_KEYS:
            raise unknown_name(f"key of {path.name}", str(key), _SPACE_KEYS)
    base, search = data.get("base") or {}, data.get("search")
    if not isinstance(base, dict) or not isinstance(search, dict) or not search:
        raise CnnkitError(f"{path.name}: base: must be a mapping and search: a non-empty mapping of settings")
    space = Space(_flatten_base(base), [parse_param(str(n), s) for n, s in search.items()])
    for key in ("out",):
        if key in space.base or any(p.key == key for p in space.search):
            raise CnnkitError(f"{path.name}: leave out `out`; each trial's run folder is DIR/trial-NNNN")
    twice = sorted({p.key for p in space.search} & set(space.base))
    if twice:
        raise CnnkitError(f"{path.name}: {twice[0]} is both fixed in base: and searched in search:")
    trial_config(space, {p.name: p.example() for p in space.search})  # a bad value fails before any training
    return space


def _put(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    default = option_value(Config(), key) if key in option_keys() else None
    if isinstance(default, dict) and isinstance(value, str):  # `model-option: activation=gelu`
        value = parse_key_values(value)
    if isinstance(default, dict) and isinstance(tree.get(leaf), dict) and isinstance(value, dict):
        value = {**tree[leaf], **value}
    tree[leaf] = value


def trial_config(space: Space, params: dict[str, Any], out: str | Path | None = None) -> Config:
    """The Config of one trial: the defaults, then base:, then the trial's parameters."""
    overrides: dict = {}
    settings = {**space.base, **{p.key: params[p.name] for p in space.search}}
    for key in sorted(settings, key=lambda k: k.count(".")):  # a whole mapping option before its entries
        _put(overrides, key, copy.deepcopy(settings[key]))
    cfg = load_config(None, overrides)
    cfg.out = None if out is None else str(out)
    return cfg


# ---------------------------------------------------------------- the study

def _optuna():
    try:
        import optuna
    except ImportError:
        raise CnnkitError(INSTALL) from None
    return optuna


def _sampler(optuna, kind: str, space: Space, seed: int | None):
    if kind not in SAMPLERS:
        raise unknown_name("--sampler", kind, SAMPLERS)
    if kind == "grid":
        ranges = [p.name for p in space.search if p.choices is None]
        if ranges:
            raise CnnkitError(f"--sampler grid takes lists only; search.{ranges[0]} is a range (write its values as "
                              "a list, or use --sampler tpe or random)")
        return optuna.samplers.GridSampler({p.name: list(p.choices) for p in space.search}, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(optuna, kind: str):
    if kind not in PRUNERS:
        raise unknown_name("--pruner", kind, PRUNERS)
    if kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS, n_warmup_steps=1)


def _retry(optuna) -> type:
    """Optuna's callback that retries a trial whose heartbeat went stale (renamed in Optuna 4.9)."""
    storages = optuna.storages
    return getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback


def open_study(optuna, out: Path, metric: str, space: Space, sampler: Any, pruner: Any):
    """DIR/study.db's study, new or loaded; a loaded one must have the same metric and searched settings."""
    out.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{(out / 'study.db').resolve()}", engine_kwargs={"connect_args": {"timeout": 60}},
        heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
        heartbeat_stale_trial_callback=_retry(optuna)(max_retry=MAX_RETRIES))
    study = optuna.create_study(study_name=STUDY, storage=storage, load_if_exists=True, sampler=sampler,
                                pruner=pruner, direction=direction_of(metric))
    names = sorted(p.name for p in space.search)
    known = study.user_attrs.get("metric"), study.user_attrs.get("params")
    if known == (None, None):
        study.set_user_attr("metric", metric)
        study.set_user_attr("params", names)
    elif known != (metric, names):
        raise CnnkitError(f"{out} holds a sweep of {known[0]} over {', '.join(known[1] or [])}; this one is of "
                          f"{metric} over {', '.join(names)}: use another --out")
    return study


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # unknown: leave it to the heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(optuna, study) -> list[int]:
    """Mark failed the RUNNING trials whose process on this machine is gone (a kill -9) and enqueue each again with
    the same parameters (at most MAX_RETRIES times); the numbers of the trials failed."""
    failed = []
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("host") != host or _alive(t.user_attrs.get("pid")):
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        failed.append(t.number)
        retries = int(t.user_attrs.get("retries", 0))
        if retries < MAX_RETRIES:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "retries": retries + 1})
        log.info("trial %d was left running by a process that is gone: marked failed%s", t.number,
                 ", retried" if retries < MAX_RETRIES else "")
    return failed


def objective_value(result: Any, metric: str, direction: str) -> float:
    """The trial's value: the metric of the saved (best) model on val, else the best epoch's in the history."""
    name = metric[4:] if metric.startswith("val_") else metric
    value = result.val.get(name) if metric.startswith("val_") else None
    if _number(value):
        return float(value)
    values = [float(row[metric]) for row in result.history if _number(row.get(metric))]
    if not values:
        raise CnnkitError(f"--metric {metric} was not measured by this run; logged: "
                          f"{', '.join(k for k in (result.history or [{}])[-1] if k != 'epoch')}")
    return min(values) if direction == "minimize" else max(values)


def make_objective(optuna, space: Space, out: Path, metric: str) -> Callable:
    """Optuna's objective: one ordinary run folder per trial, trained by the runner with an EpochReporter."""
    from cnnkit.engine.callbacks import EpochReporter
    from cnnkit.recipes import recipe_for, runner

    def objective(trial) -> float:
        params = {p.name: _suggest(trial, p) for p in space.search}
        folder = out / f"trial-{trial.number:04d}"
        for key, value in (("run", str(folder)), ("host", socket.gethostname()), ("pid", os.getpid())):
            trial.set_user_attr(key, value)
        cfg = trial_config(space, params, out=folder)

        def report(epoch: int, value: float) -> bool:
            trial.report(value, epoch)
            return trial.should_prune()

        reporter = EpochReporter(report, metric)
        result = runner.train(recipe_for(cfg.task), cfg, callbacks=[reporter])
        if result.interrupted:
            raise KeyboardInterrupt
        trial.set_user_attr("epochs", len(result.history))
        if reporter.stopped_epoch is not None and reporter.stopped_epoch < cfg.train.epochs:
            raise optuna.TrialPruned(f"pruned after epoch {reporter.stopped_epoch}")
        return objective_value(result, metric, direction_of(metric))

    return objective


def _suggest(trial, p: Param) -> Any:
    if p.choices is not None:
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.is_int:
        return trial.suggest_int(p.name, p.low, p.high, log=p.log, step=int(p.step or 1))
    return trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)


def _finished(optuna) -> tuple:
    return optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


def sweep(space: str | Path, *, trials: int, out: str | Path, sampler: str = "tpe", pruner: str = "median",
          metric: str = "val_loss", seed: int | None = None) -> SweepResult:
    """Run (or go on with) the sweep of SPACE.yaml in `out` until `trials` trials have finished; see the module
    docstring. Returns the SweepResult, its files written."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise CnnkitError(f"--trials must be a positive integer, got {trials!r}")
    parsed = load_space(space)
    optuna = _optuna()
    out = Path(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our one-line error, no traceback
        study = open_study(optuna, out, metric, parsed, _sampler(optuna, sampler, parsed, seed),
                           _pruner(optuna, pruner))
        fail_dead_trials(optuna, study)
        target = min(trials, math.prod(len(p.choices) for p in parsed.search)) if sampler == "grid" else trials
        done = len(study.get_trials(deepcopy=False, states=_finished(optuna)))
        if done < target:
            log.info("sweep %s: %d of %d trials finished; running the rest", out, done, target)
            stop = optuna.study.MaxTrialsCallback(target, states=_finished(optuna))
            study.optimize(make_objective(optuna, parsed, out, metric), n_trials=target - done,
                           callbacks=[stop, lambda s, t: _after_trial(s, t, parsed, out, metric)])
    return write_outputs(study, parsed, out, metric)


def _after_trial(study, trial, space: Space, out: Path, metric: str) -> None:
    write_trials_csv(trial_rows(study, space), out / "trials.csv", metric, [p.name for p in space.search])
    value = "pruned" if trial.value is None else f"{metric} {trial.value:.4g}"
    log.info("trial %d %s: %s (%s)", trial.number, trial.state.name.lower(), value,
             ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()))


def read_trials(path: Path) -> list[dict]:
    """DIR/trials.csv as dicts of strings (tests and users who only want the table)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
