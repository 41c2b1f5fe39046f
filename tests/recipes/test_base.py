"""The recipe protocol's defaults: the options a recipe supports are the common ones plus its own, the optional
hooks change nothing, the required ones say they are missing; every registered recipe keeps the contract."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.config import Config
from cnnkit.errors import CnnkitError
from cnnkit.recipes import RECIPES
from cnnkit.recipes.base import COMMON_OPTIONS, Build, Context, Recipe
from cnnkit.runs.card import ModelCard
from cnnkit.tasks.classification import ClassificationTask


class Bare(Recipe):
    name = "bare"
    tasks = ("bare", "naked")
    options = frozenset({"train.mixup", "data.channels"})


class Lossless(Bare):
    excluded = frozenset({"train.loss"})


CARD = ModelCard("lenet5", "regression", ["x"], [1, 32, 32], [0.5], [0.5])


def _ctx() -> Context:
    return Context(Config(), source=None, split={"train": np.arange(3)}, card=CARD, run_dir=Path("r"), record={})


def test_supported_is_the_common_options_and_the_recipes_own_less_the_excluded() -> None:
    assert Bare().supported == COMMON_OPTIONS | {"train.mixup", "data.channels"}
    assert Recipe().supported == COMMON_OPTIONS
    assert "data.source" in COMMON_OPTIONS and "train.mixup" not in COMMON_OPTIONS
    assert Lossless().supported == (COMMON_OPTIONS - {"train.loss"}) | {"train.mixup", "data.channels"}


def test_the_optional_hooks_change_nothing() -> None:
    recipe, ctx = Bare(), _ctx()
    assert recipe.prepare(ctx) is ctx
    assert recipe.fit_directly(ctx) is None
    model = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recipe.start_model(ctx, model) is None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert recipe.check(Config()) is None
    assert recipe.measure_options(Path("r"), "val") == {}
    assert recipe.verdict_problem(CARD) == "regression"  # the card's own problem
    assert recipe.embeds is False and recipe.diagnoses == ()  # no `cnnkit embed`, only the learning curves


def test_augment_preview_is_refused_in_one_line_unless_the_recipe_draws_one(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match=r"augment-preview is not supported for a bare run \(--task bare\|naked\)") \
            as err:
        Bare().augment_preview("digits", tmp_path / "p.png", preset="light")
    assert "\n" not in str(err.value) and not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(("hook", "args"), [
    ("open_source", (Config(),)), ("new_split", (Config(), None)), ("read_split", (None, {}, "val")),
    ("card", (Config(), None, {})), ("metrics", (None, CARD, Config(), None)), ("predict", (None, CARD, [])),
])
def test_the_required_hooks_are_not_implemented(hook: str, args: tuple) -> None:
    with pytest.raises(NotImplementedError):
        getattr(Bare(), hook)(*args)


def test_build_defaults_to_every_parameter_and_no_callbacks() -> None:
    built = Build(ClassificationTask(torch.nn.Linear(2, 3)))
    assert built.param_groups is None and built.callbacks == [] and built.monitor is None
    assert Build(built.task).callbacks is not built.callbacks  # a fresh list each


def test_every_registered_recipe_supports_the_common_options_and_names_its_tasks() -> None:
    tasks = [t for r in RECIPES for t in r.tasks]
    assert len(tasks) == len(set(tasks))  # one recipe per task
    assert {"binary", "multiclass", "multilabel", "regression", "detect", "instance", "segment"} <= set(tasks)
    for recipe in RECIPES:
        assert recipe.supported == (COMMON_OPTIONS | recipe.options) - recipe.excluded, recipe.name
        assert all(option in recipe.unsupported_reason for option in recipe.excluded), recipe.name  # said why


def test_every_recipe_accepts_save_format() -> None:
    """--save-format safetensors is a common option: every task's run may write model.safetensors."""
    assert "train.save_format" in COMMON_OPTIONS
    for recipe in RECIPES:
        for task in recipe.tasks:
            cfg = Config(task=task)
            cfg.train.save_format = "safetensors"
            cfg.validate(supported=recipe.supported, reasons=recipe.unsupported_reason)
