"""Label masks as class indices (cnnkit.data.segmentation.masks): PASCAL VOC's colour map, palette.yaml parsing
and its one-line errors, colour → index through a palette (nearest within the tolerance), index masks checked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.segmentation.masks import (
    COLOUR_TOLERANCE,
    ColourMap,
    MaskDecoder,
    Palette,
    pack_rgb,
    read_palette,
    unpack_rgb,
    voc_colormap,
)
from cnnkit.errors import CnnkitError


def test_voc_colormap_matches_the_pascal_devkit() -> None:
    # VOCdevkit's labelcolormap: background, aeroplane, bicycle, bird, ..., person (15)
    cmap = voc_colormap(21)
    assert cmap[:5] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]
    assert cmap[15] == (192, 128, 128) and cmap[20] == (0, 64, 128) and len(set(cmap)) == 21


def test_pack_and_unpack_rgb_are_inverse() -> None:
    rgb = np.array([[[1, 2, 3], [255, 0, 128]]], dtype=np.uint8)
    keys = pack_rgb(rgb)
    assert keys.tolist() == [[(1 << 16) | (2 << 8) | 3, (255 << 16) | 128]]
    assert [unpack_rgb(int(k)) for k in keys.ravel()] == [(1, 2, 3), (255, 0, 128)]


def test_read_palette_with_colours_names_and_ignore(tmp_path: Path) -> None:
    file = tmp_path / "palette.yaml"
    file.write_text("classes:\n  - {name: soil, color: [0, 0, 0]}\n  - {name: crop, colour: [0, 255, 0]}\n"
                    "ignore_index: 250\nignore_color: [255, 255, 255]\n")
    assert read_palette(file) == Palette(["soil", "crop"], [(0, 0, 0), (0, 255, 0)], 250, (255, 255, 255))
    file.write_text("classes: [sky, road]\n")  # names only: index masks
    assert read_palette(file) == Palette(["sky", "road"], None, 255, None)
    file.write_text("ignore_index: 11\n")  # CamVid-like: classes found in the masks
    assert read_palette(file) == Palette(None, None, 11, None)


@pytest.mark.parametrize("text, message", [
    ("classes: [a, a]\n", "class names repeat"),
    ("classes:\n  - {name: a, color: [1, 2, 3]}\n  - b\n", "give every class a color, or none"),
    ("classes:\n  - {name: a, color: [1, 2, 3]}\n  - {name: b, color: [1, 2, 3]}\n", "share a colour"),
    ("classes:\n  - {name: a, color: [1, 2, 300]}\n", r"write a colour as \[r, g, b\]"),
    ("classes: [a, b, c]\nignore_index: 2\n", "must be an integer >= the number of classes"),
    ("classes: [a]\nextra: 1\n", r"unknown key\(s\) \['extra'\]"),
    ("classes: [a\n", "not valid YAML at line"),
    ("classes: []\n", "non-empty 'classes' list"),
])
def test_bad_palettes_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "palette.yaml"
    file.write_text(text)
    with pytest.raises(CnnkitError, match=message) as info:
        read_palette(file)
    assert str(info.value).startswith(str(file)) and "\n" not in str(info.value)


def test_colour_map_snaps_near_colours_and_refuses_far_ones() -> None:
    cmap = ColourMap([(0, 0, 0), (0, 0, 255), (255, 0, 0)], ["soil", "plant", "weed"], 250,
                     ignore_colour=(255, 255, 255))
    near = 255 - COLOUR_TOLERANCE
    rgb = np.array([[[0, 0, 0], [0, 0, 255], [255, 0, 0], [255, 255, 255], [5, 5, near], [near, 20, 0]]],
                   dtype=np.uint8)
    assert cmap(rgb, Path("m.png")).tolist() == [[0, 1, 2, 250, 1, 2]]
    far = np.array([[[0, 0, 0], [0, 120, 0]]], dtype=np.uint8)
    with pytest.raises(CnnkitError, match=r"m.png: colour \(0, 120, 0\) \(1 pixels\) is not in the palette"):
        cmap(far, Path("m.png"))


def test_colour_map_beyond_254_colours_uses_sorted_keys() -> None:
    colours = [(i % 256, i // 256, 7) for i in range(300)]  # 300 distinct colours
    cmap = ColourMap(colours, [f"c{i}" for i in range(300)], 1000)
    assert cmap.lut is None
    rgb = np.array([[colours[299], colours[0], colours[123]]], dtype=np.uint8)
    assert cmap(rgb, Path("m.png")).tolist() == [[299, 0, 123]]


def test_mask_decoder_on_index_binary_grey_and_instance_masks(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.uint8)
    Image.fromarray(mask, mode="L").save(tmp_path / "index.png")
    assert MaskDecoder(["a", "b", "c"], 255)(tmp_path / "index.png").tolist() == mask.astype(np.int64).tolist()
    with pytest.raises(CnnkitError, match="mask value 2 is not a class"):
        MaskDecoder(["a", "b"], 255)(tmp_path / "index.png")
    Image.fromarray(np.stack([mask] * 3, axis=-1)).save(tmp_path / "grey.png")  # RGB but R = G = B
    assert MaskDecoder(["a", "b", "c"], 255)(tmp_path / "grey.png").tolist() == mask.tolist()
    binary = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    Image.fromarray(binary).save(tmp_path / "binary.png")
    assert MaskDecoder(["bg", "fg"], 255, binary255=True)(tmp_path / "binary.png").tolist() == [[0, 1], [1, 0]]
    assert MaskDecoder(["bg", "person"], 255, instances=True)(tmp_path / "index.png").tolist() == \
        [[0, 1, 1], [1, 1, 0]]
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[0, 0] = (0, 255, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(CnnkitError, match="a colour mask .* among index masks"):
        MaskDecoder(["a", "b"], 255)(tmp_path / "colour.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(CnnkitError, match="cannot read the mask"):
        MaskDecoder(["a"], 255)(tmp_path / "broken.png")
