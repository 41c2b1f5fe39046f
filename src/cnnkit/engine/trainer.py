"""The training loop. Tasks know the maths; the Trainer knows devices, epochs, mixed precision, DDP,
callbacks and checkpoints."""
from __future__ import annotations

import contextlib
import random
import time
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from cnnkit.engine.distributed import DistInfo, all_reduce_sum, init_distributed, resolve_device
from cnnkit.engine.hooks import Callback
from cnnkit.engine.precision import Precision
from cnnkit.engine.schedules import scale_lr
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Batch, Task


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """`Trainer(task, optimizer, epochs=10).fit(train_loader, val_loader)` → history (one dict per epoch).

    Loaders yield `Batch`es and may have `set_epoch(epoch)` and `set_device(device)` (to augment on the
    model's device). Metrics are summed on the device and read once per epoch, so the loop does not wait for
    the GPU after every batch. `precision` (cnnkit.engine.precision): auto, fp32, bf16 or fp16; `amp=True`
    is the older alias for mixed precision. `accumulate` N: the optimiser steps every N batches (and after the
    epoch's last) with the mean of their gradients, so N batches of B train as one batch of N·B for a loss that
    averages over its batch; a per-batch schedule then steps with the optimiser.

    `on_nan`: a batch whose loss is NaN or infinite either stops the run ('stop': a CnnkitError naming the epoch
    and batch, raised before that batch's gradients touch the weights, so the last checkpoint is the last good
    state) or is dropped ('skip': no gradient from it, the learning rate halved, a warning), stopping after
    `nan_limit` bad batches in a row. The check reads one number from the device per batch.
    """

    def __init__(self, task: Task, optimizer: torch.optim.Optimizer | None, *, epochs: int,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 callbacks: Sequence[Callback] = (), device: str | None = "auto", amp: bool = False,
                 grad_clip: float | None = None, seed: int = 0, precision: str = "auto", accumulate: int = 1,
                 on_nan: str = "stop", nan_limit: int = 5):
        if epochs < 1:
            raise CnnkitError(f"epochs must be at least 1, got {epochs}")
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise CnnkitError(f"accumulate must be a whole number of batches (1 or more), got {accumulate!r}")
        if on_nan not in ("stop", "skip"):
            raise CnnkitError(f"on_nan must be 'stop' or 'skip', got {on_nan!r}")
        self.accumulate, self.on_nan, self.nan_limit = accumulate, on_nan, nan_limit
        self._bad_run: list[int] = []  # the batches (1-based) of the current run of non-finite losses
        self.dist: DistInfo = init_distributed()
        self.device = resolve_device(device, self.dist)
        self.task, self.optimizer, self.scheduler = task, optimizer, scheduler
        self.precision = Precision.resolve(precision, self.device, amp)
        self.model = self.precision.prepare(task.model.to(self.device))  # the bare model (never the DDP wrapper)
        self.epochs, self.grad_clip, self.seed = epochs, grad_clip, seed
        self.callbacks = [c for c in callbacks if c.all_ranks or self.dist.is_main]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.scaled and self.device.type == "cuda")
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        self.meta: dict = {}  # saved with every checkpoint (the model card, for a resume)
        self.stop_training = self.interrupted = False
        self.batch_index, self.steps_per_epoch = 0, 0
        self._logs: list[dict[str, torch.Tensor]] = []  # this epoch's per-batch logs
        self._sizes: list[int] = []

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, train: Iterable[Batch], val: Iterable[Batch] | None = None) -> list[dict]:
        if self.optimizer is None:
            raise CnnkitError("this Trainer has no optimizer; it can only evaluate and predict")
        self.steps_per_epoch = len(train) if hasattr(train, "__len__") else 0
        for loader in (train, val):
            if hasattr(loader, "set_device"):
                loader.set_device(self.device)
        if self.dist.enabled:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.task.model = DistributedDataParallel(self.model, device_ids=ids)
        self.stop_training = self.interrupted = False
        self._call("on_fit_start")
        try:
            while self.epoch < self.epochs and not self.stop_training:
                self._run_epoch(train, val)
        except KeyboardInterrupt:
            self.interrupted = True  # callbacks save the current state in on_fit_end
        finally:
            self.task.model = self.model
            self._call("on_fit_end")
        return self.history

    def _run_epoch(self, train: Iterable[Batch], val: Iterable[Batch] | None) -> None:
        start = time.perf_counter()
        torch.manual_seed(self.seed * 100_003 + self.epoch)  # augmentation randomness, exact on resume
        if hasattr(train, "set_epoch"):
            train.set_epoch(self.epoch)
        self._call("on_epoch_start")
        logs = {"epoch": self.epoch + 1}
        logs.update({f"train_{k}": v for k, v in self._train_epoch(train).items()})
        if val is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
            self._call("on_validation_end", logs)
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None and not self._batch_schedule:
            self.scheduler.step(logs.get("val_loss", logs["train_loss"]))
        logs["time"] = time.perf_counter() - start
        self.history.append(logs)
        self.epoch += 1
        self._call("on_epoch_end", logs)

    def _train_epoch(self, loader: Iterable[Batch]) -> dict[str, float]:
        self.task.model.train()
        self._logs, self._sizes = [], []
        batch_hooks = [c for c in self.callbacks if type(c).on_train_batch_end is not Callback.on_train_batch_end]
        total = len(loader) if hasattr(loader, "__len__") else None
        for self.batch_index, batch in enumerate(loader):
            batch = self._to_device(batch)
            first, group = self._group(self.batch_index, total)
            if self.batch_index == first:
                self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                out = self.task.training_step(batch)
            if self._loss_is_finite(out.loss):
                self.scaler.scale(out.loss / group if group > 1 else out.loss).backward()
                self._accumulate(out.logs, len(batch))
            if self.batch_index == first + group - 1 and self._has_gradients() and self._gradients_are_finite():
                self._optimizer_step()
            for c in batch_hooks:
                c.on_train_batch_end(self)
        if not self._logs:
            if self._bad_run:
                raise CnnkitError(f"every batch of epoch {self.epoch + 1} had a NaN or infinite loss; lower the "
                                  "learning rate (--lr)")
            raise CnnkitError("the training loader gave no batches; the training split is empty or the batch too big")
        if total is None and (self.batch_index + 1) % self.accumulate and self._has_gradients():
            self._optimizer_step()  # a loader of unknown length: the rest
        return self._reduce()

    def _loss_is_finite(self, loss: torch.Tensor) -> bool:
        """True for a finite loss; for a NaN/inf one, `_bad_batch` (stop, or skip: False, the batch is dropped).
        Under DDP every rank decides alike (one bad rank drops the batch everywhere)."""
        bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)
        if self.dist.enabled:
            bad = all_reduce_sum(bad, self.dist)
        if not bool(bad.item()):  # one read of the device per batch
            self._bad_run = []
            return True
        return self._bad_batch("loss")

    def _gradients_are_finite(self) -> bool:
        """With on_nan='skip' (and no fp16 loss scaling, which skips such steps itself): a NaN/inf gradient of a
        finite loss drops the group's step as a bad batch, so no step ever writes NaN into the weights."""
        if self.on_nan != "skip" or self.scaler.is_enabled():
            return True
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))):
            return True
        self.optimizer.zero_grad(set_to_none=True)
        return self._bad_batch("gradient")

    def _bad_batch(self, what: str) -> bool:
        """A batch with a NaN/inf `what`: stop (a one-line CnnkitError naming the epoch and batch, before the batch
        reaches the weights), or with on_nan='skip' halve the learning rate, warn and return False; `nan_limit` bad
        batches in a row stop."""
        where = f"epoch {self.epoch + 1}, batch {self.batch_index + 1}"
        self._bad_run.append(self.batch_index + 1)
        if self.on_nan == "stop":
            raise CnnkitError(f"the training {what} became NaN or infinite at {where}; {self._kept()}; lower the "
                              "learning rate (--lr) or train with --on-nan skip")
        if len(self._bad_run) >= self.nan_limit:
            raise CnnkitError(f"{len(self._bad_run)} batches in a row had a NaN or infinite loss or gradient (up to "
                              f"{where}) even with the learning rate halved each time; {self._kept()}; lower the "
                              "learning rate (--lr)")
        scale_lr(self.optimizer, self.scheduler, 0.5)
        warnings.warn(f"NaN or infinite {what} at {where}: batch skipped, learning rate halved to "
                      f"{self.optimizer.param_groups[0]['lr']:.3g}", stacklevel=3)
        return False

    def _kept(self) -> str:
        """What a NaN stop leaves: the last epoch's checkpoint (the bad batch never reached the weights)."""
        if self.epoch:
            return f"the last good checkpoint (after epoch {self.epoch}) is kept"
        return "no epoch had ended, so there is no checkpoint to keep"

    def _has_gradients(self) -> bool:
        """Whether the accumulation group gave any gradient (not when every batch in it was skipped)."""
        if not self._bad_run:
            return True
        return any(p.grad is not None for g in self.optimizer.param_groups for p in g["params"])

    @torch.inference_mode()
    def evaluate(self, loader: Iterable[Batch]) -> dict[str, float]:
        """Mean loss and metrics over a loader, in eval mode (no dropout, BN running statistics)."""
        was_training = self.task.model.training
        self.task.model.eval()
        self._logs, self._sizes = [], []
        self.task.reset_metrics()
        for batch in loader:
            batch = self._to_device(batch)
            with self._autocast():
                out = self.task.validation_step(batch)
            self._accumulate(out.logs, len(batch))
        self.task.model.train(was_training)
        logs = self._reduce() if self._logs and self._logs[0] else {}
        return {**logs, **self.task.epoch_metrics()}

    @torch.inference_mode()
    def predict(self, loader: Iterable[Batch], targets: bool = False):
        """Concatenated task predictions on the CPU (probabilities for classification, values for regression);
        with `targets`, the pair (predictions, the batches' targets concatenated)."""
        self.task.model.eval()
        outs, wanted = [], []
        for batch in loader:
            with self._autocast():
                outs.append(self.task.predict_step(self._to_device(batch).images).float().cpu())
            if targets:
                wanted.append(batch.targets.cpu())
        predictions = torch.cat(outs) if outs else torch.empty(0)
        return (predictions, torch.cat(wanted) if wanted else torch.empty(0)) if targets else predictions

    def _group(self, index: int, total: int | None) -> tuple[int, int]:
        """(first batch, size) of the accumulation group of batch `index`: N batches, fewer at the epoch's end."""
        first = index - index % self.accumulate
        size = self.accumulate if total is None else min(self.accumulate, total - first)
        return first, size

    def _optimizer_step(self) -> None:
        """Clip, step the optimiser (through the gradient scaler) and a per-batch schedule."""
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self._batch_schedule:
            self.scheduler.step()

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def _batch_schedule(self) -> bool:
        """A scheduler steps per batch unless it says `interval = "epoch"` (then with the val loss, for plateaus)."""
        return self.scheduler is not None and getattr(self.scheduler, "interval", "batch") == "batch"

    def _autocast(self) -> contextlib.AbstractContextManager:
        return self.precision.autocast()

    def _to_device(self, batch: Batch) -> Batch:
        """The batch on the model's device, its images in the model's memory format."""
        batch = batch.to(self.device, non_blocking=True)
        if isinstance(batch.images, torch.Tensor):
            batch.images = self.precision.input(batch.images)
        return batch

    def _accumulate(self, logs: dict[str, torch.Tensor], n: int) -> None:
        """Keep the batch's logs as they are: no arithmetic per batch, one weighted sum per epoch."""
        self._logs.append(logs)
        self._sizes.append(n)

    def _sums(self) -> dict[str, torch.Tensor]:
        sizes = torch.tensor(self._sizes, dtype=torch.float32, device=self.device)  # (steps,)
        keys = self._logs[0].keys()
        return {k: (torch.stack([log[k].detach().float() for log in self._logs]) * sizes).sum() for k in keys}

    def _reduce(self) -> dict[str, float]:
        sums = self._sums()
        keys = list(sums)
        totals = torch.stack([sums[k] for k in keys] + [torch.tensor(float(sum(self._sizes)), device=self.device)])
        totals = all_reduce_sum(totals, self.dist).cpu()
        return {k: float(totals[i] / totals[-1]) for i, k in enumerate(keys)}

    def running_logs(self) -> dict[str, float]:
        """The epoch's running means so far (reads the device: for progress display only)."""
        if not self._logs:
            return {}
        return {k: float(v) / sum(self._sizes) for k, v in self._sums().items()}

    def _call(self, hook: str, *args) -> None:
        for c in self.callbacks:
            getattr(c, hook)(self, *args)

    # -- checkpoints ------------------------------------------------------------------------------
    def callback_states(self) -> dict:
        return {type(c).__name__: c.state_dict() for c in self.callbacks}

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "meta": self.meta,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.meta = dict(state.get("meta", {}))
        for c in self.callbacks:
            saved = state.get("callbacks", {}).get(type(c).__name__)
            if saved:
                c.load_state_dict(saved)
