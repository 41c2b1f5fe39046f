"""Transfer learning in a classification run: "partial" recorded in the card (the saved model is the truncated one),
"auto" resolved from a quick linear probe into a named strategy in the config, when the head starts as a probe,
and the strategy's plan for a new model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.config import load_config
from cnnkit.data.builtin import open_source
from cnnkit.data.sources import problem_source
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.recipes.base import Context
from cnnkit.recipes.transfer import auto_strategy, settle_strategy, transfer_plan, wants_probe_head
from cnnkit.runs.card import ModelCard

CARD = ModelCard("lenet5", "multiclass", ["dark", "light"], [1, 32, 32], [0.5], [0.5])


def _cfg(source: str = "digits", **train):
    return load_config(overrides={"task": "multiclass", "model": {"name": "lenet5"}, "data": {"source": source},
                                  "train": train})


def _ctx(cfg, source=None, split=None, card: ModelCard = CARD, state: dict | None = None) -> Context:
    return Context(cfg, source, split or {"train": np.arange(4)}, card, Path("run"), {}, state=state)


def test_partial_is_recorded_in_the_card_so_predict_rebuilds_the_truncated_model() -> None:
    ctx = settle_strategy(_ctx(_cfg(strategy="partial", keep_stages=2)))
    assert ctx.card.transfer == {"strategy": "partial", "keep_stages": 2}
    assert CARD.transfer is None  # a new card: the one given is untouched
    model = ctx.card.build_model()
    assert type(model).__name__ == "PartialNet" and list(model.body.layers) == ["c1", "act1", "s2", "c3", "act3", "s4"]


@pytest.mark.parametrize("strategy", [None, "fine-tune", "head-only", "feature-extractor", "linear-probe"])
def test_other_strategies_leave_the_card_as_it_is(strategy: str | None) -> None:
    ctx = settle_strategy(_ctx(_cfg(strategy=strategy)))
    assert ctx.card is CARD and ctx.cfg.train.strategy == strategy


def _dark_and_light(folder: Path) -> Path:
    """Two classes any features tell apart: black and white pictures."""
    for cls, value in (("dark", 0), ("light", 255)):
        (folder / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((32, 32), value, dtype=np.uint8)).save(folder / cls / f"{i}.png")
    return folder


def test_auto_on_a_small_easy_dataset_chooses_the_linear_probe(tmp_path: Path) -> None:
    folder = _dark_and_light(tmp_path / "data")
    cfg = _cfg(str(folder), strategy="auto")
    _, source = problem_source("multiclass", open_source(str(folder)))
    ctx = settle_strategy(_ctx(cfg, source, {"train": np.arange(12)}))
    # 12 training images (< 1000: small), a probe separates the classes perfectly (similar): a linear probe
    assert ctx.cfg.train.strategy == "linear-probe" and ctx.cfg.train.keep_stages is None
    assert ctx.card.transfer is None


def test_auto_is_not_chosen_again_when_a_run_resumes() -> None:
    ctx = settle_strategy(_ctx(_cfg(strategy="auto"), state={"epoch": 1}))
    assert ctx.cfg.train.strategy == "auto" and ctx.card is CARD


def test_auto_needs_classes() -> None:
    card = ModelCard("lenet5", "regression", ["x"], [1, 32, 32], [0.5], [0.5])
    with pytest.raises(CnnkitError, match="--strategy auto estimates similarity with a classifier") as err:
        auto_strategy(_cfg(strategy="auto"), None, {"train": np.arange(3)}, card)
    assert "\n" not in str(err.value)


def test_the_head_starts_as_a_probe_when_asked_or_fine_tuning_pretrained_weights_on_classes() -> None:
    assert wants_probe_head(_cfg(head_init="probe"), CARD)
    assert not wants_probe_head(_cfg(head_init="random", strategy="fine-tune"), CARD)
    assert not wants_probe_head(_cfg(strategy="fine-tune"), CARD)  # auto, but random weights: nothing to probe
    pretrained = load_config(overrides={"task": "multiclass", "model": {"name": "lenet5", "weights": "w.pt"},
                                        "train": {"strategy": "fine-tune"}})
    assert wants_probe_head(pretrained, CARD)
    regression = ModelCard("lenet5", "regression", ["x"], [1, 32, 32], [0.5], [0.5])
    assert not wants_probe_head(pretrained, regression)


def test_transfer_plan_freezes_as_the_strategy_says() -> None:
    model = create_model("lenet5", num_classes=2)
    assert transfer_plan(_cfg(), CARD, model) is None  # no strategy: no plan, every weight trains
    plan = transfer_plan(_cfg(strategy="head-only"), CARD, model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"output.weight", "output.bias"}
    assert plan.trainable == sum(p.numel() for p in model.output.parameters())
