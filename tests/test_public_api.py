"""The top-level Python surface: `import cnnkit` is lazy (no torch until a name is used), cnnkit.train /
evaluate / test / predict are cnnkit.api's verbs, and cnnkit.load_run is cnnkit.runs.run.load_run (its behaviour:
tests/runs/test_run.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cnnkit


def test_import_cnnkit_loads_no_torch_until_a_name_is_used() -> None:
    code = ("import sys, cnnkit; before = 'torch' in sys.modules; version = cnnkit.__version__; "
            "quiet = 'torch' in sys.modules; cnnkit.Trainer; print(before, quiet, 'torch' in sys.modules, version)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True", "0.1.0"]


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in cnnkit.__all__:
        assert getattr(cnnkit, name) is not None, name
    assert set(cnnkit.__all__) <= set(dir(cnnkit))
    for name in ("train", "evaluate", "test", "predict", "load_run", "Run", "api", "callbacks", "Trainer", "History",
                 "Model", "create_model", "list_models", "register_model", "load_model", "Batch",
                 "ClassificationTask", "Task", "__version__"):
        assert name in cnnkit.__all__, name
    from cnnkit import api
    from cnnkit.runs.run import Run, load_run

    assert (cnnkit.train, cnnkit.evaluate, cnnkit.test, cnnkit.predict) == (api.train, api.evaluate, api.test,
                                                                             api.predict)
    assert cnnkit.load_run is load_run and cnnkit.Run is Run and cnnkit.api is api
    from cnnkit.version import __version__

    assert cnnkit.__version__ == __version__


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        cnnkit.trian  # noqa: B018
    assert not hasattr(cnnkit, "problem")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from cnnkit.config import load_config

    out = tmp_path_factory.mktemp("public") / "r"
    cfg = load_config(overrides={"data": {"source": "digits"}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 1, "batch_size": 64}, "out": str(out)})
    return cnnkit.train(cfg).run_dir


def test_top_level_verbs_take_options_by_keyword(run_dir: Path) -> None:
    metrics = cnnkit.evaluate(run_dir, split="val", verdict=False)
    assert 0 <= metrics["accuracy"] <= 1 and "verdict" not in metrics
