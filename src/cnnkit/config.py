"""Nested dataclass configuration: defaults < --config file.yaml < --flags; saved resolved as config.yaml."""
from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from cnnkit.errors import CnnkitError, brief, unknown_name
from cnnkit.files import atomic_write

# the transfer strategies of cnnkit.engine.transfer
STRATEGIES = ("feature-extractor", "head-only", "fine-tune", "partial", "linear-probe", "auto")
PROBES = ("logistic", "svm")  # the linear probe's scikit-learn model
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # --precision (cnnkit.engine.precision resolves them)


@dataclass
class DataConfig:
    source: str = "digits"  # folder, CSV, or built-in name (digits, mnist:PATH, synthetic-shapes)
    image_size: int | None = None  # None: the architecture's input size
    channels: int | None = None  # None: the architecture's input channels
    resize: str = "resize"  # resize | pad | crop: how images reach image_size
    val: float = 0.15
    test: float = 0.15
    augment: str = "none"  # none | light | standard | strong
    augment_options: dict = field(default_factory=dict)  # knob overrides, e.g. {hflip: 0.0}
    whiten: bool = False  # per-image standardisation instead of the dataset mean/std (normalize: whiten)
    normalize: str = "standard"  # standard: (x − mean)/std of the training split | mean: x − mean | whiten
    max_bad_fraction: float = 0.1  # above this share of unreadable images, fail instead of skipping
    workers: int | None = None  # DataLoader processes that decode; None: from the core count (data.cache.auto_workers)
    images: str | None = None  # detection: the images of a COCO JSON file, when not beside it


@dataclass
class ModelConfig:
    name: str = "lenet5"
    options: dict = field(default_factory=dict)  # architecture options, e.g. {variant: classic}
    weights: str | None = None  # a state-dict file to start from
    dropout: float | dict | None = None  # rate of every dropout layer, or {module glob: rate}, e.g. {classifier.*: 0.5}
    batch_norm: str = "on"  # on | off (BN layers removed) | frozen (running statistics fixed, γ and β not trained)
    insert_dropout: dict | None = None  # {module glob: rate}: dropout added after the matching modules (in the card)
    init: str | None = None  # weight init of a fresh model: he | glorot | normal:std=0.01,bias=0.1 | ...


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"  # cnnkit.engine.optimizers: sgd, adagrad, adadelta, rmsprop, adam(w), adamax, nadam, ftrl
    optimizer_options: dict = field(default_factory=dict)  # e.g. {momentum: 0.9, nesterov: true} for sgd
    lr: float | None = None  # None: the optimiser's default (Keras' defaults)
    weight_decay: float | None = None
    schedule: str = "cosine"  # cnnkit.engine.schedules: cosine, step_decay, linear_decay, decay, one_cycle, ...
    schedule_options: dict = field(default_factory=dict)  # e.g. {gamma: 0.5, step_size: 3} for step_decay
    schedule_interval: str | None = None  # epoch | batch: what the schedule counts; None: the schedule's default
    accumulate: int = 1  # gradient accumulation: one optimiser step every N batches (their mean gradient)
    warmup_epochs: float = 0.0
    loss: str | None = None  # None: the problem type's loss (binary/multilabel: binary_crossentropy, ...)
    label_smoothing: float = 0.0
    l1: float = 0.0  # λ of the L1 penalty λ·Σ|w| added to the loss (weights only; see penalty_layers)
    l2: float = 0.0  # λ of the L2 penalty λ·Σw² (not the optimiser's decoupled weight_decay)
    penalty_layers: str = "*"  # glob of parameter names the penalties cover, e.g. "classifier.*"
    mixup: float = 0.0  # α of mixup's Beta(α, α) (Zhang et al. 2018); 0 = off
    cutmix: float = 0.0  # α of CutMix (Yun et al. 2019); 0 = off; with both set, each batch picks one
    adversarial: str | None = None  # fgsm | pgd: train on ½ clean + ½ adversarial loss (Goodfellow et al. 2015)
    adv_eps: float = 0.1  # the attack's L∞ budget in pixel units ([0, 1] images)
    adv_steps: int = 7  # PGD steps (step size 2.5·eps/steps, Madry et al. 2018)
    class_weight: str | None = None  # None, 'balanced', or a CSV/JSON file of class → weight
    patience: int | None = None  # early stopping when set: stop after `patience` epochs without improvement
    monitor: str = "val_loss"  # what early stopping watches: val_loss, val_accuracy, val_mae, ...
    min_delta: float = 0.0  # a smaller change is no improvement
    restore_best: bool = True  # on stopping, go back to the best epoch's weights
    grad_clip: float | None = None
    amp: bool = False  # the older alias of precision: mixed (bf16 on a CPU) even without bf16 hardware
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (cnnkit.engine.precision); config.yaml keeps the resolved one
    device: str = "auto"
    seed: int = 0
    on_nan: str = "stop"  # stop | skip: a NaN/inf loss ends the run (last good checkpoint kept), or drops the batch
    #                       and halves the learning rate (stopping after 5 skips in a row)
    log: list = field(default_factory=list)  # extra loggers beside history.csv: tensorboard, mlflow
    strategy: str | None = None  # cnnkit.engine.transfer: feature-extractor | head-only | fine-tune | partial |
    #                              linear-probe | auto
    keep_stages: int | None = None  # partial: how many stages to keep
    unfreeze_every: int = 0  # fine-tune: unfreeze one more stage every N epochs, from the head back (0: off)
    probe: str = "logistic"  # linear-probe: logistic | svm
    head_init: str = "auto"  # the new head before training: random, probe (a linear probe's fit: LP-FT), or
    #                          auto: probe for fine-tune from pretrained weights on classes, random otherwise
    save_format: str = "pt"  # pt | safetensors: RUN/model.pt or RUN/model.safetensors (checkpoints stay .pt)


@dataclass
class DiagnoseConfig:
    """The bias/variance verdict and the overfitting alarm (see docs/diagnosis.md)."""

    target_error: float | None = None  # target or human-level error; bias = train error − this (default 0)
    bias_threshold: float = 0.05  # train error above the target error that counts as high bias
    variance_threshold: float = 0.02  # val − train error that counts as high variance (at least 2 SE of val error)
    alarm_patience: int = 3  # the alarm fires after this many epochs of rising val loss while the train loss falls
    alarm_stop: bool = False  # and then stops training
    alarm_on: str = "both"  # rise | plateau (no new low beyond train.min_delta) | both: what the alarm counts


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    task: str = "auto"  # binary | multiclass | multilabel | regression; auto: inferred from the data
    out: str | None = None  # run folder; default runs/<model>-<data>[-N]

    def validate(self, supported: frozenset[str] | None = None, reasons: Mapping[str, str] | None = None) -> None:
        """Refuse bad values in one line; with `supported` (the dotted option keys that the task's recipe reads),
        also refuse every option that is set (differs from its default) but not supported."""
        if supported is not None:
            refuse_unsupported(self, supported, reasons or {})
        t = self.train
        if t.epochs < 1:
            raise CnnkitError(f"--epochs must be at least 1, got {t.epochs}")
        if t.batch_size < 1:
            raise CnnkitError(f"--batch-size must be a positive integer, got {t.batch_size}")
        if t.lr is not None and t.lr <= 0:
            raise CnnkitError(f"--lr must be positive, got {t.lr}")
        if self.data.image_size is not None and self.data.image_size < 8:
            raise CnnkitError(f"--image-size must be at least 8, got {self.data.image_size}")
        self._validate_knobs()
        if self.data.channels not in (None, 1, 3):
            raise CnnkitError(f"--channels must be 1 or 3, got {self.data.channels}")
        if self.model.batch_norm not in ("on", "off", "frozen"):
            raise unknown_name("--batch-norm mode", self.model.batch_norm, ("on", "off", "frozen"))
        if self.model.dropout is not None:
            check_dropout_spec(self.model.dropout)
        d = self.diagnose
        if d.alarm_patience < 1:
            raise CnnkitError(f"diagnose.alarm_patience must be at least 1, got {d.alarm_patience}")
        if t.on_nan not in ("stop", "skip"):
            raise unknown_name("--on-nan", t.on_nan, ("stop", "skip"))
        if d.alarm_on not in ("rise", "plateau", "both"):
            raise unknown_name("--alarm-on", d.alarm_on, ("rise", "plateau", "both"))
        if min(d.bias_threshold, d.variance_threshold, 0.0 if d.target_error is None else d.target_error) < 0:
            raise CnnkitError("diagnose.target_error, bias_threshold and variance_threshold must be 0 or more")
        if t.strategy is not None:
            if t.strategy not in STRATEGIES:
                raise unknown_name("transfer strategy", t.strategy, STRATEGIES)
            if t.probe not in PROBES:
                raise unknown_name("probe", t.probe, PROBES)
        if t.head_init not in ("auto", "random", "probe"):
            raise unknown_name("--head-init", t.head_init, ("auto", "random", "probe"))
        if t.precision not in PRECISIONS:
            raise unknown_name("--precision", t.precision, PRECISIONS)
        for name in self.train.log:
            if name not in ("tensorboard", "mlflow"):
                raise unknown_name("logger", name, ("tensorboard", "mlflow"))

    def _validate_knobs(self) -> None:
        """The flags of the optimisation knobs: --accumulate, --schedule-interval, --normalize, --grad-clip, ...;
        and --save-format."""
        t, d = self.train, self.data
        if t.save_format not in SAVE_FORMATS:
            raise unknown_name("--save-format", t.save_format, SAVE_FORMATS)
        if isinstance(t.accumulate, bool) or not isinstance(t.accumulate, int) or t.accumulate < 1:
            raise CnnkitError(f"--accumulate must be a whole number of batches (1 or more), got {t.accumulate!r}")
        if t.schedule_interval not in (None, "epoch", "batch"):
            raise unknown_name("--schedule-interval", t.schedule_interval, ("epoch", "batch"))
        if d.normalize not in NORMALIZATIONS:
            raise unknown_name("--normalize", d.normalize, NORMALIZATIONS)
        if d.whiten and d.normalize == "mean":
            raise CnnkitError("--whiten and --normalize mean contradict each other; choose one")
        if t.grad_clip is not None and t.grad_clip <= 0:
            raise CnnkitError(f"--grad-clip must be a positive gradient norm, got {t.grad_clip}")
        if not 0 <= t.label_smoothing < 1:
            raise CnnkitError(f"--label-smoothing must be in [0, 1), got {t.label_smoothing}")
        if t.warmup_epochs < 0:
            raise CnnkitError(f"--warmup-epochs must be 0 or more, got {t.warmup_epochs}")
        if t.weight_decay is not None and t.weight_decay < 0:
            raise CnnkitError(f"--weight-decay must be 0 or more, got {t.weight_decay}")
        if self.model.insert_dropout is not None:
            if not isinstance(self.model.insert_dropout, Mapping):
                raise CnnkitError("--insert-dropout takes GLOB=RATE pairs such as 'features.*.conv=0.1', got "
                                  f"{self.model.insert_dropout!r}")
            check_dropout_spec(self.model.insert_dropout)


NORMALIZATIONS = ("standard", "mean", "whiten")  # --normalize
SAVE_FORMATS = ("pt", "safetensors")  # --save-format: RUN/model.pt or RUN/model.safetensors (cnnkit.runs.folder)

# the options with a `cnnkit train` flag (the others are config-file keys); errors name an option by its flag
FLAGS = {
    "task": "--task", "out": "--out", "data.source": "--data", "data.augment": "--augment",
    "data.image_size": "--image-size", "data.channels": "--channels", "data.resize": "--resize", "data.val": "--val",
    "data.test": "--test", "data.workers": "--workers", "data.images": "--images", "model.name": "--model",
    "model.options": "--model-option", "model.dropout": "--dropout", "model.batch_norm": "--batch-norm",
    "model.weights": "--weights", "train.epochs": "--epochs", "train.batch_size": "--batch-size", "train.lr": "--lr",
    "train.optimizer": "--optimizer", "train.schedule": "--schedule", "train.loss": "--loss",
    "train.patience": "--patience", "train.monitor": "--monitor", "train.min_delta": "--min-delta",
    "train.device": "--device", "train.amp": "--amp", "train.seed": "--seed", "train.l1": "--l1", "train.l2": "--l2",
    "train.precision": "--precision",
    "train.mixup": "--mixup", "train.cutmix": "--cutmix", "train.adversarial": "--adversarial",
    "train.adv_eps": "--adv-eps", "train.log": "--log", "train.strategy": "--strategy",
    "train.keep_stages": "--keep-stages", "train.unfreeze_every": "--unfreeze-every", "train.probe": "--probe",
    "train.head_init": "--head-init", "diagnose.alarm_stop": "--alarm-stop",
    "diagnose.alarm_on": "--alarm-on", "diagnose.target_error": "--target-error",
    "train.schedule_interval": "--schedule-interval", "train.schedule_options": "--schedule-option",
    "train.optimizer_options": "--optimizer-option", "train.weight_decay": "--weight-decay",
    "train.label_smoothing": "--label-smoothing", "train.grad_clip": "--grad-clip",
    "train.warmup_epochs": "--warmup-epochs", "data.whiten": "--whiten", "data.normalize": "--normalize",
    "train.class_weight": "--class-weight", "train.accumulate": "--accumulate", "model.init": "--init",
    "model.insert_dropout": "--insert-dropout", "train.save_format": "--save-format",
}


def option_keys(cfg: object | None = None, prefix: str = "") -> frozenset[str]:
    """Every option of the configuration as a dotted key: "task", "data.source", "train.lr", ..."""
    cfg = Config() if cfg is None else cfg
    keys: set[str] = set()
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        keys |= option_keys(value, f"{prefix}{f.name}.") if is_dataclass(value) else {prefix + f.name}
    return frozenset(keys)


def option_value(cfg: Config, key: str) -> object:
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def flag_of(key: str) -> str:
    """How errors name an option: its command-line flag ("train.head_init" → "--head-init"), or for an option
    of the config file only, its key ("train.weight_decay")."""
    return FLAGS.get(key, key)


def refuse_unsupported(cfg: Config, supported: frozenset[str], reasons: Mapping[str, str]) -> None:
    """A one-line CnnkitError for the first option that is set but that the task does not read."""
    default = Config()
    for key in sorted(option_keys() - supported):
        if option_value(cfg, key) != option_value(default, key):
            why = f": {reasons[key]}" if key in reasons else ""
            flags = ", ".join(sorted(flag_of(k) for k in supported if k not in ("task", "out")))
            where = f"config key {key}; " if key in FLAGS else ""
            raise CnnkitError(f"{flag_of(key)} is not supported for --task {cfg.task}{why} ({where}supported: "
                              f"{flags})")


def _merge(obj, updates: dict, where: str) -> None:
    names = {f.name: f for f in fields(obj)}
    for key, value in updates.items():
        if key not in names:
            raise unknown_name(f"config key in {where}", key, names)
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise CnnkitError(f"config key {where}.{key} must be a mapping, got {brief(value)}")
            _merge(current, value, f"{where}.{key}")
        elif where.startswith("flags") and isinstance(current, dict) and isinstance(value, dict):
            setattr(obj, key, {**current, **value})  # --optimizer-option k=v adds to the file's options
        else:  # a file's value must have the option's type; the flags are typed by the command line already
            setattr(obj, key, value if where.startswith("flags") else _typed(names[key].type, value, f"{where}.{key}"))


# the annotations of the options (strings: `from __future__ import annotations`) that `_typed` checks
_TYPES = {"int": (int, "an integer"), "float": ((int, float), "a number"), "str": (str, "a string"),
          "bool": (bool, "true or false"), "dict": (dict, "a mapping"), "list": (list, "a list"),
          "None": (type(None), "null")}


def _typed(annotation: object, value: object, where: str) -> object:
    """`value` when its type fits the option's annotation ('int', 'float | None', ...), a number written as a
    string for a float ('1e-3', which YAML 1.1 reads as a string) as that number; else a one-line CnnkitError.
    An annotation of other names than _TYPES is left to Config.validate."""
    kinds = [k.strip() for k in str(annotation).split("|")]
    if not all(k in _TYPES for k in kinds):
        return value
    if "float" in kinds and isinstance(value, str) and "str" not in kinds:
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) and "bool" not in kinds:  # true is an int to Python, not an epoch count
        fits = False
    else:
        fits = any(isinstance(value, _TYPES[k][0]) for k in kinds)
    if fits and isinstance(value, float) and not math.isfinite(value):
        raise CnnkitError(f"config key {where} must be a finite number, got {value}")
    if not fits:
        wanted = " or ".join(_TYPES[k][1] for k in kinds)
        raise CnnkitError(f"config key {where} must be {wanted}, got {brief(value)}")
    return value


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the YAML file, then `overrides` ({'train': {'epochs': 3}, ...})."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise CnnkitError(f"config file not found: {path}")
        data = load_yaml(path) or {}
        if not isinstance(data, dict):
            raise CnnkitError(f"{path} must hold a mapping of sections (data, model, train)")
        _merge(cfg, data, path.name)
    _merge(cfg, overrides or {}, "flags")
    cfg.validate()
    return cfg


def config_from_dict(data: dict) -> Config:
    """A run's saved config.yaml (a mapping of sections) → Config; values of the wrong type are one-line errors."""
    if not isinstance(data, dict):
        raise CnnkitError(f"config.yaml must hold a mapping of sections (data, model, train), got {brief(data)}")
    cfg = Config()
    _merge(cfg, data, "config.yaml")
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    atomic_write(path, yaml.safe_dump(asdict(cfg), sort_keys=False))


def parse_key_values(text: str, example: str = "key=value,key2=value2") -> dict:
    """'n=600,size=32,name=a' → {'n': 600, 'size': 32, 'name': 'a'}: Python literals, else bare words.
    Parsed with ast.literal_eval, never eval."""
    options = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        options.update(parse_key_value(part, example))
    return options


def parse_key_value(text: str, example: str = "key=value") -> dict:
    """'key=value' → {'key': value}, the value a Python literal (number, bool, list, ...) or else a bare word:
    'milestones=[3, 6]' → {'milestones': [3, 6]}, 'nesterov=True' → {'nesterov': True}."""
    if "=" not in text:
        raise CnnkitError(f"bad option {text!r}; write key=value, e.g. {example}")
    key, value = (t.strip() for t in text.split("=", 1))
    if not key:
        raise CnnkitError(f"bad option {text!r}: no key before '='; write key=value, e.g. {example}")
    return {key: literal(value)}


def literal(value: str) -> object:
    """A flag's value: a Python literal where it reads as one (0.5, 3, True, [1, 2]), else the word itself;
    `true`/`false` as in YAML."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _check_rate(rate: object, where: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise CnnkitError(f"dropout rate {where}must be a number in [0, 1), got {rate!r}")
    if not 0.0 <= rate < 1.0:
        raise CnnkitError(f"dropout rate {where}must be in [0, 1) (the probability of zeroing a unit), got {rate}")
    return float(rate)


def check_dropout_spec(spec: float | Mapping[str, float]) -> float | dict[str, float]:
    """A rate in [0, 1), or {module-name glob: rate}; anything else is a CnnkitError."""
    if not isinstance(spec, Mapping):
        return _check_rate(spec, "")
    if not spec:
        raise CnnkitError("dropout mapping is empty; write GLOB=RATE pairs, e.g. classifier.*=0.5,fc6=0.3")
    return {str(glob): _check_rate(rate, f"of {glob!r} ") for glob, rate in spec.items()}


# -- reading YAML files ------------------------------------------------------------------------------------
MAX_YAML_NODES = 200_000  # the values of one YAML file once its aliases are expanded; past this, a 'billion laughs'


def load_yaml(file: Path, hint: str = "") -> object:
    """FILE's YAML through yaml.safe_load: no tag builds a Python object, so none runs code (`!!python/...` is
    refused). Unreadable, not UTF-8, bad syntax, an impossible date (2001-13-45), nesting too deep, aliases that
    expand past MAX_YAML_NODES values (a 'billion laughs') or into themselves: a one-line CnnkitError naming the
    file (and ending with `hint`, e.g. "; expected ...")."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CnnkitError(f"{file}: cannot read ({err}){hint}") from None
    try:
        data = yaml.safe_load(text)
        _count_nodes(data, file, {}, set())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or (str(err).splitlines() or ["?"])[0]
        if "python/" in problem:
            problem += " (cnnkit reads YAML safely: a !!python tag never builds an object nor runs code)"
        raise CnnkitError(f"{file} is not valid YAML{at}: {' '.join(problem.split())}{hint}") from None
    except (ValueError, TypeError, OverflowError) as err:  # a value that parses but cannot be built: 2001-13-45
        raise CnnkitError(f"{file} is not valid YAML: {brief(str(err))}{hint}") from None
    except RecursionError:
        raise CnnkitError(f"{file} is not valid YAML: nested too deeply{hint}") from None
    return data


def _count_nodes(data: object, file: Path, counted: dict[int, int], open_: set[int]) -> int:
    """How many values `data` holds with every alias expanded (each shared list or mapping counted once per use,
    computed once); a one-line CnnkitError past MAX_YAML_NODES, or for a list or mapping that holds itself."""
    if not isinstance(data, (dict, list, tuple, set)):
        return 1
    key = id(data)
    if key in counted:
        return counted[key]
    if key in open_:
        raise CnnkitError(f"{file}: a YAML alias refers to the list or mapping that holds it; remove the loop")
    open_.add(key)
    parts = [v for pair in data.items() for v in pair] if isinstance(data, dict) else data
    n = 1 + sum(_count_nodes(v, file, counted, open_) for v in parts)
    open_.discard(key)
    if n > MAX_YAML_NODES:
        raise CnnkitError(f"{file}: its YAML aliases expand to over {MAX_YAML_NODES:,} values (a 'billion laughs'); "
                          "write the values out or use fewer aliases")
    counted[key] = n
    return n
