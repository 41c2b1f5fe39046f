"""Safe loading, across the package: "Loading a model file that is not plain weights fails with one line on stderr
and a non-zero exit, and runs no code."

- The source tree, parsed: every torch.load passes weights_only=True; no pickle, marshal, dill or joblib load,
  no np.load(allow_pickle=True), no yaml.load without a safe loader, no eval/exec, no allow-listing of globals.
- A real malicious pickle (unpickling it calls exec, which would write a marker file) as RUN/model.pt, as
  RUN/checkpoints/last.pt and as a --weights file, given to every entry point that loads one: each exits non-zero
  with one `error: ...` line and the marker never appears (predict and resume in real `python -m cnnkit`
  processes, the others in-process).
- `--save-format safetensors`: RUN/model.safetensors (card in its metadata), no model.pt; predict and evaluate
  give the same numbers as the .pt run of the same seed.
"""
from __future__ import annotations

import ast
import builtins
import json
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import REPO_ROOT, assert_one_line_error, run_cli

from cnnkit.engine.checkpoint import CHECKPOINT_FIX
from cnnkit.models.weights_file import RESAVE

PACKAGE = REPO_ROOT / "src" / "cnnkit"

# ---------------------------------------------------------------- the source tree

FORBIDDEN = {  # calls that unpickle, unmarshal or evaluate: never in cnnkit
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "marshal.load",
    "marshal.loads", "dill.load", "dill.loads", "joblib.load", "shelve.open", "pandas.read_pickle", "eval", "exec",
    "builtins.eval", "builtins.exec", "torch.jit.load", "torch.serialization.add_safe_globals",
    "torch.serialization.safe_globals", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all",
}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """`np.load` → "numpy.load", `load` (from torch import load) → "torch.load"; None for other callees."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def _aliases(tree: ast.AST) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str, where: str = "<source>") -> tuple[list[str], int]:
    """(the unsafe calls of `source` as "where:line: what", how many torch.load calls it makes)."""
    tree = ast.parse(source)
    aliases, problems, torch_loads = _aliases(tree), [], 0
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        name, kw = _dotted(call.func, aliases), {k.arg: k.value for k in call.keywords if k.arg}
        bad = None
        if name in ("torch.load", "torch.serialization.load"):
            torch_loads += 1
            bad = None if _is_true(kw.get("weights_only")) else "torch.load without weights_only=True"
        elif name in FORBIDDEN:
            bad = name
        elif name == "numpy.load" and not (isinstance(kw.get("allow_pickle"), ast.Constant)
                                           and kw["allow_pickle"].value is False) and "allow_pickle" in kw:
            bad = "np.load with allow_pickle"
        elif name in ("yaml.load", "yaml.load_all"):
            loader = kw.get("Loader", call.args[1] if len(call.args) > 1 else None)
            loader_name = _dotted(loader, aliases) if loader is not None else None
            if loader_name is None or loader_name.rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                bad = f"{name} without a safe Loader"
        if bad:
            problems.append(f"{where}:{call.lineno}: {bad}")
    return problems, torch_loads


def test_the_scanner_finds_each_unsafe_call_and_passes_safe_ones() -> None:
    bad = '''
import pickle, yaml, numpy as np, torch as T
from torch import load
from pickle import loads as l
T.load("a")
load("a", weights_only=False)
torch_load = T.load("b", map_location="cpu")
pickle.load(f); l(b"")
np.load("x.npy", allow_pickle=True)
yaml.load(text); yaml.load(text, Loader=yaml.FullLoader); yaml.unsafe_load(text)
eval("1"); exec("x = 1")
T.serialization.add_safe_globals([object])
'''
    problems, loads = unsafe_loads(bad)
    assert loads == 3 and len(problems) == 12, problems
    good = '''
import torch, yaml, numpy as np
torch.load("a", map_location="cpu", weights_only=True)
np.load("x.npz"); np.load("y.npy", allow_pickle=False)
yaml.safe_load(text); yaml.load(text, Loader=yaml.SafeLoader)
model.eval(); ast.literal_eval("1")
'''
    assert unsafe_loads(good) == ([], 1)


def test_cnnkit_never_unpickles_or_evaluates_code() -> None:
    """Every torch.load under src/cnnkit has weights_only=True, and nothing else unpickles or evaluates."""
    problems, loads = [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        found, n = unsafe_loads(path.read_text(), str(path.relative_to(REPO_ROOT)))
        problems += found
        loads += n
    assert not problems, "unsafe loading:\n" + "\n".join(problems)
    assert loads >= 2  # cnnkit.models.weights_file and the region cache: the scan saw them


# ---------------------------------------------------------------- two tiny runs of the same seed: .pt and .safetensors

TRAIN = ["-q", "train", "--data", "synthetic-shapes:n=48,size=32", "--model", "lenet5", "--epochs", "1",
         "--batch-size", "16", "--seed", "3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("safetensors")
    from cnnkit.cli.app import main

    root = tmp_path_factory.mktemp("safe_loading")
    out = {"pt": root / "pt", "safetensors": root / "st"}
    assert main([*TRAIN, "--out", str(out["pt"])]) == 0
    assert main([*TRAIN, "--out", str(out["safetensors"]), "--save-format", "safetensors"]) == 0
    image = root / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    return {**out, "image": image}


def test_a_safetensors_run_holds_model_safetensors_with_its_card(runs) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    pt, st = runs["pt"], runs["safetensors"]
    assert (st / "model.safetensors").is_file() and not (st / "model.pt").exists()
    assert (st / "checkpoints" / "last.pt").is_file() and (st / "checkpoints" / "best.pt").is_file()  # stay .pt
    saved = torch.load(pt / "model.pt", weights_only=True)
    tensors = load_file(str(st / "model.safetensors"))
    assert set(tensors) == set(saved["state_dict"])
    assert all(torch.equal(tensors[k], v) for k, v in saved["state_dict"].items())  # same seed, same weights
    with safe_open(str(st / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["cnnkit.card"]) == json.loads(json.dumps(saved["card"]))
    assert "save_format: safetensors" in (st / "config.yaml").read_text()


def test_predict_and_evaluate_give_the_same_numbers_from_either_format(runs, capsys) -> None:
    results = {}
    for fmt in ("pt", "safetensors"):
        code, predicted, _ = run_cli(capsys, "predict", str(runs[fmt]), str(runs["image"]), "--json")
        assert code == 0
        code, evaluated, _ = run_cli(capsys, "evaluate", str(runs[fmt]), "--json")
        assert code == 0
        results[fmt] = (json.loads(predicted), json.loads(evaluated))
    assert results["pt"] == results["safetensors"]
    assert results["pt"][1]["count"] > 0 and len(results["pt"][0]) == 1


# ---------------------------------------------------------------- a real malicious pickle at every entry point

class RunsCode:
    """Unpickling this calls exec(code): what a hostile model file does."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (builtins.exec, (self.code,))


def _malicious(path: Path, marker: Path, wrap=lambda payload: payload) -> Path:
    torch.save(wrap(RunsCode(f"open({str(marker)!r}, 'w').write('pwned')")), path)
    return path


def _refusal(path: Path, fix: str) -> str:
    return (f"error: {path} is not a plain weights file (it asks to run code: builtins.exec); cnnkit never unpickles "
            f"code — {fix}\n")


RESAVE_LINE = RESAVE  # "re-save it with torch.save(model.state_dict(), PATH) where it was made"
RESUME_LINE = CHECKPOINT_FIX


@pytest.fixture
def hostile(runs, tmp_path: Path) -> dict[str, Path]:
    """A copy of the .pt run whose model.pt and checkpoints/last.pt run code when unpickled, a bare hostile
    weights file, and the marker that code would write."""
    run = Path(shutil.copytree(runs["pt"], tmp_path / "hostile"))
    marker = tmp_path / "pwned"
    _malicious(run / "model.pt", marker, lambda p: {"state_dict": p, "card": {"architecture": "lenet5"}})
    _malicious(run / "checkpoints" / "last.pt", marker, lambda p: {"model": p, "epoch": 1})
    return {"run": run, "marker": marker, "weights": _malicious(tmp_path / "weights.pt", marker),
            "image": runs["image"]}


def _process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)


def test_predict_process_refuses_a_malicious_model_pt(hostile) -> None:
    done = _process("predict", str(hostile["run"]), str(hostile["image"]))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == _refusal(hostile["run"] / "model.pt", RESAVE_LINE)
    assert not hostile["marker"].exists()


def test_resume_process_refuses_a_malicious_checkpoint(hostile) -> None:
    done = _process("train", "--resume", str(hostile["run"]))
    assert done.returncode == 2
    assert done.stderr == _refusal(hostile["run"] / "checkpoints" / "last.pt", RESUME_LINE)
    assert not hostile["marker"].exists()


ENTRY_POINTS = {  # verb → its arguments (RUN: the hostile run folder, IMG: an image, OUT: a fresh folder)
    "evaluate": ["evaluate", "RUN"],
    "test": ["test", "RUN"],
    "predict": ["predict", "RUN", "IMG", "--json"],
    "export": ["export", "RUN", "--out", "OUT/model.onnx"],
    "embed": ["embed", "RUN", "IMG", "--out", "OUT/e.npy"],
    "inspect": ["inspect", "RUN"],
    "report": ["report", "RUN"],
    "diagnose": ["diagnose", "RUN", "--gradcam"],
    "prune": ["prune", "RUN", "--sparsity", "0.5", "--out", "OUT"],
    "serve": ["serve", "RUN", "--port", "0"],
}


@pytest.mark.parametrize("verb", list(ENTRY_POINTS))
def test_every_verb_refuses_a_malicious_model_pt(hostile, verb: str, tmp_path: Path, capsys, monkeypatch) -> None:
    import cnnkit.serve.server as server

    def no_port(*_):  # serve must fail on the model, before it takes a port (and never serves here)
        raise AssertionError("serve got past loading the model")

    monkeypatch.setattr(server, "bind", no_port)
    names = {"RUN": str(hostile["run"]), "IMG": str(hostile["image"]), "OUT": str(tmp_path / "out")}
    args = [names.get(a, a.replace("OUT", names["OUT"])) for a in ENTRY_POINTS[verb]]
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err)
    assert err == _refusal(hostile["run"] / "model.pt", RESAVE_LINE)
    assert not hostile["marker"].exists()


def test_train_weights_refuses_a_malicious_file(hostile, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, *TRAIN, "--weights", str(hostile["weights"]), "--out", str(tmp_path / "new"))
    assert_one_line_error(code, err)
    assert err == _refusal(hostile["weights"], RESAVE_LINE)
    assert not hostile["marker"].exists()


def test_resume_in_process_and_the_python_api_refuse_too(hostile, capsys) -> None:
    import cnnkit
    from cnnkit.errors import CnnkitError

    code, _, err = run_cli(capsys, "train", "--resume", str(hostile["run"]))
    assert err == _refusal(hostile["run"] / "checkpoints" / "last.pt", RESUME_LINE) and code == 2
    for load in (cnnkit.load_model, lambda run: cnnkit.load_run(run).model):
        with pytest.raises(CnnkitError, match="is not a plain weights file"):
            load(hostile["run"])
    assert not hostile["marker"].exists()


def test_broken_model_files_are_one_line_at_predict(runs, tmp_path: Path, capsys) -> None:
    """A truncated model.safetensors, one whose header claims more bytes than the file holds, a model.pt that
    holds a tensor: one line each."""
    st = Path(shutil.copytree(runs["safetensors"], tmp_path / "st"))
    data = (st / "model.safetensors").read_bytes()
    pt = Path(shutil.copytree(runs["pt"], tmp_path / "pt"))
    torch.save(torch.zeros(3), pt / "model.pt")
    cases = [(st, data[:-50], "is not a valid safetensors file"),
             (st, (2**40).to_bytes(8, "little") + data[8:], "is not a valid safetensors file"),
             (pt, None, "holds a Tensor, not a cnnkit model file")]
    for run, content, fragment in cases:
        if content is not None:
            (run / "model.safetensors").write_bytes(content)
        code, _, err = run_cli(capsys, "predict", str(run), str(runs["image"]))
        assert_one_line_error(code, err, fragment)


def test_the_card_survives_a_safetensors_round_trip_of_the_api(runs) -> None:
    import cnnkit

    _, card_pt = cnnkit.load_model(runs["pt"])
    _, card_st = cnnkit.load_model(runs["safetensors"])
    assert asdict(card_pt) == asdict(card_st)
