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
