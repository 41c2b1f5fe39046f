"""--on-nan: a NaN or infinite loss (or gradient) stops the run before it touches the weights, naming the epoch and
batch, or is skipped with the learning rate halved; 5 bad batches in a row stop."""
from __future__ import annotations

import warnings

import pytest
import torch
from tests.conftest import assert_one_line_error, run_cli

from cnnkit.data.loader import TensorLoader
from cnnkit.engine import optimizers
from cnnkit.engine.callbacks import Callback, ModelCheckpoint
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classification import ClassificationTask


class PoisonedTask(ClassificationTask):
    """A classification task whose loss is NaN on the given (epoch, batch) pairs, 1-based; with `gradient`, the loss
    stays finite and only its gradient is NaN (d√x/dx at 0 is infinite, times 0)."""

    def __init__(self, model, bad: set[tuple[int, int]], gradient: bool = False):
        super().__init__(model)
        self.bad, self.gradient, self.trainer = bad, gradient, None

    def training_step(self, batch):
        out = super().training_step(batch)
        if (self.trainer.epoch + 1, self.trainer.batch_index + 1) in self.bad:
            weight = next(self.model.parameters())
            out.loss = out.loss + (weight.sum() * 0).abs().sqrt() if self.gradient else out.loss * float("nan")
        return out


class Snapshots(Callback):
    """The weights after every batch, keyed by (epoch, batch), 1-based."""

    def __init__(self):
        self.weights: dict[tuple[int, int], torch.Tensor] = {}

    def on_train_batch_end(self, trainer: Trainer) -> None:
        flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).clone()
        self.weights[(trainer.epoch + 1, trainer.batch_index + 1)] = flat


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (64,), generator=g)
    return torch.randn(64, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1), y


def _trainer(bad=(), on_nan="stop", callbacks=(), gradient=False, epochs=2) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    task = PoisonedTask(model, set(bad), gradient)
    trainer = Trainer(task, optimizers.get("sgd", model.parameters(), lr=0.1), epochs=epochs, callbacks=callbacks,
                      device="cpu", on_nan=on_nan)
    task.trainer = trainer
    return trainer


def test_stop_names_the_epoch_and_batch_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    x, y = _data()
    snaps = Snapshots()
    trainer = _trainer(bad={(2, 3)}, callbacks=[snaps, ModelCheckpoint(tmp_path)])
    with pytest.raises(CnnkitError, match=r"NaN or infinite at epoch 2, batch 3; the last good checkpoint "
                                          r"\(after epoch 1\) is kept") as err:
        trainer.fit(TensorLoader(x, y, 16, shuffle=True))
    assert "\n" not in str(err.value)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    now = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    assert torch.equal(now, snaps.weights[(2, 2)])  # the bad batch never reached the weights
    assert torch.isfinite(now).all()


def test_skip_drops_the_batch_halves_the_rate_and_warns() -> None:
    x, y = _data()
    snaps = Snapshots()
    trainer = _trainer(bad={(1, 3)}, on_nan="skip", callbacks=[snaps])
    with pytest.warns(UserWarning, match=r"NaN or infinite loss at epoch 1, batch 3: batch skipped, learning rate "
                                         r"halved to 0\.05"):
        history = trainer.fit(TensorLoader(x, y, 16, shuffle=True))
    assert torch.equal(snaps.weights[(1, 3)], snaps.weights[(1, 2)])  # no step from the skipped batch
    assert not torch.equal(snaps.weights[(1, 4)], snaps.weights[(1, 3)])  # the next batch trains again
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(row["train_loss"])) for row in history)


def test_clean_twin_matches_until_the_skip() -> None:
    """Up to the bad batch, the skipping run is the clean run, step for step."""
    x, y = _data()
    a, b = Snapshots(), Snapshots()
    _trainer(on_nan="skip", callbacks=[a]).fit(TensorLoader(x, y, 16, shuffle=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(bad={(2, 2)}, on_nan="skip", callbacks=[b]).fit(TensorLoader(x, y, 16, shuffle=True))
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in [(1, 1), (1, 4), (2, 1)])
    assert not torch.equal(a.weights[(2, 2)], b.weights[(2, 2)])


def test_five_bad_batches_in_a_row_stop_even_when_skipping() -> None:
    x, y = _data()
    trainer = _trainer(bad={(1, 2), (1, 3), (1, 4), (2, 1), (2, 2)}, on_nan="skip", epochs=3)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(CnnkitError, match=r"^5 batches in a row .*"
                                                                       r"\(up to epoch 2, batch 2\)"):
        warnings.simplefilter("always")
        trainer.fit(TensorLoader(x, y, 16))  # 4 batches an epoch: bad from epoch 1 batch 2 to epoch 2 batch 4
    assert len(caught) == 4
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 16)


def test_a_nan_gradient_of_a_finite_loss_is_skipped_too() -> None:
    x, y = _data()
    snaps = Snapshots()
    trainer = _trainer(bad={(1, 2)}, on_nan="skip", gradient=True, callbacks=[snaps], epochs=1)
    with pytest.warns(UserWarning, match="NaN or infinite gradient at epoch 1, batch 2"):
        trainer.fit(TensorLoader(x, y, 16))
    assert torch.equal(snaps.weights[(1, 2)], snaps.weights[(1, 1)])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_stop_is_the_default_and_a_bad_mode_is_refused() -> None:
    assert _trainer().on_nan == "stop"
    with pytest.raises(CnnkitError, match="on_nan must be 'stop' or 'skip'"):
        _trainer(on_nan="ignore")


def test_cli_on_nan_stop_and_skip(tmp_path, capsys) -> None:
    """A learning rate of 10⁶ blows the loss up within a few batches: one line, exit 2, from either mode."""
    base = ["train", "--data", "digits", "--model", "lenet5", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "1"]
    code, _, err = run_cli(capsys, *base, "--out", str(tmp_path / "stop"))
    assert_one_line_error(code, err, "NaN or infinite at epoch 1, batch", "--on-nan skip")
    code, _, err = run_cli(capsys, *base, "--on-nan", "skip", "--out", str(tmp_path / "skip"))
    assert code == 2 and "batches in a row" in err.strip().splitlines()[-1]
    assert "warning: NaN or infinite loss at epoch 1" in err
