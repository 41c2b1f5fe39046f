"""Pascal VOC (cnnkit.data.detection.annotations.voc): 1-based inclusive corners both ways, `difficult` kept,
classes from classes.txt or the names found, and the one-line errors of broken XML."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.detection.annotations.coco import read_coco
from cnnkit.data.detection.annotations.voc import read_voc, write_voc
from cnnkit.errors import CnnkitError

XML = """<annotation>
  <filename>{name}</filename>
  {size}
  <object><name>dog</name><difficult>1</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
  <object><name>cat</name>
    <bndbox><xmin>5.0</xmin><ymin>6</ymin><xmax>30</xmax><ymax>25</ymax></bndbox></object>
</annotation>"""


def _voc_folder(root, size: str = "<size><width>40</width><height>30</height><depth>3</depth></size>",
                name: str = "a.jpg"):
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(root / "JPEGImages" / "a.jpg")
    (root / "Annotations" / "a.xml").write_text(XML.format(name=name, size=size))
    return root


def test_hand_written_xml_becomes_zero_based_exclusive_boxes(tmp_path):
    source = read_voc(_voc_folder(tmp_path / "voc"))
    assert source.classes == ["cat", "dog"]  # no classes.txt: the names found, sorted
    item = source.items[0]
    assert item.boxes.tolist() == [[0, 0, 10, 20], [4, 5, 30, 25]]  # (xmin - 1, ymin - 1, xmax, ymax)
    assert item.labels.tolist() == [1, 0] and item.iscrowd.tolist() == [1, 0]  # difficult → iscrowd
    assert (item.width, item.height) == (40, 30)


def test_missing_size_is_read_from_the_image_and_the_stem_finds_it(tmp_path):
    source = read_voc(_voc_folder(tmp_path / "voc", size="", name="a.png"))  # the XML names a.png, a.jpg exists
    item = source.items[0]
    assert item.path.name == "a.jpg" and (item.width, item.height) == (40, 30)


def test_classes_txt_fixes_the_order_and_other_names_are_unknown(tmp_path):
    root = _voc_folder(tmp_path / "voc")
    (root / "classes.txt").write_text("dog\nbird\n")
    item = read_voc(root).items[0]
    assert item.labels.tolist() == [0, -1] and item.unknown == {1: "cat"}


def test_written_corners_are_one_based_and_inclusive(tmp_path, coco_file, good_boxes):
    source = read_coco(coco_file(tmp_path / "c", good_boxes))
    folder = write_voc(source, tmp_path / "voc")
    text = (folder / "Annotations" / "img1.xml").read_text()
    assert "<xmin>3</xmin>" in text and "<ymin>4</ymin>" in text and "<xmax>12</xmax>" in text  # [2, 3, 10, 8]
    assert (folder / "classes.txt").read_text() == "cat\ndog\n"
    back = read_voc(folder)
    assert [i.boxes.tolist() for i in back.items] == [i.boxes.tolist() for i in source.items]


def test_voc_parse_error_and_missing_box(tmp_path, coco_file, good_boxes):
    folder = write_voc(read_coco(coco_file(tmp_path / "c", good_boxes)), tmp_path / "voc")
    xml = folder / "Annotations" / "img1.xml"
    good = xml.read_text()
    xml.write_text(good.replace("</annotation>", ""))
    with pytest.raises(CnnkitError) as err:
        read_voc(folder)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{xml}: XML parse error")
    xml.write_text(good.replace("<xmax>12</xmax>", ""))
    with pytest.raises(CnnkitError, match=r"img1.xml: <bndbox> lacks <xmax>"):
        read_voc(folder)
    xml.write_text(good.replace("<xmax>12</xmax>", "<xmax>twelve</xmax>"))
    with pytest.raises(CnnkitError, match=r"<xmax> is 'twelve'; expected a number"):
        read_voc(folder)


def test_empty_annotations_folder(tmp_path):
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(CnnkitError, match="holds no .xml files"):
        read_voc(tmp_path)
