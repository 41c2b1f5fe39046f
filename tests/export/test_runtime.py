"""An exported file behind the verbs (cnnkit.export.runtime): `cnnkit export RUN` then `cnnkit predict FILE.onnx`
gives the JSON of `cnnkit predict RUN --precision fp32` for every classification problem type, from the CLI;
broken files and wrong requests fail in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from tests.recipes.test_classification import write_csv_data

from cnnkit import api
from cnnkit.cli.app import main
from cnnkit.errors import CnnkitError
from cnnkit.export.runtime import is_onnx, open_onnx


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> dict[str, Path]:
    return write_csv_data(tmp_path_factory.mktemp("csv"), n=48)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("digits") / "run"
    assert main(["-q", "train", "--data", "digits", "--model", "lenet5", "--epochs", "1", "--out", str(run)]) == 0
    return run


def cli(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def same_json(a: list[dict], b: list[dict], tol: float = 1e-5) -> None:
    """Equal structure and strings; numbers within `tol`."""
    assert json.dumps(a, sort_keys=True, default=str).count(":") == json.dumps(b, sort_keys=True).count(":")
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], list) and x[key] and isinstance(x[key][0], dict):
                assert [i.get("label") for i in x[key]] == [i.get("label") for i in y[key]]
                for i, j in zip(x[key], y[key]):
                    for k in i:
                        assert i[k] == pytest.approx(j[k], abs=tol) if isinstance(i[k], float) else i[k] == j[k]
            elif isinstance(x[key], dict):
                assert x[key].keys() == y[key].keys()
                assert all(x[key][k] == pytest.approx(y[key][k], abs=tol) for k in x[key])
            else:
                assert x[key] == y[key]


@pytest.mark.parametrize("problem", ["multiclass", "binary", "multilabel", "regression"])
def test_predict_on_the_exported_file_gives_the_runs_json(problem: str, csv_data, digits_run: Path, tmp_path: Path,
                                                          capsys) -> None:
    run = digits_run if problem == "multiclass" else tmp_path / problem
    if problem != "multiclass":
        cli(capsys, "-q", "train", "--data", str(csv_data[problem]), "--model", "lenet5", "--epochs", "1", "--out",
            str(run))
    out = cli(capsys, "export", str(run))
    assert out.strip().splitlines()[-1] == str(run / "model.onnx") and (run / "model.onnx").is_file()
    images = [str(p) for p in sorted(csv_data["binary"].parent.glob("*.png"))[:6]]
    want = json.loads(cli(capsys, "predict", str(run), *images, "--json", "--precision", "fp32"))
    got = json.loads(cli(capsys, "predict", str(run / "model.onnx"), *images, "--json"))
    assert len(got) == len(want) == 6
    same_json(got, want)
    model, card = open_onnx(run / "model.onnx")
    assert card == api.load_model(run)[1] and card.problem == problem


def test_the_out_flag_and_bad_requests_fail_in_one_line(digits_run: Path, tmp_path: Path, capsys) -> None:
    run = digits_run
    out = cli(capsys, "export", str(run), "--out", str(tmp_path / "x" / "lenet.onnx"))
    assert out.strip().splitlines()[-1] == str(tmp_path / "x" / "lenet.onnx")
    assert is_onnx(tmp_path / "x" / "lenet.onnx") and not is_onnx(run)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    bare = onnx.load(str(tmp_path / "x" / "lenet.onnx"))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    cases = [
        (["export", str(tmp_path / "nowhere")], "nowhere"),
        (["export", str(run), "--out", str(tmp_path / "m.txt")], "--out must end in .onnx"),
        (["predict", str(tmp_path / "broken.onnx"), str(image)], "is not a readable ONNX model"),
        (["predict", str(tmp_path / "bare.onnx"), str(image)], "has no cnnkit model card"),
        (["predict", str(tmp_path / "missing.onnx"), str(image)], "ONNX file not found"),
        (["predict", str(tmp_path / "x" / "lenet.onnx"), str(image), "--precision", "bf16"],
         "runs on onnxruntime in the precision it was exported in"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, (argv, err)
    with pytest.raises(CnnkitError, match="unknown export format 'tflite'"):
        api.export(run, format="tflite")


def test_openvino_runs_the_same_file_to_the_same_json(digits_run: Path, csv_data, capsys) -> None:
    pytest.importorskip("openvino")
    path = api.export(digits_run)
    images = [str(p) for p in sorted(csv_data["binary"].parent.glob("*.png"))[:8]]
    base = api.predict(path, images)
    same_json(api.predict(path, images, runtime="openvino", precision="fp32"), base, tol=1e-4)
    fast = api.predict(path, images, runtime="openvino")  # its own precision: bf16 where the CPU has AMX
    assert [r["predictions"][0]["label"] for r in fast] == [r["predictions"][0]["label"] for r in base]
    assert max(abs(a["predictions"][0]["probability"] - b["predictions"][0]["probability"])
               for a, b in zip(fast, base)) < 0.02
    model, _ = open_onnx(path, runtime="openvino", precision="fp32")
    assert "float32" in model.session.precision
    with pytest.raises(CnnkitError, match="runs an exported FILE.onnx"):
        api.predict(digits_run, images, runtime="openvino")
    with pytest.raises(CnnkitError, match="unknown runtime 'tvm'"):
        open_onnx(path, runtime="tvm")
