"""`cnnkit lr-find` on the run a config describes: the range test on the model, loss, optimiser and training data
that `cnnkit train` would use, its plot, and nothing written to a run folder."""
from __future__ import annotations

import pytest

from cnnkit.engine.lr_find import LRFindResult
from cnnkit.errors import CnnkitError
from cnnkit.experiments.lr_find import lr_find_for_config


def test_digits_lenet_adam_suggestion_and_plot(tmp_path) -> None:
    """A real small problem, built as `cnnkit train` builds it (digits, LeNet-5, Adam)."""
    from cnnkit.api import demo_config

    cfg = demo_config()
    cfg.train.device = "cpu"
    out = tmp_path / "plots" / "lr_find.png"
    res = lr_find_for_config(cfg, steps=80, out=out)
    assert isinstance(res, LRFindResult)
    assert 1e-5 < res.suggestion < 1
    assert res.losses[-1] > 1.15 * min(res.losses)  # Adam at lr → 10: the smoothed loss climbs past its minimum
    assert min(res.losses) < res.losses[0]
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.csv")) and not (tmp_path / "checkpoints").exists()


def test_options_the_task_does_not_read_are_refused_before_any_step(tmp_path) -> None:
    from cnnkit.config import load_config

    cfg = load_config(overrides={"task": "segment", "data": {"source": "synthetic-shapes:n=20"},
                                 "model": {"name": "unet"}, "train": {"mixup": 0.2}, "out": str(tmp_path / "r")})
    with pytest.raises(CnnkitError, match="mixup") as err:
        lr_find_for_config(cfg, steps=5)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()
