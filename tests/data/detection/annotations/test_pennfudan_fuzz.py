"""Fuzzing the Penn-Fudan reader (cnnkit.data.detection.annotations.pennfudan): PASCAL v1.00 texts built from
the format's own lines with numbers of every size and names of every kind, lines left out, repeated or shuffled,
mutations and raw bytes; boxes from the text or from the instance masks. Each is read and checked, or refused
in one line."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st
from PIL import Image
from tests.fuzzing import SIZES, as_bytes, clean, fuzz, mix, mutated, texts, write_images

from cnnkit.data.detection.annotations.pennfudan import read_pennfudan
from cnnkit.data.detection.source import open_detection_source
from cnnkit.errors import CnnkitError

VALID = """# Compatible with PASCAL Annotation Version 1.00
Image filename : "PennFudanPed/PNGImages/a.png"
Image size (X x Y x C) : 40 x 30 x 3
Objects with ground truth : 2 { "PASpersonWalking" "PASpersonWalking" }
Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (2, 3) - (6, 10)
Pixel mask for object 1 "PASpersonWalking" : "PennFudanPed/PedMasks/a_mask.png"
Bounding box for object 2 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (10, 1) - (20, 16)
Pixel mask for object 2 "PASpersonWalking" : "PennFudanPed/PedMasks/a_mask.png"
"""
number = mix((8, st.integers(-3, 45).map(str)), (1, st.integers().map(str)),
             (1, st.sampled_from(["999999999", "10000000000", "9" * 5000, "٣", "-0"])))
word = mix((4, st.sampled_from(["a.png", "b.png", "broken.png", "missing.png", "a_mask.png", "bad_mask.png",
                                 "x" * 300, "x\ty.png"])),
           (1, texts))
box_line = st.tuples(st.integers(0, 3), texts.filter(lambda s: '"' not in s), *[number] * 4).map(
    lambda b: f'Bounding box for object {b[0]} "{b[1]}" (Xmin, Ymin) - (Xmax, Ymax) : ({b[2]}, {b[3]}) - '
              f"({b[4]}, {b[5]})")
mask_line = st.tuples(st.integers(0, 3), word).map(lambda m: f'Pixel mask for object {m[0]} "P" : "PedMasks/{m[1]}"')


@st.composite
def annotation(draw: st.DrawFn) -> str:
    """The format's lines: file name, size, the count of objects, a box (and a mask) line per object; now and
    then a count that disagrees, a line left out or the lines shuffled."""
    width, height = draw(mix((6, st.sampled_from([("40", "30"), ("20", "10")])), (1, st.tuples(number, number))))
    objects = draw(st.lists(st.tuples(box_line, mask_line), max_size=3))
    count = draw(mix((6, st.just(str(len(objects)))), (1, number)))
    lines = [f'Image filename : "PennFudanPed/PNGImages/{draw(word)}"',
             f"Image size (X x Y x C) : {width} x {height} x 3",
             f'Objects with ground truth : {count} {{ "PASpersonWalking" }}',
             *[line for pair in objects for line in pair[: draw(st.integers(1, 2))]]]
    edit = draw(st.sampled_from(["none"] * 6 + ["drop", "shuffle", "junk"]))
    if edit == "drop":
        del lines[draw(st.integers(0, len(lines) - 1))]
    elif edit == "shuffle":
        lines = draw(st.permutations(lines))
    elif edit == "junk":
        lines.insert(draw(st.integers(0, len(lines))), draw(texts))
    return "\n".join(lines)


text = mix((6, annotation()), (2, mutated(VALID)), (1, mutated(annotation())))
folders = st.tuples(st.lists(as_bytes(text), min_size=1, max_size=2), st.sampled_from(["text", "masks"]))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pennfudan")
    write_images(root / "PNGImages")
    ids = np.zeros((30, 40), dtype=np.uint8)
    ids[2:10, 1:6], ids[1:15, 10:19] = 1, 2
    (root / "PedMasks").mkdir()
    Image.fromarray(ids).save(root / "PedMasks" / "a_mask.png")
    (root / "PedMasks" / "bad_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n not a mask")
    return root


def read_pennfudan_folder(case: tuple, images: Path) -> None:
    texts_, boxes = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for sub in ("PNGImages", "PedMasks"):
            (root / sub).symlink_to(images / sub, target_is_directory=True)
        (root / "Annotation").mkdir()
        for n, data in enumerate(texts_):
            (root / "Annotation" / f"{n}.txt").write_bytes(data)
        source = clean(read_pennfudan, root, boxes)
        if source is not None:
            clean(open_detection_source, root)  # the same folder through the checks (boxes from the text)
            for i in range(len(source)):
                clean(source.read, i, masks=True)


@SIZES
def test_pennfudan_reader_fuzz(examples: int, images: Path) -> None:
    fuzz(examples, folders, lambda case: read_pennfudan_folder(case, images))


def test_the_valid_text_reads(images: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for sub in ("PNGImages", "PedMasks"):
            (root / sub).symlink_to(images / sub, target_is_directory=True)
        (root / "Annotation").mkdir()
        (root / "Annotation" / "a.txt").write_text(VALID)
        source = read_pennfudan(root, boxes="masks")
        assert source.items[0].boxes.tolist() == [[1, 2, 6, 10], [10, 1, 19, 15]]
        assert source.read(0, masks=True)[1]["masks"].shape == (2, 30, 40)


# the inputs that fuzzing found, each once an unhandled exception or an image of no pixels
FOUND = [
    (VALID.replace("40 x 30", "9" * 5000 + " x 30"), "not a PASCAL v1.00 annotation"),  # ValueError: 5000 digits
    (VALID.replace("40 x 30", "0 x 0"), "image size 0×0"),
    (VALID.replace("PNGImages/a.png", "PNGImages/" + "x" * 300), "is listed but missing on disk"),  # OSError
]


@pytest.mark.parametrize(("text", "message"), FOUND)
def test_what_fuzzing_found_is_a_one_line_error(images: Path, text: str, message: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for sub in ("PNGImages", "PedMasks"):
            (root / sub).symlink_to(images / sub, target_is_directory=True)
        (root / "Annotation").mkdir()
        (root / "Annotation" / "a.txt").write_text(text)
        with pytest.raises(CnnkitError, match=message) as info:
            read_pennfudan(root)
        assert "\n" not in str(info.value)
