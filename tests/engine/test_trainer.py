"""The Trainer: it learns, it is deterministic, checkpoints are atomic, early stopping and Ctrl-C behave."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnkit.data.loader import TensorLoader
from cnnkit.engine import optimizers
from cnnkit.engine.callbacks import Callback, EarlyStopping, ModelCheckpoint
from cnnkit.engine.checkpoint import atomic_save, load_checkpoint
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classification import ClassificationTask


def _separable(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by the sign of the mean pixel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
    return x, y


def _trainer(epochs: int = 3, callbacks=(), seed: int = 0) -> Trainer:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    opt = optimizers.get("sgd", model.parameters(), lr=0.05, momentum=0.9)
    return Trainer(ClassificationTask(model), opt, epochs=epochs, callbacks=callbacks, device="cpu", seed=seed)


def test_fit_learns_and_logs_epoch_means() -> None:
    x, y = _separable()
    history = _trainer(epochs=3).fit(TensorLoader(x, y, 32, shuffle=True), TensorLoader(x, y, 64))
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["val_accuracy"] > 0.95
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_epoch_means_are_weighted_by_batch_size() -> None:
    """With batches of 100 and 28, the logged loss is the per-sample mean, as a full-batch pass computes."""
    x, y = _separable(128)
    trainer = _trainer()
    logs = trainer.evaluate(TensorLoader(x, y, 100))
    logits = trainer.model(x)
    expected = torch.nn.functional.cross_entropy(logits, y).item()
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert logs["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_same_seed_same_weights_different_seed_different() -> None:
    x, y = _separable()
    runs = []
    for seed in (0, 0, 1):
        t = _trainer(seed=seed)
        t.fit(TensorLoader(x, y, 32, shuffle=True, seed=seed))
        runs.append(torch.cat([p.flatten() for p in t.model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_early_stopping_stops_after_patience_and_restores_best() -> None:
    x, y = _separable()
    values = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])

    class FakeVal(Callback):
        all_ranks = True

        def on_validation_end(self, trainer, logs):
            logs["val_loss"] = next(values)

    stopper = EarlyStopping("val_loss", patience=2, restore_best=True)
    trainer = _trainer(epochs=6, callbacks=[FakeVal(), stopper])
    snapshots = []

    class Snap(Callback):
        def on_epoch_end(self, trainer, logs):
            snapshots.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer.callbacks.append(Snap())
    history = trainer.fit(TensorLoader(x, y, 32), TensorLoader(x, y, 64))
    assert len(history) == 4  # best at epoch 2, no improvement at 3 and 4
    assert stopper.best_epoch == 2
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, snapshots[1][k])


def test_checkpoints_and_resume_give_the_same_weights_as_one_run(tmp_path: Path) -> None:
    x, y = _separable()
    straight = _trainer(epochs=4)
    straight.fit(TensorLoader(x, y, 32, shuffle=True))

    class StopAt2(Callback):
        def on_epoch_end(self, trainer, logs):
            if logs["epoch"] == 2:
                raise KeyboardInterrupt  # what Ctrl-C does

    first = _trainer(epochs=4, callbacks=[ModelCheckpoint(tmp_path, monitor="train_loss"), StopAt2()])
    first.fit(TensorLoader(x, y, 32, shuffle=True))
    assert first.interrupted and first.epoch == 2
    state = load_checkpoint(tmp_path / "last.pt")
    resumed = _trainer(epochs=4, seed=123)  # a different init: everything must come from the checkpoint
    resumed.seed = 0
    resumed.load_state_dict(state)
    resumed.fit(TensorLoader(x, y, 32, shuffle=True))
    assert len(resumed.history) == 4
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save({"epoch": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_nan_loss_is_a_clear_error() -> None:
    x, y = _separable()
    trainer = _trainer()
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e30
    with pytest.raises(CnnkitError, match="NaN"):
        trainer.fit(TensorLoader(x * 1e30, y, 32))


def test_unknown_optimizer_name() -> None:
    with pytest.raises(CnnkitError, match="did you mean .*'adam'"):
        optimizers.get("adma", [torch.nn.Parameter(torch.zeros(1))])


def test_auxiliary_outputs_add_0_3_of_their_loss_in_training() -> None:
    class WithAux(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.aux_outputs: list[torch.Tensor] = []

        def forward(self, x):
            logits = self.fc(x)
            self.aux_outputs = [logits * 2] if self.training else []
            return logits

    from cnnkit.tasks.base import Batch

    model = WithAux()
    task = ClassificationTask(model)
    batch = Batch(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    main = torch.nn.functional.cross_entropy(model.fc(batch.images), batch.targets)
    aux = torch.nn.functional.cross_entropy(model.fc(batch.images) * 2, batch.targets)
    assert task.training_step(batch).loss.item() == pytest.approx((main + 0.3 * aux).item(), rel=1e-6)
    model.eval()
    assert task.validation_step(batch).loss.item() == pytest.approx(main.item(), rel=1e-6)


def test_an_epoch_schedule_steps_once_per_epoch_with_the_val_loss() -> None:
    x, y = _separable()
    seen: list[float] = []

    class EverySecondEpochHalves:
        interval = "epoch"

        def __init__(self, optimizer):
            self.optimizer = optimizer

        def step(self, metric=None):
            seen.append(metric)
            if len(seen) % 2 == 0:
                for group in self.optimizer.param_groups:
                    group["lr"] /= 2

        def state_dict(self):
            return {}

    trainer = _trainer(epochs=4)
    trainer.scheduler = EverySecondEpochHalves(trainer.optimizer)
    history = trainer.fit(TensorLoader(x, y, 32), TensorLoader(x, y, 64))
    assert seen == [row["val_loss"] for row in history]
    assert [row["lr"] for row in history] == [0.05, 0.05, 0.025, 0.025]


def test_a_mixed_batch_is_scored_against_its_soft_targets() -> None:
    """Cross-entropy is linear in the target: CE(z, λa + (1−λ)b) = λ·CE(z, a) + (1−λ)·CE(z, b)."""
    from cnnkit.engine.regularizers import mixup
    from cnnkit.tasks.base import Batch

    x, y = _separable(16)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    g = torch.Generator().manual_seed(3)
    drawn = mixup(x, y, 2, alpha=0.4, generator=torch.Generator().manual_seed(3))
    task = ClassificationTask(model, mix=lambda images, targets: tuple(mixup(images, targets, 2, alpha=0.4,
                                                                             generator=g)))
    out = task.training_step(Batch(x, y))
    logits = model(drawn.images)
    ce = torch.nn.functional.cross_entropy
    lam = drawn.lam
    expected = lam * ce(logits, y) + (1 - lam) * ce(logits, y[drawn.perm])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def _tiny(accumulate: int, clip: float | None = None) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(108, 2))
    opt = optimizers.get("sgd", model.parameters(), lr=0.1, momentum=0.9)
    return Trainer(ClassificationTask(model), opt, epochs=2, device="cpu", accumulate=accumulate, grad_clip=clip)


@pytest.mark.parametrize("clip", [None, 0.5])
def test_accumulating_4_batches_of_8_equals_one_batch_of_32(clip) -> None:
    """--accumulate N: the optimiser steps every N batches with their mean gradient, as one batch of N·B."""
    x, y = _separable(64)
    small, big = _tiny(4, clip), _tiny(1, clip)
    small.fit(TensorLoader(x, y, 8))
    big.fit(TensorLoader(x, y, 32))
    for a, b in zip(small.model.parameters(), big.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert small.optimizer.state_dict()["state"][0]["momentum_buffer"].shape == (3, 1, 3, 3)


def test_accumulation_steps_after_the_epochs_last_batches_and_the_schedule_with_the_optimiser() -> None:
    """5 batches with accumulate 2: steps after batches 2, 4 and 5 (the last group of 1 is its own mean)."""
    from cnnkit.engine import schedules

    x, y = _separable(40)
    trainer = _tiny(2)
    steps = []
    trainer.optimizer.register_step_post_hook(lambda opt, args, kwargs: steps.append(trainer.batch_index))
    trainer.scheduler = schedules.get("step_decay", trainer.optimizer, steps_per_epoch=3, epochs=2,
                                      interval="batch", step_size=1, gamma=0.5)
    trainer.epochs = 1
    trainer.fit(TensorLoader(x, y, 8))
    assert steps == [1, 3, 4]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)  # 3 schedule steps
    with pytest.raises(CnnkitError, match="accumulate"):
        Trainer(trainer.task, trainer.optimizer, epochs=1, accumulate=0)


def test_ctrl_c_mid_epoch_keeps_the_last_whole_epoch_and_the_resume_is_exact(tmp_path: Path) -> None:
    """Ctrl-C in the middle of epoch 3 of a per-batch one-cycle schedule: last.pt stays epoch 2 (a half-trained
    epoch saved under epoch 2's number would train those batches twice and overrun the schedule), and the resume
    ends bit for bit where an uninterrupted run does."""
    from cnnkit.engine import schedules

    x, y = _separable()

    def make(callbacks=()):
        t = _trainer(epochs=4, callbacks=callbacks)
        t.scheduler = schedules.get("one_cycle", t.optimizer, steps_per_epoch=8, epochs=4, interval="batch")
        return t

    straight = make()
    straight.fit(TensorLoader(x, y, 32, shuffle=True))

    class CtrlC(Callback):
        def on_train_batch_end(self, trainer):
            if trainer.epoch == 2 and trainer.batch_index == 4:
                raise KeyboardInterrupt

    first = make([ModelCheckpoint(tmp_path, monitor="train_loss"), CtrlC()])
    first.fit(TensorLoader(x, y, 32, shuffle=True))
    assert first.interrupted and load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    resumed = make()
    resumed.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    resumed.fit(TensorLoader(x, y, 32, shuffle=True))
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
