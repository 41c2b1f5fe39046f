"""The top-level Python surface: `import cnnkit` is lazy (no torch until a name is used), cnnkit.train /
evaluate / test / predict are cnnkit.api's verbs, and cnnkit.load_run(path) gives a Run object."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cnnkit
from cnnkit.errors import CnnkitError


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


def test_load_run_gives_a_run_with_card_config_split_history_and_a_lazy_model(run_dir: Path) -> None:
    import torch

    run = cnnkit.load_run(run_dir)
    assert isinstance(run, cnnkit.Run) and run.path == Path(run_dir)
    assert run.task == run.card.problem == "multiclass"
    assert run.card.architecture == "lenet5" and run.config.model.name == "lenet5"
    assert run.config.train.epochs == 1
    assert run.split == json.loads((run_dir / "split.json").read_text())
    assert [row["epoch"] for row in run.history] == [1]
    assert isinstance(run.history[0]["val_loss"], float)
    assert isinstance(run.diagnosis, dict)
    assert "model" not in vars(run)  # not loaded yet
    model = run.model
    assert not model.training and run.model is model
    c, h, w = run.card.input_size
    assert model(torch.zeros(2, c, h, w)).shape == (2, len(run.card.classes))
    with pytest.raises(AttributeError):
        run.path = Path("elsewhere")  # frozen
    assert "lenet5" in repr(run) and "multiclass" in repr(run)


def test_top_level_verbs_take_options_by_keyword(run_dir: Path) -> None:
    metrics = cnnkit.evaluate(run_dir, split="val", verdict=False)
    assert 0 <= metrics["accuracy"] <= 1 and "verdict" not in metrics


def test_load_run_of_a_missing_folder_or_file_is_a_one_line_error(tmp_path: Path, run_dir: Path) -> None:
    with pytest.raises(CnnkitError, match="run folder not found") as err:
        cnnkit.load_run(tmp_path / "nowhere")
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CnnkitError, match="has no model.pt") as err:
        cnnkit.load_run(empty)
    assert "\n" not in str(err.value)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model.pt").write_bytes((run_dir / "model.pt").read_bytes())
    with pytest.raises(CnnkitError, match="has no config.yaml"):
        cnnkit.load_run(partial)
