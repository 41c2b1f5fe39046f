"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", §3.3;
fastai's `lr_find`).

Train for at most `steps` batches while the learning rate grows geometrically from `start_lr` to `end_lr`,
record the loss of every batch, smooth it, stop once it has clearly diverged, and put the model and the
optimiser back exactly as they were. The curve shows where the loss starts falling and where it blows up;
`suggestion` picks the rate at which it falls fastest.

Conventions:

* the lr of step i (0-based) is `geomspace(start_lr, end_lr, steps)[i]`, set on every param group before the
  batch; the loss recorded for step i is that batch's loss (computed before the update with lr i);
* smoothed loss after k recorded steps: avg_k = β·avg_{k−1} + (1 − β)·raw_k (avg_0 = 0), reported
  bias-corrected as avg_k / (1 − β^k) (β = `smooth`; β = 0 gives the raw losses);
* early stop: after recording step k > 1, stop when smoothed_k > `diverge` × min(smoothed_1..k−1) (losses are
  assumed positive, as cross-entropy is); a non-finite raw loss stops the run before it is recorded;
* suggestion: on the smoothed curve against log10(lr), the derivative d loss / d log10 lr is taken with
  `numpy.gradient` (second-order central differences inside, one-sided at the ends); the suggestion is the lr
  of its most negative value over all points except the last `SKIP_END` (= 5) — the last points are the
  divergence itself, where the smoothed loss lags. With fewer than SKIP_END + 2 points only the last point is
  left out; with fewer than 2 points there is no suggestion (None).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Batch, Task

__all__ = ["LRFindResult", "SKIP_END", "lr_find", "suggest_lr"]

SKIP_END = 5  # points at the end of the curve the suggestion ignores


def suggest_lr(lrs: list[float], losses: list[float], skip_end: int = SKIP_END) -> float | None:
    """The lr of the steepest descent of `losses` against log10(`lrs`) (see the module notes), or None."""
    n = len(lrs)
    if n < 2:
        return None
    x = np.log10(np.asarray(lrs, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    slope = np.gradient(y, x, edge_order=1)
    keep = n - skip_end if n - skip_end >= 2 else n - 1
    return float(lrs[int(np.argmin(slope[:keep]))])


@dataclass
class LRFindResult:
    lrs: list[float]  # the lr of each recorded step
    losses: list[float]  # bias-corrected exponentially smoothed losses
    raw_losses: list[float]  # each batch's loss
    suggestion: float | None = None  # steepest descent of the smoothed loss (module notes)
    stopped_early: bool = False  # diverged (or a non-finite loss) before `steps` batches
    meta: dict = field(default_factory=dict)  # start_lr, end_lr, steps, smooth, diverge

    def plot(self, path: str | Path) -> Path:
        """A PNG of the smoothed (and, faintly, raw) loss against the lr on a log axis, suggestion marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        try:
            ax.plot(self.lrs, self.raw_losses, color="0.75", lw=0.8, label="loss")
            ax.plot(self.lrs, self.losses, color="C0", lw=1.6, label="smoothed loss")
            if self.suggestion is not None:
                i = self.lrs.index(self.suggestion)
                ax.axvline(self.suggestion, color="C3", ls="--", lw=1)
                ax.plot([self.suggestion], [self.losses[i]], "o", color="C3",
                        label=f"suggestion {self.suggestion:.2g}")
            ax.set_xscale("log")
            ax.set_xlabel("learning rate")
            ax.set_ylabel("training loss")
            ax.set_title("learning-rate range test")
            finite = [v for v in self.losses if math.isfinite(v)]
            if finite:  # keep the divergence from flattening the interesting part of the curve
                lo, first = min(finite), finite[0]
                top = max(first, lo) + 0.5 * abs(max(first, lo) - lo) + 1e-8
                ax.set_ylim(lo - 0.1 * (top - lo), top)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
            fig.tight_layout()
            fig.savefig(path, dpi=100)
        finally:
            plt.close(fig)
        return path


def _cycle(loader: Iterable[Batch]) -> Iterator[Batch]:
    """The loader's batches forever, advancing `set_epoch` at each new pass; an empty loader is an error."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise CnnkitError("the loader gave no batches; the training split is empty or the batch too big")
        epoch += 1


def _check_range_test_args(start_lr: float, end_lr: float, steps: int, smooth: float, diverge: float) -> None:
    """Raise CnnkitError unless the range test's schedule (start_lr, end_lr, steps), smoothing β and divergence
    factor are usable (module notes)."""
    if not 0 < start_lr < end_lr:
        raise CnnkitError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if steps < 2:
        raise CnnkitError(f"steps must be at least 2, got {steps}")
    if not 0 <= smooth < 1:
        raise CnnkitError(f"smooth must be in [0, 1), got {smooth}")
    if diverge <= 1:
        raise CnnkitError(f"diverge must be above 1, got {diverge}")


@contextmanager
def _state_restored(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Snapshot the model's weights, buffers and train/eval mode, the optimiser's state and param groups, and the
    CPU random state; put them all back on leaving (the gradients are cleared), whatever happened inside."""
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    rng_state = torch.get_rng_state()
    try:
        yield
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        model.train(was_training)
        torch.set_rng_state(rng_state)


def lr_find(task: Task, optimizer: torch.optim.Optimizer, loader: Iterable[Batch], *, start_lr: float = 1e-7,
            end_lr: float = 10.0, steps: int = 100, smooth: float = 0.98, diverge: float = 4.0,
            device: str | torch.device = "cpu") -> LRFindResult:
    """Run the range test (module notes) and restore the model's and optimiser's state afterwards.

    The model is moved to `device` (and stays there); its weights, buffers, train/eval mode, the optimiser's
    state and param groups, and the CPU random state are as before the call.
    """
    _check_range_test_args(start_lr, end_lr, steps, smooth, diverge)
    device = torch.device(device)
    model = task.model.to(device)
    schedule = [float(v) for v in np.geomspace(start_lr, end_lr, steps)]
    lrs, losses, raw_losses = [], [], []
    avg, best, stopped = 0.0, math.inf, False
    with _state_restored(model, optimizer):
        model.train()
        batches = _cycle(loader)
        for i, lr in enumerate(schedule):
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = next(batches).to(device, non_blocking=True)
            out = task.training_step(batch)
            raw = float(out.loss.detach())
            if not math.isfinite(raw):
                stopped = True
                break
            k = i + 1
            avg = smooth * avg + (1 - smooth) * raw
            smoothed = avg / (1 - smooth ** k)
            lrs.append(lr)
            raw_losses.append(raw)
            losses.append(smoothed)
            if k > 1 and smoothed > diverge * best:
                stopped = i < steps - 1
                break
            best = min(best, smoothed)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
    meta = {"start_lr": start_lr, "end_lr": end_lr, "steps": steps, "smooth": smooth, "diverge": diverge}
    return LRFindResult(lrs, losses, raw_losses, suggest_lr(lrs, losses), stopped, meta)
