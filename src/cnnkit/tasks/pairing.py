"""The notes' table of last-layer activation and loss per problem type, and what to say when a pair is wrong.

| problem                      | last layer | loss                        |
|------------------------------|------------|-----------------------------|
| binary                       | sigmoid    | binary_crossentropy         |
| multiclass, single label     | softmax    | categorical_crossentropy    |
| multilabel                   | sigmoid    | binary_crossentropy         |
| regression, arbitrary values | none       | mse                         |
| regression, values in [0, 1] | sigmoid    | mse or binary_crossentropy  |

cnnkit models end in raw scores; the task applies the activation. Losses meet the outputs in one of three ways:
the cross-entropies and focal take the raw scores (`from_logits=True`, stabler than log of a softmax), the
margin losses (hinges, multiclass SVM) take raw scores by definition, and every other loss compares the
activated outputs (probabilities, or values) with the targets.
"""
from __future__ import annotations

import warnings

from torch import nn

from cnnkit.errors import CnnkitError

DEFAULT_LOSS = {"binary": "binary_crossentropy", "multiclass": "cross_entropy",
                "multilabel": "binary_crossentropy", "regression": "mse"}
SPARSE_LOSSES = {"sparse_categorical_crossentropy", "cross_entropy", "multiclass_svm"}  # integer class targets
SCORE_LOSSES = {"hinge", "squared_hinge", "categorical_hinge", "multiclass_svm"}  # margins on raw scores
SOFTMAX_LOSSES = {"categorical_crossentropy", "sparse_categorical_crossentropy", "cross_entropy",
                  "categorical_hinge", "multiclass_svm", "kl_divergence"}  # one class out of K
REGRESSION_LOSSES = {"mse", "mean_squared_error", "mae", "mape", "msle", "huber", "log_cosh", "poisson",
                     "cosine_similarity"}


def loss_input(loss: nn.Module) -> str:
    """'logits' (raw scores into a from_logits loss or a plain torch loss), 'scores' (margin losses) or
    'activated' (softmax/sigmoid/identity outputs)."""
    from cnnkit.losses.core import Loss

    if not isinstance(loss, Loss):
        return "logits"  # nn.CrossEntropyLoss and friends: the PyTorch habit
    from_logits = getattr(loss, "from_logits", None)
    if from_logits is not None:
        return "logits" if from_logits else "activated"
    return "scores" if loss.name in SCORE_LOSSES else "activated"


def is_sparse(loss: nn.Module) -> bool:
    """Whether the loss takes integer class indices rather than one-hot rows."""
    from cnnkit.losses.core import Loss

    return not isinstance(loss, Loss) or loss.name in SPARSE_LOSSES or loss.name == "focal"


def check_pairing(problem: str, loss: str, bounded: bool = False) -> None:
    """Warn about a pair that trains badly and say why; refuse a pair that cannot train at all."""
    why = _refusal(problem, loss, bounded)
    if why:
        raise CnnkitError(why)
    why = _warning(problem, loss)
    if why:
        warnings.warn(why, UserWarning, stacklevel=3)


def _refusal(problem: str, loss: str, bounded: bool) -> str | None:
    if problem == "binary" and loss in SOFTMAX_LOSSES:
        return (f"--loss {loss} needs one score per class, but a binary task has one sigmoid output (a softmax "
                "over one output is always 1, so the loss is constant); use binary_crossentropy, or --task "
                "multiclass for a softmax over the two classes")
    if problem == "multilabel" and loss in SPARSE_LOSSES:
        return (f"--loss {loss} takes one class index per image, but multilabel images have several labels; "
                "use binary_crossentropy (a sigmoid per label)")
    if problem == "regression" and loss not in REGRESSION_LOSSES:
        if loss == "binary_crossentropy" and bounded:
            return None
        hint = "targets in [0, 1]" if loss == "binary_crossentropy" else "class labels"
        return (f"--loss {loss} is a classification loss and needs {hint}; regression uses mse (the default), "
                "mae, huber, log_cosh, msle, mape or poisson")
    return None


def _warning(problem: str, loss: str) -> str | None:
    if problem == "multiclass" and loss == "binary_crossentropy":
        return ("binary_crossentropy on a softmax output scores each class as an independent yes/no, which is "
                "not what a softmax models; for one class per image use cross_entropy (softmax + cross-entropy), "
                "for several labels per image use --task multilabel (sigmoid + binary_crossentropy)")
    if problem == "multilabel" and loss in SOFTMAX_LOSSES:
        return (f"{loss} assumes exactly one label per image (a softmax over the labels), but multilabel images "
                "can have several or none; binary_crossentropy (a sigmoid per label) is the matching loss")
    if problem in ("binary", "multiclass", "multilabel") and loss in REGRESSION_LOSSES:
        activation = "softmax" if problem == "multiclass" else "sigmoid"
        return (f"{loss} on {activation} probabilities learns slowly: its gradient vanishes when the model is "
                f"confidently wrong, where cross-entropy's does not; the matching loss is {DEFAULT_LOSS[problem]}")
    return None
