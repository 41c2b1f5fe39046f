"""Transfer-learning strategies on any registry model: what to freeze, what to replace, which learning rates.

    plan = apply_strategy(model, get_spec("resnet18"), "fine-tune", lr=1e-4)
    optimizer = optimizers.get("adam", plan.param_groups)         # one group per stage, lr × decay^distance
    Trainer(task_around(plan.model), optimizer, callbacks=plan.callbacks, ...)

A model is seen as `stages(model)`: top-level children in forward order, grouped (stem, stage 1, ...), the
head (ModelSpec.head) left out. "linear-probe" fits scikit-learn on pooled features instead of training
(`fit_linear_probe`), and `choose_strategy` is the "auto" advisor. See docs/transfer.md, "Strategies".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cnnkit.config import PROBES, STRATEGIES
from cnnkit.engine.callbacks import Callback
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.registry import ModelSpec
from cnnkit.models.stages import capture_input, classifier_layers, last_linears, parameter_names, stages, truncate
from cnnkit.models.tweaks import batch_norm_layers, set_batch_norm

__all__ = ["STRATEGIES", "FINE_TUNE_LR", "LAYER_DECAY", "SMALL_DATA", "SIMILAR", "TransferPlan", "GradualUnfreeze",
           "apply_strategy", "stages", "truncate", "capture_input", "extract_features", "fit_linear_probe",
           "choose_strategy", "PROBES"]

FINE_TUNE_LR = 1e-4  # fine-tune's head lr when --lr is not given (Adam-like optimisers); the stages get less
LAYER_DECAY = None  # a stage d steps below the head trains at lr × decay^d; None: the first stage gets lr/100
LOWEST_FRACTION = 0.01  # fastai's slice(lr/100, lr): the first stage's share of the head's lr
SMALL_DATA = 1000  # "auto": fewer training images than this is a small dataset
SIMILAR = 0.8  # "auto": a probe accuracy this far from chance to perfect, (acc − chance)/(1 − chance), is similar

def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def _freeze_except(model: nn.Module, trainable: list[str]) -> list[str]:
    """requires_grad False for every parameter outside the `trainable` module paths, and their BN layers kept in
    eval mode for good (tweaks' frozen batch norm). Returns the frozen parameter names."""
    keep = tuple(p + "." for p in trainable)
    frozen = []
    for name, param in model.named_parameters():
        if not name.startswith(keep):
            param.requires_grad_(False)
            frozen.append(name)
    for name, bn in batch_norm_layers(model).items():
        if not (name + ".").startswith(keep):
            set_batch_norm(bn, "frozen")  # a BN module is its own only BN layer
    return frozen


@dataclass
class TransferPlan:
    """What a strategy did: the model to train (a new one for "partial"), the optimiser's param groups (each
    with its lr where the strategy sets one), the frozen parameters' names and callbacks for the Trainer."""

    strategy: str
    model: nn.Module
    param_groups: list[dict]
    frozen: list[str] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


class GradualUnfreeze(Callback):
    """Fine-tuning with gradual unfreezing (Howard & Ruder 2018): the first `every` epochs train the head only,
    then each `every` epochs one more stage unfreezes, from the head backwards. Every BN layer keeps its
    running statistics throughout (see _fine_tune)."""

    all_ranks = True

    def __init__(self, model: nn.Module, stage_params: list[list[str]], every: int = 1):
        if every < 1:
            raise CnnkitError(f"--unfreeze-every must be at least 1, got {every}")
        self.model, self.stage_params, self.every = model, stage_params, every

    def unfrozen(self, epoch: int) -> int:
        """How many stages (counted from the head) train in 0-based `epoch`."""
        return min(len(self.stage_params), epoch // self.every)

    def on_epoch_start(self, trainer) -> None:
        params = dict(self.model.named_parameters())
        n = self.unfrozen(trainer.epoch)
        for i, names in enumerate(reversed(self.stage_params)):
            for name in names:
                params[name].requires_grad_(i < n)


def apply_strategy(model: nn.Module, spec: ModelSpec, strategy: str, *, k: int | None = None,
                   lr: float | None = None, decay: float | None = LAYER_DECAY, unfreeze_every: int = 0,
                   input_size: tuple[int, int, int] | None = None) -> TransferPlan:
    """Freeze, replace and group `model`'s parameters as `strategy` says (see STRATEGIES and docs/transfer.md).
    `k`: stages kept by "partial"; `lr`: the base lr (fine-tune: FINE_TUNE_LR when None; others: the
    optimiser's default); `unfreeze_every`: fine-tune's gradual unfreezing period in epochs (0: off)."""
    if strategy not in STRATEGIES:
        raise unknown_name("transfer strategy", strategy, STRATEGIES)
    if strategy in ("linear-probe", "auto"):
        raise CnnkitError(f"strategy {strategy!r} is not a training plan; cnnkit.api.train runs it")
    with_lr = {} if lr is None else {"lr": lr}
    if strategy == "partial":
        model = truncate(model, spec, k, input_size or spec.input_size)
        frozen = _freeze_except(model, ["fc"])
        return TransferPlan(strategy, model, [{"params": list(model.fc.parameters()), **with_lr}], frozen)
    if strategy in ("feature-extractor", "head-only"):
        new = classifier_layers(model, spec) if strategy == "feature-extractor" else last_linears(model, spec)
        for path in new:
            _reset(model.get_submodule(path))
        frozen = _freeze_except(model, new)
        params = [p for p in model.parameters() if p.requires_grad]
        return TransferPlan(strategy, model, [{"params": params, **with_lr}], frozen)
    return _fine_tune(model, spec, FINE_TUNE_LR if lr is None else lr, decay, unfreeze_every)


def _fine_tune(model: nn.Module, spec: ModelSpec, lr: float, decay: float | None, every: int) -> TransferPlan:
    """Everything trainable; stage i of n at lr × decay^(n − i), the head (and anything else) at lr. With
    decay None, decay = LOWEST_FRACTION^(1/n): geometric from lr/100 at the first stage to lr at the head, so
    a deep backbone (EfficientNet's 8 stages) still learns, as fastai's slice(lr/100, lr). The BN layers
    normalise with their running statistics and keep them (γ and β train): the batch statistics of a small
    dataset's batches are not the ones the pretrained features were learnt with."""
    named = dict(model.named_parameters())
    stage_params = [parameter_names(model, s) for s in stages(model, spec)]
    stage_params = [names for names in stage_params if names]
    if decay is None:
        decay = LOWEST_FRACTION ** (1 / max(len(stage_params), 1))
    if not 0 < decay <= 1:
        raise CnnkitError(f"the layer-wise lr decay must be in (0, 1], got {decay}")
    in_stages = {n for names in stage_params for n in names}
    groups = [{"params": [named[n] for n in names], "lr": lr * decay ** (len(stage_params) - i), "name": f"stage{i}"}
              for i, names in enumerate(stage_params)]
    groups.append({"params": [p for n, p in named.items() if n not in in_stages], "lr": lr, "name": "head"})
    for bn in batch_norm_layers(model).values():  # Keras' advice: BN in inference mode while fine-tuning
        set_batch_norm(bn, "frozen")
    for p in model.parameters():  # γ and β of the BN layers too: only their running statistics stay
        p.requires_grad_(True)
    callbacks = [GradualUnfreeze(model, stage_params, every)] if every else []
    return TransferPlan("fine-tune", model, groups, [], callbacks)


# -- linear probe -----------------------------------------------------------------------------------------
@torch.inference_mode()
def extract_features(model: nn.Module, spec: ModelSpec, loader) -> tuple[np.ndarray, np.ndarray]:
    """(features, targets): the input of the model's last linear layer (pooled features), in eval mode."""
    model.eval()
    targets = []
    with capture_input(model.get_submodule(last_linears(model, spec)[0])) as seen:
        for batch in loader:
            model(batch.images)
            targets.append(batch.targets.cpu())
    return torch.cat(seen).numpy().astype(np.float64), torch.cat(targets).numpy()  # (n, F), (n,)


def _make_probe(probe: str, seed: int = 0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if probe not in PROBES:
        raise unknown_name("probe", probe, PROBES)
    clf = LogisticRegression(max_iter=2000) if probe == "logistic" else LinearSVC(random_state=seed)
    return make_pipeline(StandardScaler(), clf)


def fit_linear_probe(model: nn.Module, spec: ModelSpec, x: np.ndarray, y: np.ndarray, num_classes: int,
                     probe: str = "logistic"):
    """Fit the probe on features `x` (n, F) and labels `y`, then write it into the model's last linear layer
    (the scaler folded in: W = coef / scale, b = intercept − W · mean), so the model's logits are the probe's
    decision function. `num_classes` = the layer's outputs (1 for a binary task). Returns the fitted pipeline."""
    pipe = _make_probe(probe).fit(x, y.astype(int))
    scaler, clf = pipe[0], pipe[-1]
    coef = np.atleast_2d(clf.coef_) / scaler.scale_  # (K', F)
    bias = np.atleast_1d(clf.intercept_) - coef @ scaler.mean_  # (K',)
    weight, out_bias = np.zeros((num_classes, x.shape[1])), np.full(num_classes, -1e4)  # absent classes: never
    if num_classes == 1:
        weight, out_bias = coef, bias
    elif coef.shape[0] == 1:  # two classes seen among more: logits (0, z) give the same softmax
        weight[clf.classes_[1]], out_bias[clf.classes_] = coef[0], (0.0, bias[0])
    else:
        weight[clf.classes_], out_bias[clf.classes_] = coef, bias
    layer = model.get_submodule(last_linears(model, spec)[0])
    if layer.weight.shape != weight.shape:
        raise CnnkitError(f"the probe has {weight.shape} weights but {spec.name}'s last layer "
                          f"{tuple(layer.weight.shape)}")
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(out_bias))
    return pipe


def choose_strategy(x: np.ndarray, y: np.ndarray, n_train: int, num_stages: int) -> tuple[dict, str]:
    """"auto": the quadrant of dataset size (SMALL_DATA) against similarity to the source data (a 3-fold
    linear-probe accuracy on features `x` of a subset, rescaled from chance to perfect, against SIMILAR).
    Returns (the TrainConfig fields strategy, keep_stages, unfreeze_every; a one-line reasoning)."""
    from sklearn.model_selection import cross_val_score

    classes, counts = np.unique(y, return_counts=True)
    folds = int(min(3, counts.min()))
    chance = counts.max() / counts.sum()
    acc = chance  # too few images per class to cross-validate: assume no similarity
    if folds >= 2 and len(classes) > 1:
        acc = float(cross_val_score(_make_probe("logistic"), x, y, cv=folds).mean())
    similarity = (acc - chance) / (1 - chance) if chance < 1 else 0.0
    small, similar = n_train < SMALL_DATA, similarity >= SIMILAR
    choice = {"strategy": {(True, True): "linear-probe", (True, False): "partial"}.get((small, similar), "fine-tune"),
              "keep_stages": max(1, num_stages // 2) if small and not similar else None, "unfreeze_every": 0}
    why = {(True, True): "a linear classifier on the pretrained features",
           (True, False): "the earlier, more generic layers and a new head",
           (False, True): "fine-tune the whole network at a small lr",
           (False, False): "fine-tune the whole network (enough data to move far from the source)"}[(small, similar)]
    reasoning = (f"auto: {n_train} training images ({'small' if small else 'large'}, threshold {SMALL_DATA}); "
                 f"linear-probe accuracy {acc:.3f} on {len(y)} images, chance {chance:.3f} → similarity "
                 f"{similarity:.2f} ({'similar' if similar else 'different'}, threshold {SIMILAR}) → "
                 f"{choice['strategy']}{' k=' + str(choice['keep_stages']) if choice['keep_stages'] else ''}: {why}")
    return choice, reasoning
