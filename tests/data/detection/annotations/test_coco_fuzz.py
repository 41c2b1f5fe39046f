"""Fuzzing the COCO JSON reader (cnnkit.data.detection.annotations.coco) and the checks after it: documents of
COCO's own keys with values of every wrong type, mutations of a valid file, raw bytes. Each is read, checked
(`open_detection_source`) and its masks decoded, or refused in one line (tests/fuzzing.py)."""
from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st
from PIL import Image
from tests.fuzzing import SIZES, as_bytes, clean, fuzz, junk, maybe, mix, mutated, numbers, texts

from cnnkit.data.detection.source import open_detection_source
from cnnkit.errors import CnnkitError

FILES = ["a.png", "b.png", "broken.png", "missing.png", "x\ny.png", "x" * 300, "../a.png"]
POLICIES = [None, "unknown_class=fix", "outside=drop,zero_area=fix,duplicate=fatal", "empty_image=drop"]
VALID = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}, {"id": 2, "file_name": "b.png"}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "iscrowd": 0,
                          "segmentation": [[2, 3, 12, 3, 12, 11]]},
                         {"id": 2, "image_id": 2, "category_id": 2, "bbox": [1, 1, 5, 5],
                          "segmentation": {"size": [10, 20], "counts": [5, 10, 185]}}],
         "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}


@st.composite
def record(draw: st.DrawFn, fields: dict, optional: dict) -> dict:
    """A dict of `fields` (each sometimes left out) and some of `optional`."""
    drawn = draw(st.fixed_dictionaries(fields, optional=optional))
    for key in list(fields):
        if draw(st.sampled_from(range(20))) == 7:  # not 0: Hypothesis draws the smallest value often
            del drawn[key]
    return drawn


ids = maybe(st.integers(0, 3), p_other=12)
coordinate = mix((6, st.integers(-10, 60)), (3, st.floats(-10, 60)), (1, numbers))
bbox = maybe(st.lists(coordinate, min_size=4, max_size=4), st.lists(coordinate, max_size=6) | junk, p_other=12)
polygons = st.lists(st.lists(maybe(st.floats(-5, 45), p_other=20), max_size=10), max_size=3)
COMPRESSED = ["`U1", "n1640000000000000j1", "n1640000"]  # pycocotools: an empty 40×30 mask, a box in 20×10; cut short
rle = st.fixed_dictionaries({"size": maybe(st.sampled_from([[30, 40], [10, 20], [3, 4], [65536, 65536]])),
                             "counts": maybe(st.lists(st.sampled_from([0, 5, 10, 185, 1200, 2**32]) | numbers,
                                                      max_size=6)
                                             | mutated(st.sampled_from(COMPRESSED)) | texts)})
image = record({"id": ids, "file_name": maybe(st.sampled_from(FILES), p_other=12)},
               {"width": maybe(st.sampled_from([40, 20, 40.0, 0, -1])), "height": maybe(st.sampled_from([30, 10])),
                "license": junk})
annotation = record({"image_id": ids, "category_id": maybe(st.integers(0, 3), p_other=12), "bbox": bbox},
                    {"iscrowd": maybe(st.sampled_from([0, 1])), "segmentation": mix((3, polygons), (3, rle), (1, junk)),
                     "id": junk, "area": junk})
category = record({"id": ids, "name": maybe(st.sampled_from(["cat", "dog"]) | texts, p_other=12)},
                  {"supercategory": junk})
document = record({"images": maybe(st.lists(maybe(image, p_other=10), min_size=1, max_size=3), p_other=10),
                   "annotations": maybe(st.lists(maybe(annotation, p_other=10), min_size=1, max_size=4), p_other=10),
                   "categories": maybe(st.lists(maybe(category, p_other=10), min_size=1, max_size=3), p_other=10)},
                  {"info": junk})
VALUES = {"id": ids, "image_id": ids, "category_id": ids, "file_name": st.sampled_from(FILES) | texts, "bbox": bbox,
          "width": maybe(st.sampled_from([40, 20, 1, 65536, 65537])), "height": maybe(st.sampled_from([30, 10])),
          "segmentation": mix((3, polygons), (3, rle), (1, junk)), "iscrowd": maybe(st.sampled_from([0, 1])),
          "name": texts}


OWN = {"images": ["id", "file_name", "width", "height"], "categories": ["id", "name"],
       "annotations": ["image_id", "category_id", "bbox", "segmentation", "segmentation", "iscrowd"]}


@st.composite
def changed(draw: st.DrawFn) -> dict:
    """The valid document with one to three fields of its records set to other values or taken out."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(OWN)))
        record_ = doc[key][draw(st.integers(0, len(doc[key]) - 1))]
        name = draw(st.sampled_from(OWN[key]) | st.sampled_from(sorted(VALUES)))
        if draw(st.sampled_from(range(8))) == 5:
            record_.pop(name, None)
        else:
            record_[name] = draw(VALUES[name])
    return doc


files = mix((3, document.map(json.dumps)), (3, changed().map(json.dumps)),
            (1, mutated(json.dumps(VALID), st.sampled_from([",", "]", "}", "{", "[", '"', "NaN", "1e999", "null"])
                        | texts)))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(folder / "b.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


def read_coco_file(data: bytes, policy: str | None, images: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "annotations.json"
        path.write_bytes(data)
        source = clean(open_detection_source, path, images, policy)
        if source is not None and source.has_masks:
            for i in range(len(source)):  # the masks at the image's own size, as training decodes them
                clean(source.read, i, masks=True)


@SIZES
def test_coco_reader_fuzz(examples: int, images: Path) -> None:
    fuzz(examples, st.tuples(as_bytes(files), st.sampled_from(POLICIES)),
         lambda case: read_coco_file(*case, images))


def test_the_valid_document_reads(images: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "annotations.json"
        path.write_text(json.dumps(VALID))
        source = open_detection_source(path, images)
        assert [len(item.boxes) for item in source.items] == [1, 1] and source.has_masks
        assert source.masks(0).shape == (1, 30, 40) and source.masks(1).shape == (1, 10, 20)


def _with(change: dict, key: str = "images") -> str:
    doc = copy.deepcopy(VALID)
    doc[key][0].update(change)
    return json.dumps(doc)


# the inputs that fuzzing found, each once an unhandled exception, a silent nan, a crash or a blow-up
FOUND = [
    ("[" * 100_000, "not valid JSON: nested too deeply"),  # RecursionError
    ('{"images": ' + "9" * 5000 + "}", "not valid JSON: 'Exceeds the limit"),  # ValueError: int of 5000 digits
    (_with({"id": [1]}), r"images\[0\] has id \[1\]; expected an integer"),  # TypeError: unhashable
    (_with({"id": "abc"}), r"images\[0\] has id 'abc'; expected an integer"),  # ValueError: int('abc')
    (_with({"file_name": 5}), r"images\[0\] has file_name 5; expected a file name"),  # TypeError: Path / int
    (_with({"file_name": "x" * 300}), "is listed but missing on disk"),  # OSError: file name too long
    (_with({"file_name": "x\ny.png"}), r"image '.*x\\ny.png' is listed but missing"),  # a message of two lines
    (_with({"width": "x"}), r"images\[0\]: image size 'x'×30"),  # ValueError: int('x')
    (_with({"width": 10**30}), "1 to 65536"),  # a 10^30-pixel image, accepted
    (_with({"id": "b"}, "categories"), r"categories\[0\] has id 'b'; expected an integer"),  # TypeError: sort
    (_with({"iscrowd": "x"}, "annotations"), r"annotations\[0\] has iscrowd 'x'; expected 0 or 1"),  # ValueError
    (_with({"bbox": [math.nan, 0, 5, 5]}, "annotations"), r"has bbox \[nan, 0, 5, 5\]"),  # a nan box, accepted
]
MASKS = [  # decoded at training time, through pycocotools' C code
    ([[0, 0, 1e9, 0, 1e9, 1e9]], "a polygon is"),  # SIGSEGV in rleFrPoly (gigabytes asked of malloc)
    ([[0, 0, math.nan, 0, 10, 10]], "a polygon is"),  # garbage pixels
    ({"size": [65536, 65536], "counts": [0]}, "a segmentation is 65536×65536 but the image is 40×30"),  # 4 GiB
    ({"size": [30, 40], "counts": "n1640000"}, "are not run lengths that add up"),  # read past the string's end
    ({"size": [30, 40], "counts": [5000, 10]}, "are not run lengths that add up"),
]


@pytest.mark.parametrize(("text", "message"), FOUND)
def test_what_fuzzing_found_is_a_one_line_error(images: Path, text: str, message: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "annotations.json"
        path.write_text(text)
        with pytest.raises(CnnkitError, match=message) as info:
            open_detection_source(path, images)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(("segmentation", "message"), MASKS)
def test_hostile_segmentations_never_reach_pycocotools(images: Path, segmentation: object, message: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "annotations.json"
        path.write_text(_with({"segmentation": segmentation}, "annotations"))
        source = open_detection_source(path, images)
        with pytest.raises(CnnkitError, match=message) as info:
            source.read(0, masks=True)
        assert "\n" not in str(info.value)
