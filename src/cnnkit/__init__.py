"""cnnkit: train, diagnose and use convolutional neural networks on images.

The top level is lazy (PEP 562): `import cnnkit` loads no torch; each name below is imported on first use, so
`cnnkit --help` answers at once. The verbs take everything after their first argument(s) as keywords:

    run = cnnkit.train(cfg)                      # or cnnkit.train(resume="runs/x")
    cnnkit.evaluate(run.run_dir, split="val")
    cnnkit.predict(run.run_dir, ["img.png"], top_k=3)
    r = cnnkit.load_run(run.run_dir)            # a Run: r.card, r.config, r.task, r.model, r.history
"""
from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from cnnkit.version import __version__

# name → (module, attribute); attribute None: the module itself
_LAZY: dict[str, tuple[str, str | None]] = {
    "train": ("cnnkit.api", "train"),
    "evaluate": ("cnnkit.api", "evaluate"),
    "test": ("cnnkit.api", "test"),
    "predict": ("cnnkit.api", "predict"),
    "load_run": ("cnnkit.runs.run", "load_run"),
    "Run": ("cnnkit.runs.run", "Run"),
    "api": ("cnnkit.api", None),
    "callbacks": ("cnnkit.engine.callbacks", None),
    "Trainer": ("cnnkit.engine.trainer", "Trainer"),
    "History": ("cnnkit.keras", "History"),
    "Model": ("cnnkit.keras", "Model"),
    "create_model": ("cnnkit.models.factory", "create_model"),
    "list_models": ("cnnkit.models.factory", "list_models"),
    "register_model": ("cnnkit.models.registry", "register_model"),
    "load_model": ("cnnkit.runs.folder", "load_model"),
    "Batch": ("cnnkit.tasks", "Batch"),
    "ClassificationTask": ("cnnkit.tasks", "ClassificationTask"),
    "Task": ("cnnkit.tasks", "Task"),
}

__all__ = ["train", "evaluate", "test", "predict", "load_run", "Run", "api", "callbacks", "Trainer", "History",
           "Model", "create_model", "list_models", "register_model", "load_model", "Batch", "ClassificationTask",
           "Task", "__version__"]

if _TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports these on first use
    from cnnkit import api
    from cnnkit.api import evaluate, predict, test, train
    from cnnkit.engine import callbacks
    from cnnkit.engine.trainer import Trainer
    from cnnkit.keras import History, Model
    from cnnkit.models.factory import create_model, list_models
    from cnnkit.models.registry import register_model
    from cnnkit.runs.folder import load_model
    from cnnkit.runs.run import Run, load_run
    from cnnkit.tasks import Batch, ClassificationTask, Task


def __getattr__(name: str) -> _Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'cnnkit' has no attribute {name!r}") from None
    module = _importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
