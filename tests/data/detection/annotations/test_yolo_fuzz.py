"""Fuzzing the YOLO reader (cnnkit.data.detection.annotations.yolo): label files of `class cx cy w h` lines with
tokens of every kind, class names from data.yaml documents (names as a list, a mapping, junk, YAML tricks) or
classes.txt, mutations and raw bytes. Each folder is read and checked, or refused in one line."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import strategies as st
from tests.fuzzing import LAUGHS, SIZES, as_bytes, clean, fuzz, junk, maybe, mix, mutated, numbers, texts, write_images

from cnnkit.data.detection.source import open_detection_source
from cnnkit.errors import CnnkitError

POLICIES = [None, "unknown_class=fix", "outside=drop,zero_area=fix"]
YAML_TRICKS = ["names: &a [*a]", "names: !!python/object/apply:os.system ['true']", "names: 2001-13-45",
               "names: {0: cat, x: dog}", "names: {[1]: a}", "names: [" * 200, "names:\n\t- a", "names: {0: [a, b]}"]

label = mix((8, st.integers(-1, 3).map(str)), (1, numbers.map(str)), (1, texts))
coordinate = mix((8, st.floats(-0.05, 1.05).map(lambda v: f"{v:.3f}")), (1, numbers.map(str)), (1, texts))
line = mix((8, st.tuples(label, *[coordinate] * 4)), (1, st.lists(label | coordinate, max_size=7))).map(" ".join)
labels = mix((4, st.lists(line, max_size=4).map("\n".join)), (1, mutated("0 0.5 0.5 0.2 0.3\n1 0.1 0.1 0.05 0.05\n")))
names = mix((3, st.lists(st.sampled_from(["cat", "dog"]) | texts, max_size=3)),
            (2, st.dictionaries(st.integers(-1, 3), st.sampled_from(["cat", "dog"]) | texts, max_size=3)),
            (1, junk))
data_yaml = mix((4, st.fixed_dictionaries({"names": names}, optional={"nc": junk, "path": junk})
                 .map(lambda d: yaml.safe_dump(d, allow_unicode=True))),
                (1, st.sampled_from(YAML_TRICKS)), (1, mutated("names: [cat, dog]\nnc: 2\n")), (1, junk.map(str)))
classes_txt = st.lists(st.sampled_from(["cat", "dog"]) | texts, max_size=3).map("\n".join)
folders = st.tuples(st.dictionaries(st.sampled_from(["a", "b", "broken", "other"]), as_bytes(labels), max_size=3),
                    mix((5, st.tuples(st.just("data.yaml"), as_bytes(data_yaml))),
                        (4, st.tuples(st.just("classes.txt"), as_bytes(classes_txt))), (1, st.just(None))),
                    st.sampled_from(POLICIES), maybe(st.just(False), st.just(True), p_other=8))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    root = tmp_path_factory.mktemp("yolo-images")
    return {False: write_images(root / "good", broken=False), True: write_images(root / "all")}


def read_yolo_folder(case: tuple, images: dict[bool, Path]) -> None:
    label_files, names_file, policy, broken = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").symlink_to(images[broken], target_is_directory=True)
        (root / "labels").mkdir()
        for stem, data in label_files.items():
            (root / "labels" / f"{stem}.txt").write_bytes(data)
        if names_file is not None:
            (root / names_file[0]).write_bytes(names_file[1])
        clean(open_detection_source, root, None, policy)


@SIZES
def test_yolo_reader_fuzz(examples: int, images: dict[bool, Path]) -> None:
    fuzz(examples, folders, lambda case: read_yolo_folder(case, images))


def test_a_valid_folder_reads(images: dict[bool, Path]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").symlink_to(images[False], target_is_directory=True)
        (root / "labels").mkdir()
        (root / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
        (root / "data.yaml").write_text("names: {0: cat, 1: dog}\n")
        source = open_detection_source(root)
        assert source.classes == ["cat", "dog"] and source.items[0].boxes.tolist() == [[10, 7.5, 30, 22.5]]


# the inputs that fuzzing found, each once an unhandled exception or a hang
FOUND = [
    ("data.yaml", "names: {0: cat, x: dog}\n", "'names' maps class indices to names"),  # TypeError: sorted()
    ("data.yaml", "names: [2001-13-45]\n", "not valid YAML: 'month must be in 1..12'"),  # ValueError
    ("data.yaml", LAUGHS + "\nnames: *a8\n", "a 'billion laughs'"),  # str() of 9^9 'lol's: a hang
    ("data.yaml", "names: [[a, b]]\n", "a class name is \\['a', 'b'\\]"),
    ("classes.txt", b"cat\n\xffdog\n", "cannot read the class list"),  # UnicodeDecodeError
    ("labels/a.txt", b"0 0.5 0.5 0.1 0.1\n\xff\n", "cannot read the YOLO labels"),  # UnicodeDecodeError
]


@pytest.mark.parametrize(("name", "data", "message"), FOUND)
def test_what_fuzzing_found_is_a_one_line_error(images: dict[bool, Path], name: str, data: str | bytes,
                                                message: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").symlink_to(images[False], target_is_directory=True)
        (root / "labels").mkdir()
        if not name.startswith("labels"):
            (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
        if name != "data.yaml":
            (root / "classes.txt").write_text("cat\n")
        (root / name).write_bytes(data.encode() if isinstance(data, str) else data)
        with pytest.raises(CnnkitError, match=message) as info:
            open_detection_source(root)
        assert "\n" not in str(info.value)
