"""cnnkit.engine.checkpoint: atomic writes (no temp file left, the old file kept on failure) and safe loading."""
from __future__ import annotations

import builtins

import pytest
import torch

from cnnkit.engine.checkpoint import CHECKPOINT_FIX, atomic_save, load_checkpoint
from cnnkit.errors import CnnkitError


def test_atomic_save_round_trips_and_leaves_no_temp_file(tmp_path) -> None:
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "history": [{"loss": 0.5}]}
    path = tmp_path / "deep" / "folder" / "last.pt"  # missing folders are made
    atomic_save(state, path)
    atomic_save({**state, "epoch": 4}, path)  # overwrites in place
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 4 and loaded["history"] == [{"loss": 0.5}]
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_a_failed_save_keeps_the_previous_file(tmp_path) -> None:
    path = tmp_path / "best.pt"
    atomic_save({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"epoch": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # the temp file is gone


def test_load_refuses_missing_and_foreign_files_in_one_line(tmp_path) -> None:
    with pytest.raises(CnnkitError, match="checkpoint not found: .*nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "notes.pt").write_text("this is not a checkpoint\nat all\n")
    with pytest.raises(CnnkitError, match=r"cannot read checkpoint .*notes\.pt: ") as info:
        load_checkpoint(tmp_path / "notes.pt")
    assert "\n" not in str(info.value)


class Pickled:
    """Any class: torch.save pickles it by reference, so loading it would run this module's code."""


def test_load_refuses_pickled_code(tmp_path) -> None:
    """weights_only=True: an object that is not tensors and plain containers is refused, not unpickled."""
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Pickled()}, tmp_path / "code.pt")
    with pytest.raises(CnnkitError, match=r"code\.pt is not a plain weights file \(it asks to run code: "
                                          r"tests\.engine\.test_checkpoint\.Pickled\)") as info:
        load_checkpoint(tmp_path / "code.pt")
    assert "\n" not in str(info.value)


class RunsCode:
    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):  # unpickling calls exec(code): a real malicious checkpoint
        return (builtins.exec, (self.code,))


def test_a_malicious_checkpoint_is_refused_in_one_line_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.zeros(2)}, "epoch": RunsCode(f"open({str(marker)!r}, 'w').write('x')")}, path)
    with pytest.raises(CnnkitError) as info:
        load_checkpoint(path)
    assert str(info.value) == (f"{path} is not a plain weights file (it asks to run code: builtins.exec); cnnkit "
                               f"never unpickles code — {CHECKPOINT_FIX}")
    assert not marker.exists()


@pytest.mark.parametrize("value", [torch.zeros(3), [1, 2], 7])
def test_a_file_that_holds_no_dict_is_one_line(tmp_path, value) -> None:
    torch.save(value, tmp_path / "odd.pt")
    with pytest.raises(CnnkitError, match=rf"odd\.pt holds a {type(value).__name__}, not a cnnkit checkpoint"):
        load_checkpoint(tmp_path / "odd.pt")
