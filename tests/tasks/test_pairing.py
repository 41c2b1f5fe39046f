"""The notes' activation/loss table: the matching pairs pass silently, mismatched ones warn or fail with why."""
from __future__ import annotations

import warnings

import pytest

from cnnkit import losses
from cnnkit.errors import CnnkitError
from cnnkit.tasks.pairing import DEFAULT_LOSS, check_pairing, is_sparse, loss_input


@pytest.mark.parametrize("problem, loss", [
    ("binary", "binary_crossentropy"), ("multiclass", "cross_entropy"),
    ("multiclass", "categorical_crossentropy"), ("multilabel", "binary_crossentropy"), ("regression", "mse"),
    ("multiclass", "multiclass_svm"), ("multilabel", "focal"), ("regression", "huber"),
])
def test_matching_pairs_are_silent(problem, loss):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_pairing(problem, loss)


def test_regression_to_unit_interval_takes_binary_crossentropy():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_pairing("regression", "binary_crossentropy", bounded=True)  # the notes' "mse or binary_crossentropy"
    with pytest.raises(CnnkitError, match=r"needs targets in \[0, 1\]"):
        check_pairing("regression", "binary_crossentropy", bounded=False)


@pytest.mark.parametrize("problem, loss, why", [
    ("multiclass", "binary_crossentropy", "independent yes/no"),
    ("multilabel", "categorical_crossentropy", "exactly one label per image"),
    ("multiclass", "mse", "gradient vanishes when the model is confidently wrong"),
    ("binary", "mae", "the matching loss is binary_crossentropy"),
])
def test_mismatched_pairs_warn_and_say_why(problem, loss, why):
    with pytest.warns(UserWarning, match=why):
        check_pairing(problem, loss)


@pytest.mark.parametrize("problem, loss, why", [
    ("binary", "cross_entropy", "one sigmoid output"),
    ("binary", "categorical_hinge", "one sigmoid output"),
    ("multilabel", "sparse_categorical_crossentropy", "several labels"),
    ("regression", "cross_entropy", "is a classification loss"),
    ("regression", "hinge", "is a classification loss"),
])
def test_pairs_that_cannot_train_are_refused(problem, loss, why):
    with pytest.raises(CnnkitError, match=why):
        check_pairing(problem, loss)


def test_every_default_loss_exists_and_matches_its_problem():
    for problem, name in DEFAULT_LOSS.items():
        losses.get(name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_pairing(problem, name, bounded=False)


@pytest.mark.parametrize("name, expected", [
    ("binary_crossentropy", "logits"), ("cross_entropy", "logits"), ("focal", "logits"),
    ("hinge", "scores"), ("multiclass_svm", "scores"), ("categorical_hinge", "scores"),
    ("mse", "activated"), ("kl_divergence", "activated"), ("poisson", "activated"),
])
def test_how_each_loss_meets_the_outputs(name, expected):
    assert loss_input(losses.get(name)) == expected


def test_probability_losses_take_the_activation_and_torch_losses_the_logits():
    import torch

    assert loss_input(losses.get("binary_crossentropy", from_logits=False)) == "activated"
    assert loss_input(torch.nn.CrossEntropyLoss()) == "logits"
    assert is_sparse(losses.get("cross_entropy")) and not is_sparse(losses.get("categorical_crossentropy"))
