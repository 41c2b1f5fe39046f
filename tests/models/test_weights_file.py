"""cnnkit.models.weights_file: a real malicious pickle is refused in one line and never runs; corrupt, truncated
or lying .pt and .safetensors files are one line each; safetensors round trips with its metadata."""
from __future__ import annotations

import builtins
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.weights_file import RESAVE, load_safetensors_file, load_torch_file, safetensors_bytes

pytest.importorskip("safetensors")


class RunsCode:
    """Unpickling this runs `code` (exec, or os.system): the classic malicious model file."""

    def __init__(self, code: str, call=builtins.exec):
        self.code, self.call = code, call

    def __reduce__(self):
        return (self.call, (self.code,))


def _marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text, text
    return text


@pytest.mark.parametrize("how", ["zip", "legacy"])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": RunsCode(_marker_code(marker))}, path,
               _use_new_zipfile_serialization=how == "zip")
    with pytest.raises(CnnkitError) as err:
        load_torch_file(path)
    assert _one_line(err) == (f"{path} is not a plain weights file (it asks to run code: builtins.exec); cnnkit "
                              f"never unpickles code — {RESAVE}")
    assert not marker.exists()


def test_os_system_is_named_by_its_module(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "w.pt"
    torch.save(RunsCode(f"touch {marker}", os.system), path)
    with pytest.raises(CnnkitError, match=r"is not a plain weights file \(it asks to run code: \w+\.system\)") as err:
        load_torch_file(path, "checkpoint", "train again")
    assert _one_line(err).endswith("cnnkit never unpickles code — train again")
    assert not marker.exists()


def test_a_plain_pickle_is_refused_without_running(tmp_path: Path) -> None:
    """pickle.dump (protocol 4 and 2), not torch.save: refused at its first instruction or global, never run."""
    marker = tmp_path / "pwned"
    for protocol in (2, 4):
        path = tmp_path / f"p{protocol}.pt"
        path.write_bytes(pickle.dumps(RunsCode(_marker_code(marker)), protocol=protocol))
        with pytest.raises(CnnkitError, match="not a plain weights file") as err:
            load_torch_file(path)
        _one_line(err)
    assert not marker.exists()


def test_plain_weights_load(tmp_path: Path) -> None:
    torch.save({"w": torch.arange(3.0), "epoch": 2, "names": ["a", "b"]}, tmp_path / "ok.pt")
    state = load_torch_file(tmp_path / "ok.pt")
    assert state["epoch"] == 2 and state["names"] == ["a", "b"] and torch.equal(state["w"], torch.arange(3.0))


@pytest.mark.parametrize("content,fragment", [
    (b"", "cannot read weight file"),
    (b"this is not a weights file\n", "cannot read weight file"),
    (b"PK\x03\x04 not really a zip", "cannot read weight file"),
])
def test_corrupt_pt_files_are_one_line(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CnnkitError, match=fragment) as err:
        load_torch_file(path)
    assert str(path) in _one_line(err)


def test_a_truncated_pt_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    torch.save({"w": torch.randn(100, 100)}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CnnkitError, match=r"cannot read weight file .*cut\.pt: .*\(not a torch file, or") as err:
        load_torch_file(path)
    assert "internal miniz error" not in _one_line(err)  # torch's boilerplate is cut after the first sentence


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="checkpoint not found: .*none.pt"):
        load_torch_file(tmp_path / "none.pt", "checkpoint")


# ---------------------------------------------------------------- safetensors

def test_safetensors_round_trip_with_metadata(tmp_path: Path) -> None:
    shared = torch.randn(4, 3)
    state = {"a": shared, "tied": shared, "t": torch.randn(3, 4).t(), "n": torch.tensor(7)}  # shared, strided
    path = tmp_path / "w.safetensors"
    path.write_bytes(safetensors_bytes(state, {"format": "pt", "note": json.dumps({"k": [1, 2]})}))
    tensors, metadata = load_safetensors_file(path)
    assert set(tensors) == set(state) and all(torch.equal(tensors[k], v) for k, v in state.items())
    assert metadata == {"format": "pt", "note": '{"k": [1, 2]}'}


def _valid(tmp_path: Path) -> bytes:
    return safetensors_bytes({"w": torch.arange(6.0)}, {"format": "pt"})


def _header(entries: dict) -> bytes:
    text = json.dumps(entries).encode()
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize("name,make", [
    ("truncated", lambda b: b[:-7]),
    ("huge header length", lambda b: struct.pack("<Q", 2**62) + b[8:]),
    ("header longer than the file", lambda b: struct.pack("<Q", len(b)) + b[8:]),
    ("tensor beyond the file", lambda b: _header({"w": {"dtype": "F32", "shape": [100000, 100000],
                                                        "data_offsets": [0, 40_000_000_000]}})),
    ("bad json", lambda b: struct.pack("<Q", 10) + b"{not json}"),
    ("empty", lambda b: b""),
    ("a torch file", lambda b: b"PK\x03\x04" + b"\0" * 60),
])
def test_broken_safetensors_files_are_one_line(tmp_path: Path, name: str, make) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(make(_valid(tmp_path)))
    with pytest.raises(CnnkitError, match=r"is not a valid safetensors file \(.*\): it is corrupt or truncated") as err:
        load_safetensors_file(path)
    assert _one_line(err).startswith(str(path))
