"""The run folder: a free name (-2, -3, ...), model.pt with its card written and read back, one-line errors for a
folder that is no run, the test split's use counted, a split checked against the data, and named weights."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnkit.config import Config, save_config
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import (
    find_model_file,
    load_model,
    model_file,
    new_run_dir,
    open_model,
    open_run,
    open_split,
    record_test_use,
    run_file,
    save_model,
)


def _card(**fields) -> ModelCard:
    return ModelCard("lenet5", "multiclass", ["a", "b", "c"], [1, 32, 32], [0.4], [0.3], **fields)


def _saved_run(folder: Path, card: ModelCard | None = None) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    card = card or _card()
    model = card.build_model()
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder / "model.pt", model, card)
    return folder, model


def test_new_run_dir_takes_the_name_then_adds_2_3(tmp_path: Path) -> None:
    first = new_run_dir("lenet5-digits", tmp_path)
    assert first == tmp_path / "lenet5-digits" and not first.exists()
    first.mkdir()
    second = new_run_dir("lenet5-digits", tmp_path)
    assert second == tmp_path / "lenet5-digits-2"
    second.mkdir()
    assert new_run_dir("lenet5-digits", tmp_path) == tmp_path / "lenet5-digits-3"
    assert new_run_dir("other", tmp_path) == tmp_path / "other"


def test_save_and_load_model_round_trip(tmp_path: Path) -> None:
    card = _card(options={"activation": "gelu"}, transfer=None)
    run, model = _saved_run(tmp_path / "run", card)
    loaded, loaded_card = load_model(run)
    assert loaded_card == card
    assert not loaded.training and next(loaded.parameters()).device.type == "cpu"
    saved = model.state_dict()
    assert set(loaded.state_dict()) == set(saved)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved[key]), key
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    stored = torch.load(run / "model.pt", weights_only=True)
    assert stored["card"] == asdict(card)  # the card travels with the weights, as a plain dict


def test_a_partial_transfer_model_round_trips_through_its_card(tmp_path: Path) -> None:
    card = _card(transfer={"strategy": "partial", "keep_stages": 2})
    run, model = _saved_run(tmp_path / "partial", card)
    loaded, _ = load_model(run)
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_run_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="run folder not found") as err:
        run_file(tmp_path / "missing", "model.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(CnnkitError, match="has no model.pt; is it a cnnkit run folder") as err:
        run_file(tmp_path, "model.pt")
    assert "\n" not in str(err.value)
    (tmp_path / "model.pt").write_bytes(b"x")
    assert run_file(tmp_path, "model.pt") == tmp_path / "model.pt"


def test_a_model_pt_without_a_valid_card_is_a_one_line_error(tmp_path: Path) -> None:
    torch.save({"state_dict": create_model("lenet5", num_classes=2).state_dict(), "card": {"architecture": "lenet5"}},
               tmp_path / "model.pt")
    with pytest.raises(CnnkitError, match="no valid model card") as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_cards_model_are_a_one_line_error(tmp_path: Path) -> None:
    """A model.pt written by an older version of its architecture (other shapes) is refused in one line."""
    run, _ = _saved_run(tmp_path / "run")
    saved = torch.load(run / "model.pt", weights_only=True)
    saved["state_dict"]["f6.weight"] = torch.zeros(84, 100)  # an older layer of another width
    torch.save(saved, run / "model.pt")
    with pytest.raises(CnnkitError, match=r"does not fit the lenet5 that its card describes \(size mismatch") as err:
        load_model(run)
    assert "\n" not in str(err.value)


def test_record_test_use_counts_the_earlier_uses(tmp_path: Path) -> None:
    assert record_test_use(tmp_path, {"accuracy": 0.5}) == 0
    assert record_test_use(tmp_path, {"accuracy": 0.75, "loss": 0.6}) == 1
    assert record_test_use(tmp_path, {"accuracy": 0.8}) == 2
    lines = [json.loads(line) for line in (tmp_path / "test_log.jsonl").read_text().splitlines()]
    assert [row["accuracy"] for row in lines] == [0.5, 0.75, 0.8]
    assert lines[1]["loss"] == 0.6 and all("time" in row for row in lines)


def _split_run(tmp_path: Path, splits: dict, count: int) -> Path:
    run, _ = _saved_run(tmp_path / "split-run")
    save_config(Config(), run / "config.yaml")
    (run / "split.json").write_text(json.dumps({"count": count, "splits": splits}))
    return run


def test_open_run_reads_the_model_config_and_split(tmp_path: Path) -> None:
    run = _split_run(tmp_path, {"train": [0, 1], "val": [2], "test": [3]}, 4)
    model, card, cfg, record = open_run(run)
    assert card == _card() and not model.training
    assert cfg == yaml.safe_load((run / "config.yaml").read_text())
    assert record == {"count": 4, "splits": {"train": [0, 1], "val": [2], "test": [3]}}


def test_open_split_gives_the_indices_and_refuses_changed_data(tmp_path: Path) -> None:
    run = _split_run(tmp_path, {"train": [0, 1, 4], "val": [2], "test": []}, 5)
    data = list(range(5))
    *_, source, indices = open_split(run, "train", lambda cfg: data)
    assert source is data and indices.tolist() == [0, 1, 4] and indices.dtype == np.int64
    with pytest.raises(CnnkitError, match="unknown split 'dev'"):
        open_split(run, "dev", lambda cfg: data)
    with pytest.raises(CnnkitError, match="the test split of .* is empty"):
        open_split(run, "test", lambda cfg: data)
    with pytest.raises(CnnkitError, match="holds 6 images, but .* was split on 5; the data changed") as err:
        open_split(run, "val", lambda cfg: list(range(6)))
    assert "\n" not in str(err.value)


def test_open_model_of_a_run_folder_or_a_misspelt_name(tmp_path: Path) -> None:
    run, model = _saved_run(tmp_path / "run")
    loaded, card = open_model(run)
    assert card == _card()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(CnnkitError, match="no run folder or pretrained weights called 'resnet18.imagenett'; "
                                          "did you mean 'resnet18.imagenet'") as err:
        open_model("resnet18.imagenett")
    assert "\n" not in str(err.value)
    with pytest.raises(CnnkitError, match="choose one of: efficientnet_lite0.imagenet"):
        open_model(str(tmp_path / "no-such-run"))


# ---------------------------------------------------------------- model.safetensors, and files that are no weights

def test_save_format_safetensors_round_trips_weights_and_card(tmp_path: Path) -> None:
    """--save-format safetensors: RUN/model.safetensors (the card as JSON in its metadata), no model.pt; the same
    model comes back, and safetensors itself reads the file."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from safetensors import safe_open

    card = _card(options={"activation": "gelu"}, transfer=None)
    run, model = _saved_run(tmp_path / "run", card)  # model.pt first: writing the other format removes it
    written = save_model(run / "model.pt", model, card, "safetensors")
    assert written == run / "model.safetensors" and sorted(p.name for p in run.iterdir()) == ["model.safetensors"]
    loaded, loaded_card = load_model(run)
    assert loaded_card == card and model_file(run) == written
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    plain = safetensors_torch.load_file(str(written))
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items()) and set(plain) == set(
        model.state_dict())
    with safe_open(str(written), "pt") as f:
        assert json.loads(f.metadata()["cnnkit.card"]) == asdict(card) and f.metadata()["format"] == "pt"
    save_model(run / "model.pt", model, card, "pt")  # and back: the stale model.safetensors goes
    assert sorted(p.name for p in run.iterdir()) == ["model.pt"]


def test_model_safetensors_is_preferred_where_both_are_present(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    run, _ = _saved_run(tmp_path / "run", _card(resize="pad"))
    other = tmp_path / "other"
    save_model(other / "model.safetensors", _card().build_model(), _card())
    (run / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    assert model_file(run) == run / "model.safetensors" and find_model_file(run) == run / "model.safetensors"
    assert load_model(run)[1].resize == "resize"  # the card of model.safetensors, not model.pt's
    assert find_model_file(tmp_path) is None


def test_an_unknown_save_format_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match=r"unknown --save-format 'onnx'; choose one of: pt, safetensors"):
        save_model(tmp_path / "model.pt", _card().build_model(), _card(), "onnx")


def test_a_folder_without_a_model_file_names_both(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match=r"has no model.pt \(nor model.safetensors\); is it a cnnkit run folder"):
        load_model(tmp_path)


def test_a_malicious_model_pt_is_refused_in_one_line_and_never_runs(tmp_path: Path) -> None:
    import builtins

    class RunsCode:
        def __reduce__(self):
            return (builtins.exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')",))

    torch.save({"state_dict": RunsCode(), "card": asdict(_card())}, tmp_path / "model.pt")
    with pytest.raises(CnnkitError) as err:
        load_model(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'model.pt'} is not a plain weights file (it asks to run code: "
                                     "builtins.exec); cnnkit never unpickles code — re-save it with torch.save(")
    assert "\n" not in str(err.value) and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("saved,message", [
    (torch.zeros(3), "holds a Tensor, not a cnnkit model file"),
    ({"card": asdict(_card()), "state_dict": [1, 2]}, "holds no state_dict"),
    ({"card": "lenet5", "state_dict": {}}, "has no valid model card"),
])
def test_a_model_pt_of_the_wrong_shape_is_one_line(tmp_path: Path, saved, message: str) -> None:
    torch.save(saved, tmp_path / "model.pt")
    with pytest.raises(CnnkitError, match=message) as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value)


def test_a_broken_model_safetensors_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    from cnnkit.models.weights_file import safetensors_bytes

    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(_card().build_model().state_dict(), {"format": "pt"}))  # no card
    with pytest.raises(CnnkitError, match=r"model.safetensors has no valid model card \(no JSON cnnkit.card"):
        load_model(tmp_path)
    save_model(path, _card().build_model(), _card())
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(CnnkitError, match="is not a valid safetensors file .*: it is corrupt or truncated") as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value)
