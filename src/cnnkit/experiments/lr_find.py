"""`cnnkit lr-find`: the learning-rate range test (cnnkit.engine.lr_find) on the run a config describes."""
from __future__ import annotations

from pathlib import Path

from cnnkit.config import Config
from cnnkit.engine.lr_find import LRFindResult, lr_find
from cnnkit.engine.trainer import seed_everything
from cnnkit.recipes import recipe_for
from cnnkit.recipes.runner import make_trainer, start


def lr_find_for_config(cfg: Config, steps: int = 100, out: str | Path | None = None, **options) -> LRFindResult:
    """The range test for the model, loss, optimiser and training data that `cnnkit train` would use with `cfg`
    (training split only, with its augmentation); writes the plot to `out` when given. `options` go to
    `lr_find` (start_lr, end_lr, smooth, diverge). Nothing is written to a run folder."""
    recipe = recipe_for(cfg.task)
    cfg.validate(supported=recipe.supported, reasons=recipe.unsupported_reason)
    recipe.check(cfg)
    ctx = start(recipe, cfg)
    loader = recipe.loader(cfg, ctx.source, ctx.split["train"], ctx.card, train=True)
    seed_everything(cfg.train.seed)  # the model starts as `cnnkit train` would start it
    built = recipe.build(ctx, recipe.model(cfg, ctx.card, fresh=True))
    # the run folder is only used by callbacks during fit, which never runs here: nothing is written
    trainer = make_trainer(cfg, built, len(loader), ctx.run_dir)
    result = lr_find(trainer.task, trainer.optimizer, loader, steps=steps, device=trainer.device, **options)
    if out is not None:
        result.plot(out)
    return result
