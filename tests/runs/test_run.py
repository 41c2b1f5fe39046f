"""A run folder as one object: load_run gives the card, config, split record, history and diagnosis, and the model
on first use; a missing or broken file is a one-line error."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import cnnkit
from cnnkit.errors import CnnkitError
from cnnkit.runs.run import Run, load_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from cnnkit.config import load_config

    out = tmp_path_factory.mktemp("run") / "r"
    cfg = load_config(overrides={"data": {"source": "digits"}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 1, "batch_size": 64}, "out": str(out)})
    return cnnkit.train(cfg).run_dir


@pytest.fixture
def copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the trained run, to break its files."""
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


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


def test_history_reads_epochs_as_ints_numbers_as_floats_and_blanks_as_none(copy: Path) -> None:
    (copy / "history.csv").write_text("epoch,train_loss,val_loss,lr\n1,0.9,,0.01\n2.0,0.5,0.75,1e-3\n")
    rows = load_run(copy).history
    assert rows == [{"epoch": 1, "train_loss": 0.9, "val_loss": None, "lr": 0.01},
                    {"epoch": 2, "train_loss": 0.5, "val_loss": 0.75, "lr": 0.001}]
    assert isinstance(rows[1]["epoch"], int)
    (copy / "history.csv").write_text("epoch,train_loss\n1,lots\n")
    with pytest.raises(CnnkitError, match="history.csv: train_loss holds 'lots', not a number"):
        load_run(copy).history  # noqa: B018
    (copy / "history.csv").unlink()
    assert load_run(copy).history == []


def test_diagnosis_is_the_recorded_json_or_empty(copy: Path) -> None:
    recorded = {"verdict": {"label": "high bias", "bias": 0.3}, "alarm": None}
    (copy / "diagnosis.json").write_text(json.dumps(recorded))
    assert load_run(copy).diagnosis == recorded
    (copy / "diagnosis.json").write_text("{not json")
    with pytest.raises(CnnkitError, match="diagnosis.json is not valid JSON") as err:
        load_run(copy).diagnosis  # noqa: B018
    assert "\n" not in str(err.value)
    (copy / "diagnosis.json").unlink()
    assert load_run(copy).diagnosis == {}


@pytest.mark.parametrize(("name", "text", "message"), [
    ("config.yaml", "data: [unclosed\n", "config.yaml is not valid YAML"),
    ("split.json", "{", "split.json is not valid JSON"),
])
def test_a_broken_config_or_split_is_a_one_line_error(copy: Path, name: str, text: str, message: str) -> None:
    (copy / name).write_text(text)
    with pytest.raises(CnnkitError, match=message) as err:
        load_run(copy)
    assert "\n" not in str(err.value)


def test_a_model_pt_without_a_card_is_a_one_line_error(copy: Path) -> None:
    import torch

    torch.save({"state_dict": {}}, copy / "model.pt")
    with pytest.raises(CnnkitError, match="model.pt has no valid model card"):
        load_run(copy)


def test_load_run_accepts_a_string_and_its_model_matches_load_model(run_dir: Path) -> None:
    import torch

    from cnnkit.runs.folder import load_model

    run = load_run(str(run_dir))
    assert isinstance(run, Run) and run.path == run_dir
    model, card = load_model(run_dir)
    assert card == run.card
    for (key, a), b in zip(run.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), key
