"""What the layers learn, as pictures (cnnkit.diagnose.pictures, `cnnkit inspect --kernels / --feature-maps`): the
first conv layer's kernels as a grid, each tile min-max scaled and enlarged without blurring; any layer's feature
maps for one image, preprocessed as the run's card says; one-line errors."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnkit.cli.app import main
from cnnkit.data.images import read_image
from cnnkit.diagnose.pictures import feature_maps, first_conv, image_grid, save_feature_maps, tile_scale
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import load_model, save_model


def _one_line_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


# ---------------------------------------------------------------- kernels and feature maps

@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder with a LeNet-5 model.pt (no training needed to look at it)."""
    folder = tmp_path_factory.mktemp("inspect") / "run"
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    card = ModelCard("lenet5", "classify", [str(i) for i in range(10)], [1, 32, 32], [0.5], [0.25])
    save_model(folder / "model.pt", model, card)
    return folder


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
    return path


def _grid_size(n: int, h: int, w: int) -> tuple[int, int]:
    """make_grid's (width, height): ceil(sqrt(n)) columns, tiles enlarged by tile_scale, 2 px padding."""
    scale, cols = tile_scale(h, w), math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return cols * (w * scale + 2) + 2, rows * (h * scale + 2) + 2


def test_kernels_png_is_the_grid_of_c1(run: Path, capsys) -> None:
    assert main(["inspect", str(run), "--kernels"]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert out == run / "plots" / "kernels.png"
    with Image.open(out) as im:
        assert im.size == _grid_size(6, 5, 5) == (113, 76)  # 6 kernels of 5×5, ×7, 3 a row
        first = np.asarray(im.convert("L"))[2:2 + 35:7, 2:2 + 35:7]  # one pixel per kernel weight
    w = torch.load(run / "model.pt", weights_only=True)["state_dict"]["c1.weight"][0, 0]
    expected = ((w - w.min()) / (w.max() - w.min()) * 255).numpy()
    assert np.abs(first.astype(float) - expected).max() <= 1.5


def test_feature_maps_png(run: Path, image: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "maps.png"
    assert main(["inspect", str(run), "--feature-maps", str(image), "--layer", "c1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as im:
        assert im.size == _grid_size(6, 28, 28)


def test_feature_maps_errors(run: Path, image: Path, capsys) -> None:
    err = _one_line_error(capsys, "inspect", str(run), "--feature-maps", str(image), "--layer", "c11")
    assert "unknown layer 'c11'" in err and "did you mean" in err and "'c1'" in err
    assert "not feature maps" in _one_line_error(capsys, "inspect", str(run), "--feature-maps", str(image),
                                                 "--layer", "f6")


def test_image_grid_keeps_rgb_kernels() -> None:
    grid = image_grid(torch.randn(64, 3, 7, 7))
    assert grid.shape == (3, 8 * (35 + 2) + 2, 8 * (35 + 2) + 2)
    assert float(grid.min()) >= 0 and float(grid.max()) <= 1


def test_kernels_of_a_model_name_are_random_rgb(tmp_path: Path) -> None:
    from cnnkit import api

    with pytest.warns(UserWarning, match="weights are random"):
        out = api.inspect_kernels("resnet18", out=tmp_path / "k.png")
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size == _grid_size(64, 7, 7) == (298, 298)  # 8×8 kernels of 7×7, ×5


# ---------------------------------------------------------------- the pieces, in Python

@pytest.mark.parametrize(("h", "w", "scale"), [(5, 5, 7), (7, 7, 5), (3, 11, 3), (32, 32, 1), (64, 40, 1)])
def test_tile_scale_is_the_least_integer_reaching_32_pixels(h: int, w: int, scale: int) -> None:
    assert tile_scale(h, w) == scale
    assert max(h, w) * scale >= 32 and (scale == 1 or max(h, w) * (scale - 1) < 32)


def test_image_grid_scales_each_tile_on_its_own_and_enlarges_by_nearest_neighbour() -> None:
    tiles = torch.stack([torch.arange(16.0).view(1, 4, 4), -5 * torch.arange(16.0).view(1, 4, 4)])  # (2, 1, 4, 4)
    grid = image_grid(tiles)  # scale 8: 32×32 tiles, 2 a row, 2 px padding; grey expanded to RGB
    assert grid.shape == (3, 32 + 4, 2 * 32 + 6)
    for k, tile in enumerate(tiles):
        top, left = 2, 2 + k * (32 + 2)
        shown = grid[0, top:top + 32, left:left + 32]
        expected = (tile[0] - tile.min()) / (tile.max() - tile.min())  # min-max, per tile
        torch.testing.assert_close(shown, expected.repeat_interleave(8, 0).repeat_interleave(8, 1))


def test_first_conv_is_the_first_in_module_order_and_none_is_an_error() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 3))
    name, conv = first_conv(model)
    assert name == "1" and conv is model[1]
    with pytest.raises(CnnkitError, match="Sequential has no Conv2d layer"):
        first_conv(nn.Sequential(nn.Linear(2, 2)))


def test_feature_maps_are_the_layers_output_for_the_preprocessed_image(run: Path, image: Path) -> None:
    maps, folder = feature_maps(run, image, "c1")
    model, card = load_model(run)
    x = card.transform()(read_image(image, 1)).unsqueeze(0)  # the card's preprocessing: 32×32, (p − 0.5) / 0.25
    with torch.no_grad():
        torch.testing.assert_close(maps, model.c1(x)[0])
    assert folder == run and maps.shape == (6, 28, 28)


def test_save_feature_maps_keeps_the_first_max_maps(run: Path, image: Path, tmp_path: Path) -> None:
    out = save_feature_maps(run, image, "c3", out=tmp_path / "c3.png", max_maps=4)  # c3 has 16 maps of 10×10
    with Image.open(out) as im:
        assert im.size == _grid_size(4, 10, 10)
    default = save_feature_maps(run, image, "s2")
    assert default == run / "plots" / "feature_maps_s2.png" and default.is_file()


def test_an_unreadable_image_is_a_one_line_error(run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"no png")
    with pytest.raises(CnnkitError, match="cannot read image .*bad.png") as err:
        feature_maps(run, bad, "c1")
    assert "\n" not in str(err.value)


def test_a_model_name_gets_a_card_mapping_pixels_to_minus_1_1(image: Path) -> None:
    with pytest.warns(UserWarning, match="lenet5 is a model name, not a run folder: its weights are random"):
        maps, folder = feature_maps("lenet5", image, "c1")
    assert folder is None and maps.shape == (6, 28, 28)
