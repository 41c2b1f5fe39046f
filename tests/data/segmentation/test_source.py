"""Segmentation sources: every layout gives (uint8 image, int64 class mask) pairs; every mistake is one line."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.segmentation.source import COLOUR_TOLERANCE, open_segmentation_source
from cnnkit.errors import CnnkitError


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)
    return path


def _index_folder(root: Path, n: int = 3, h: int = 12, w: int = 16, palette: str | None = None) -> Path:
    """images/i.jpg + masks/i.png with classes 0..2 in bands and a row of ignore (255) pixels."""
    rng = np.random.default_rng(0)
    for i in range(n):
        _save(root / "images" / f"{i:03d}.jpg", rng.integers(0, 256, (h, w, 3)))
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[:, w // 3:] = 1
        mask[:, 2 * w // 3:] = 2
        mask[0] = 255
        _save(root / "masks" / f"{i:03d}.png", mask)
    if palette is not None:
        (root / "palette.yaml").write_text(palette)
    return root


def _one_line_error(spec: str, *parts: str) -> str:
    with pytest.raises(CnnkitError) as info:
        source = open_segmentation_source(spec)
        for i in range(len(source)):
            source.read(i)
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


def test_index_masks_with_palette_yaml_keep_classes_and_ignore(tmp_path: Path) -> None:
    root = _index_folder(tmp_path / "d", palette="classes:\n  - name: sky\n  - name: road\n  - car\n")
    source = open_segmentation_source(str(root))
    assert source.classes == ["sky", "road", "car"] and len(source.palette) == 3 and source.ignore_index == 255
    assert len(source) == 3 and source.presplit == {} and source.path(0).name == "000.jpg"
    image, mask = source.read(1)
    assert image.shape == (3, 12, 16) and image.dtype == torch.uint8 and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) == {0, 1, 2, 255} and (mask[0] == 255).all()


def test_index_masks_without_palette_name_classes_by_value(tmp_path: Path) -> None:
    source = open_segmentation_source(str(_index_folder(tmp_path / "d")))
    assert source.classes == ["class_0", "class_1", "class_2"]


def test_index_value_above_the_classes_is_a_one_line_error(tmp_path: Path) -> None:
    root = _index_folder(tmp_path / "d", palette="classes: [a, b]\n")
    _one_line_error(str(root), "000.png", "mask value 2", "palette.yaml")


def test_binary_0_255_masks_read_as_foreground(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _save(root / "images" / "a.png", np.zeros((8, 8, 3)))
    mask = np.zeros((8, 8))
    mask[2:5, 2:5] = 255
    _save(root / "labels" / "a_mask.png", mask)  # labels/ and the _mask suffix both pair
    source = open_segmentation_source(str(root))
    assert source.classes == ["background", "foreground"]
    assert int(source.read(0)[1].sum()) == 9


def _colour_folder(root: Path, palette: str | None, colours: list[tuple[int, int, int]]) -> Path:
    for i in range(2):
        _save(root / "images" / f"{i}.png", np.full((6, 9, 3), 100))
        label = np.zeros((6, 9, 3), dtype=np.uint8)
        for j, c in enumerate(colours):
            label[:, 3 * j:3 * j + 3] = c
        _save(root / "labels" / f"{i}.png", label)
    if palette is not None:
        (root / "palette.yaml").write_text(palette)
    return root


PALETTE = """classes:
  - {name: soil, color: [0, 0, 0]}
  - {name: plant, color: [0, 0, 255]}
ignore_color: [255, 255, 255]
ignore_index: 250
"""


def test_colour_masks_map_through_the_palette_nearest_within_tolerance(tmp_path: Path) -> None:
    near_blue = (10, 3, 255 - COLOUR_TOLERANCE)
    root = _colour_folder(tmp_path / "d", PALETTE, [(0, 0, 0), near_blue, (255, 255, 255)])
    source = open_segmentation_source(str(root))
    assert source.classes == ["soil", "plant"] and source.palette == [(0, 0, 0), (0, 0, 255)]
    assert source.ignore_index == 250
    mask = source.read(0)[1]
    assert mask[0].tolist() == [0] * 3 + [1] * 3 + [250] * 3


def test_unknown_colour_names_the_colour_and_the_file(tmp_path: Path) -> None:
    root = _colour_folder(tmp_path / "d", PALETTE, [(0, 0, 0), (0, 200, 0)])
    _one_line_error(str(root), "0.png", "(0, 200, 0)", "palette")


def test_black_green_red_labels_default_to_soil_crop_weed(tmp_path: Path) -> None:
    root = _colour_folder(tmp_path / "d", None, [(0, 0, 0), (0, 255, 0), (255, 0, 0)])
    source = open_segmentation_source(str(root))
    assert source.classes == ["soil", "crop", "weed"]
    assert source.read(1)[1][0].tolist() == [0] * 3 + [1] * 3 + [2] * 3


def test_other_colours_without_palette_yaml_ask_for_one(tmp_path: Path) -> None:
    root = _colour_folder(tmp_path / "d", None, [(0, 0, 0), (0, 0, 255)])
    _one_line_error(str(root), "palette.yaml", "(0, 0, 255)")


def test_train_val_test_folders_give_presplit(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        _index_folder(tmp_path / "d" / split, n=n)
    (tmp_path / "d" / "palette.yaml").write_text("classes: [a, b, c]\n")
    source = open_segmentation_source(str(tmp_path / "d"))
    assert len(source) == 6 and source.classes == ["a", "b", "c"]
    assert {k: v.tolist() for k, v in source.presplit.items()} == {"train": [0, 1, 2], "val": [3, 4], "test": [5]}


@pytest.mark.parametrize("case", ["no_masks", "missing_mask", "size", "bad_yaml", "bad_colour", "not_found"])
def test_layout_errors_are_one_line(tmp_path: Path, case: str) -> None:
    root = _index_folder(tmp_path / "d", n=2)
    if case == "no_masks":
        for f in (root / "masks").iterdir():
            f.unlink()
        (root / "masks").rmdir()
        _one_line_error(str(root), "masks/", "labels/")
    elif case == "missing_mask":
        (root / "masks" / "001.png").unlink()
        _one_line_error(str(root), "001.jpg", str(root / "masks"))
    elif case == "size":
        _save(root / "masks" / "001.png", np.zeros((5, 7)))
        _one_line_error(str(root), "7×5", "16×12")
    elif case == "bad_yaml":
        (root / "palette.yaml").write_text("classes: [a, b\n  - : :")
        _one_line_error(str(root), "palette.yaml", "YAML")
    elif case == "bad_colour":
        (root / "palette.yaml").write_text("classes:\n  - {name: a, color: [0, 0]}\n")
        _one_line_error(str(root), "palette.yaml", "[r, g, b]")
    else:
        _one_line_error(str(tmp_path / "nowhere"), "not found")


def test_unreadable_image_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    root = _index_folder(tmp_path / "d", n=12)
    (root / "images" / "003.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source = open_segmentation_source(str(root))
    assert len(source) == 11 and "003.jpg" in caplog.text


def _coco(tmp_path: Path) -> tuple[Path, np.ndarray]:
    from pycocotools import mask as mask_utils

    for name in ("a.png", "b.png"):
        _save(tmp_path / "images" / name, np.zeros((20, 30, 3)))
    blob = np.zeros((20, 30), dtype=np.uint8, order="F")
    blob[5:15, 10:25] = 1
    blob[8:10, 12:14] = 0
    rle = mask_utils.encode(np.asfortranarray(blob))
    rle["counts"] = rle["counts"].decode()
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": 30, "height": 20}, {"id": 9, "file_name": "b.png"}],
        "categories": [{"id": 5, "name": "weed"}, {"id": 2, "name": "crop"}],  # in id order: crop, weed
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 2, "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]},
            {"id": 2, "image_id": 9, "category_id": 5, "segmentation": rle, "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 5, "segmentation": [[8, 0, 14, 0, 14, 4, 8, 4]]},  # on top
        ]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, blob


def test_coco_polygons_and_rle_become_class_masks(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    path, blob = _coco(tmp_path)
    source = open_segmentation_source(str(path))
    assert source.classes == ["background", "crop", "weed"] and len(source) == 2
    mask = source.read(0)[1].numpy()
    polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[2, 2, 12, 2, 12, 10, 2, 10]], 20, 30)))
    top = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[8, 0, 14, 0, 14, 4, 8, 4]], 20, 30)))
    expected = np.where(top > 0, 2, np.where(polygon > 0, 1, 0))
    np.testing.assert_array_equal(mask, expected)  # the later annotation wins where they overlap
    assert abs(int(polygon.sum()) - 10 * 8) <= 20  # the hand-drawn 10 × 8 rectangle
    np.testing.assert_array_equal(source.read(1)[1].numpy(), blob.astype(np.int64) * 2)


def test_coco_unknown_category_is_one_line(tmp_path: Path) -> None:
    path, _ = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    _one_line_error(str(path), "category_id 99")


def test_pennfudan_layout_gives_person_masks(tmp_path: Path) -> None:
    root = tmp_path / "PennFudanPed"
    _save(root / "PNGImages" / "FudanPed00001.png", np.zeros((10, 8, 3)))
    ids = np.zeros((10, 8))
    ids[1:4, 1:3] = 1
    ids[5:9, 4:7] = 2
    _save(root / "PedMasks" / "FudanPed00001_mask.png", ids)
    source = open_segmentation_source(str(root))
    assert source.classes == ["background", "person"]
    np.testing.assert_array_equal(source.read(0)[1].numpy(), (ids > 0).astype(np.int64))


def test_real_pennfudan(data_root: Path) -> None:
    if not (data_root / "pennfudan" / "PedMasks").is_dir():
        pytest.skip(f"no Penn-Fudan at {data_root / 'pennfudan'}")
    source = open_segmentation_source(str(data_root / "pennfudan"))
    assert source.classes == ["background", "person"] and len(source) == 170
    image, mask = source.read(0)
    assert image.shape[1:] == mask.shape and set(mask.unique().tolist()) == {0, 1}


def test_real_peanut_opens_with_the_default_palette(data_root: Path) -> None:
    if not (data_root / "peanut" / "labels").is_dir():
        pytest.skip(f"no Peanut data at {data_root / 'peanut'}")
    source = open_segmentation_source(str(data_root / "peanut"))
    assert source.classes == ["soil", "crop", "weed"] and len(source) == 400
    for i in (0, 1):
        image, mask = source.read(i)
        assert image.shape == (3, 720, 960) and mask.shape == (720, 960)
        assert set(mask.unique().tolist()) <= {0, 1, 2}


def _void_folder(root: Path, void: int = 5, palette: str | None = "ignore_index: 5\n", n: int = 6) -> Path:
    """n images 16×16 with index masks of classes 0..2 in bands and a void band of value `void` (CamVid-like)."""
    rng = np.random.default_rng(1)
    for i in range(n):
        _save(root / "images" / f"{i:03d}.png", rng.integers(0, 256, (16, 16, 3)))
        mask = np.zeros((16, 16), dtype=np.uint8)
        mask[:, 4:8], mask[:, 8:12], mask[:, 12:] = 1, 2, void
        _save(root / "masks" / f"{i:03d}.png", mask, mode="L")
    if palette is not None:
        (root / "palette.yaml").write_text(palette)
    return root


def test_palette_with_only_ignore_index_finds_classes_and_ignores_the_void(tmp_path: Path) -> None:
    source = open_segmentation_source(str(_void_folder(tmp_path / "d")))
    assert source.classes == ["class_0", "class_1", "class_2"] and source.ignore_index == 5
    assert len(source.palette) == 3
    mask = source.read(0)[1]
    assert set(mask.unique().tolist()) == {0, 1, 2, 5} and (mask[:, 12:] == 5).all()


def test_without_palette_the_void_value_stays_a_class(tmp_path: Path) -> None:
    source = open_segmentation_source(str(_void_folder(tmp_path / "d", palette=None)))
    assert source.classes == [f"class_{k}" for k in range(6)] and source.ignore_index == 255


@pytest.mark.parametrize("palette, parts", [
    ("ignore_index: 1\n", ("palette.yaml", "ignore_index 1", "mask value 5")),   # classes above the void value
    ("ignore_index: -3\n", ("palette.yaml", "ignore_index -3")),
    ("ignore_index: 5\nnoise: 1\n", ("palette.yaml", "noise")),
    ("{}\n", ("palette.yaml", "classes", "ignore_index")),
])
def test_bad_ignore_only_palettes_are_one_line_errors(tmp_path: Path, palette: str, parts: tuple) -> None:
    _one_line_error(str(_void_folder(tmp_path / "d", palette=palette)), *parts)


def test_ignore_only_palette_refuses_colour_masks(tmp_path: Path) -> None:
    root = _colour_folder(tmp_path / "d", "ignore_index: 250\n", [(0, 0, 0), (0, 0, 255)])
    _one_line_error(str(root), "palette.yaml", "colour images", "color")
