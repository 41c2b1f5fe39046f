"""The Keras-like façade: compile / fit / evaluate / predict / save on arrays."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit.data.builtin import digits
from cnnkit.errors import CnnkitError


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    src = digits()
    return src.arrays[:, 0].numpy(), src.labels


def test_fit_evaluate_predict(data, tmp_path) -> None:
    x, y = data
    model = cnnkit.Model("lenet5", num_classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], lr=2e-3)
    history = model.fit(x[:1500], y[:1500], epochs=6, batch_size=32, validation_split=0.2, verbose=0)
    assert history.epoch == list(range(6))
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    metrics = model.evaluate(x[1500:], y[1500:])
    probs = model.predict(x[1500:])
    assert probs.shape == (297, 10)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert metrics["accuracy"] == pytest.approx((probs.argmax(1) == y[1500:]).mean(), abs=1e-6)
    assert metrics["accuracy"] > 0.8  # chance is 0.1; these are writers never seen in training
    path = model.save(tmp_path / "keras-run")
    loaded, card = cnnkit.load_model(path.parent)
    assert card.mean == model.card.mean
    for a, b in zip(loaded.state_dict().values(), model.network.state_dict().values()):
        assert torch.equal(a, b.cpu())


def test_validation_split_holds_out_the_last_samples_like_keras(data) -> None:
    x, y = data
    model = cnnkit.Model("lenet5", num_classes=10)
    model.compile(lr=2e-3)
    history = model.fit(x[:200], y[:200], epochs=1, validation_split=0.25, verbose=0)
    val_acc = history.history["val_accuracy"][0]
    # after one epoch, re-evaluating on the last 50 samples gives the same number
    assert model.evaluate(x[150:200], y[150:200])["accuracy"] == pytest.approx(val_acc, abs=1e-6)


def test_class_weight_changes_the_loss(data) -> None:
    x, y = data
    losses = []
    for weights in (None, {0: 10.0}):
        model = cnnkit.Model("lenet5", num_classes=10)
        model.compile(lr=1e-3)
        torch.manual_seed(0)
        h = model.fit(x[:256], y[:256], epochs=1, class_weight=weights, verbose=0, shuffle=False)
        losses.append(h.history["loss"][0])
    assert losses[0] != losses[1]


def test_errors_are_clear(data) -> None:
    x, y = data
    model = cnnkit.Model("lenet5", num_classes=10)
    with pytest.raises(CnnkitError, match="compile"):
        model.fit(x, y)
    with pytest.raises(CnnkitError, match="did you mean 'adam'"):
        model.compile(optimizer="adamm")
    with pytest.raises(CnnkitError, match="metric"):
        model.compile(metrics=["auc"])
    model.compile()
    with pytest.raises(CnnkitError, match="labels"):
        model.fit(x[:10], y[:9])


def test_regression_and_multilabel_tasks(data) -> None:
    """Targets from the digits: regression on the mean ink (a linear function of the pixels), multilabel on
    (digit is even, digit > 4); the metrics agree with the predictions through their formulas."""
    x, y = data
    ink = x.reshape(len(x), -1).mean(1, keepdims=True) / 255 * 100  # (N, 1), in [0, 100]
    reg = cnnkit.Model("lenet5", "regression", num_classes=1, classes=["ink"])
    reg.compile(lr=2e-3)
    reg.fit(x[:1200], ink[:1200], epochs=4, batch_size=32, verbose=0)
    assert reg.card.target_mean is not None and not reg.card.bounded  # standardised, in the targets' units
    values = reg.predict(x[1200:])
    m = reg.evaluate(x[1200:], ink[1200:])
    r2 = 1 - ((values - ink[1200:]) ** 2).sum() / ((ink[1200:] - ink[1200:].mean()) ** 2).sum()
    assert values.shape == (597, 1) and m["r2"] == pytest.approx(r2, abs=1e-5) and m["r2"] > 0.8

    tags = np.stack([y % 2 == 0, y > 4], 1).astype(np.float32)  # (N, 2)
    ml = cnnkit.Model("lenet5", "multilabel", classes=["even", "big"])
    ml.compile(lr=2e-3)
    ml.fit(x[:1200], tags[:1200], epochs=4, batch_size=32, verbose=0)
    probs = ml.predict(x[1200:])
    assert probs.shape == (597, 2) and ((probs >= 0) & (probs <= 1)).all()
    m = ml.evaluate(x[1200:], tags[1200:])
    assert m["hamming_accuracy"] == pytest.approx(((probs >= 0.5) == tags[1200:]).mean(), abs=1e-6)
    assert m["map"] > 0.8


def test_binary_task_has_one_sigmoid_output(data) -> None:
    x, y = data
    model = cnnkit.Model("lenet5", "binary", classes=["odd", "even"])
    assert model.network(torch.zeros(2, 1, 32, 32)).shape == (2, 1)
    model.compile(lr=2e-3)
    model.fit(x[:600], (y[:600] % 2 == 0).astype(np.int64), epochs=2, verbose=0)
    probs = model.predict(x[600:700])
    assert probs.shape == (100, 2)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    with pytest.raises(CnnkitError, match="did you mean 'binary'"):
        cnnkit.Model("lenet5", "binari")


def _fit_one_epoch(model, data) -> None:
    x, y = data
    model.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)


def test_compile_passes_optimizer_options_by_keyword(data, monkeypatch) -> None:
    from cnnkit.engine.trainer import Trainer

    made = []
    real_init = Trainer.__init__
    monkeypatch.setattr(Trainer, "__init__", lambda self, task, opt, **kw: (made.append(opt),
                                                                          real_init(self, task, opt, **kw))[1])
    model = cnnkit.Model("lenet5", num_classes=10)
    model.compile(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    _fit_one_epoch(model, data)
    group = made[-1].param_groups[0]
    assert isinstance(made[-1], torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-4)
    model.compile(optimizer=torch.optim.RMSprop, lr=1e-3, momentum=0.5)  # a class
    _fit_one_epoch(model, data)
    assert isinstance(made[-1], torch.optim.RMSprop) and made[-1].param_groups[0]["momentum"] == 0.5
    mine = torch.optim.SGD(model.network.parameters(), lr=0.01)  # an optimiser made over the model
    model.compile(optimizer=mine)
    _fit_one_epoch(model, data)
    assert made[-1] is mine
    with pytest.raises(CnnkitError, match="optimizer 'adam' has no option 'momentum'"):
        model.compile(optimizer="adam", momentum=0.9)


def test_compile_schedule_counts_epochs_or_batches(data) -> None:
    model = cnnkit.Model("lenet5", num_classes=10)
    model.compile(optimizer="sgd", lr=0.1, schedule="step_decay", schedule_options={"step_size": 1, "gamma": 0.5})
    x, y = data
    history = model.fit(x[:64], y[:64], epochs=3, batch_size=16, verbose=0)
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.025])  # per epoch, the default
    model.compile(optimizer="sgd", lr=0.1, schedule="step_decay", schedule_interval="batch",
                  schedule_options={"step_size": 4, "gamma": 0.5})
    history = model.fit(x[:64], y[:64], epochs=2, batch_size=16, verbose=0)
    assert history.history["lr"] == pytest.approx([0.05, 0.025])  # 4 batches an epoch; read at the epoch's end
    with pytest.raises(CnnkitError, match="did you mean 'batch'"):
        model.compile(schedule="cosine", schedule_interval="batches")


def test_summary_prints_the_inspect_table(capsys) -> None:
    from cnnkit.diagnose.inspect import format_report, inspect_model

    model = cnnkit.Model("lenet5", num_classes=10, in_channels=1, image_size=32)
    text = model.summary()
    assert capsys.readouterr().out.strip() == text.strip()
    expected = format_report(inspect_model("lenet5", (1, 32, 32)))
    assert text.splitlines()[1:] == expected.splitlines()[1:]  # the first line names the model
    assert "61,706" in text or "61706" in text.replace(",", "")
    assert model.network.training  # left as it was


def test_save_as_safetensors(data, tmp_path) -> None:
    """Model.save("DIR/model.safetensors"): the card in its metadata, and `cnnkit.load_model(DIR)` reads it."""
    pytest.importorskip("safetensors")
    x, y = data
    model = cnnkit.Model("lenet5", num_classes=10)
    model.compile(lr=2e-3)
    model.fit(x[:64], y[:64], epochs=1, verbose=0)
    path = model.save(tmp_path / "k" / "model.safetensors")
    assert path == tmp_path / "k" / "model.safetensors" and sorted(p.name for p in path.parent.iterdir()) == [
        "model.safetensors"]
    loaded, card = cnnkit.load_model(path.parent)
    assert card == model.card
    for a, b in zip(loaded.state_dict().values(), model.network.state_dict().values()):
        assert torch.equal(a, b.cpu())


def test_compile_on_nan_stops_or_skips(data) -> None:
    """A learning rate of 10⁶ blows the loss up: fit stops in one line (Keras' TerminateOnNaN), or skips."""
    x, y = data
    model = cnnkit.Model("lenet5", num_classes=10)
    model.compile(optimizer="sgd", lr=1e6)
    with pytest.raises(CnnkitError, match=r"NaN or infinite at epoch 1, batch \d+"):
        model.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    model.compile(optimizer="sgd", lr=1e6, on_nan="skip")
    with pytest.warns(UserWarning, match="batch skipped, learning rate halved"), \
            pytest.raises(CnnkitError, match="batches in a row"):
        model.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    with pytest.raises(CnnkitError, match="unknown on_nan 'ignore'"):
        model.compile(optimizer="sgd", on_nan="ignore")
