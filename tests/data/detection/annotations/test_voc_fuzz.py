"""Fuzzing the Pascal VOC reader (cnnkit.data.detection.annotations.voc): annotation files built from VOC's own
elements with values of every wrong type, elements left out or repeated, mutations (cut short, stray '<' and
'&'), declarations of entities and DTDs, raw bytes; and the XML attacks by name: the billion laughs and external
entities, refused by defusedxml before anything is expanded or fetched."""
from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import strategies as st
from tests.fuzzing import SIZES, as_bytes, clean, fuzz, maybe, mix, mutated, texts, write_images

from cnnkit.data.detection.annotations.voc import read_voc
from cnnkit.data.detection.source import open_detection_source
from cnnkit.errors import CnnkitError

FILES = ["a.png", "b.png", "a", "broken.png", "missing.jpg", "**", "x" * 300, "x\ny.png", "x&#10;y.png"]
POLICIES = [None, "unknown_class=fix", "outside=drop,zero_area=fix"]
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>a.png</filename><object><name>&lol9;</name>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY secret SYSTEM "file://{secret}">]>
<annotation><filename>a.png</filename><object><name>&secret;</name>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>
"""
PARAMETER = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY % remote SYSTEM "file://{secret}"> %remote;]>
<annotation><filename>a.png</filename></annotation>
"""
DECLARATIONS = ['<!DOCTYPE a [<!ENTITY x "y">]>', '<!DOCTYPE a SYSTEM "file:///etc/passwd">', "&x;", "&lt;", "&#0;",
                "&#x110000;", "<![CDATA[", "]]>", "<!--", "-->", "<?pi?>", "<", ">", "&", '"', "</object>"]


# text that XML allows (no control characters) mostly, so that most files parse and reach the VOC checks
words = mix((6, st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=12)), (3, texts)).map(escape)


def element(tag: str, *children: str) -> st.SearchStrategy:
    """<tag>…</tag> around the children (each drawn, then joined); now and then left out or written twice."""
    inner = st.tuples(*children).map("".join) if children else words
    one = inner.map(lambda text: f"<{tag}>{text}</{tag}>")
    return mix((12, one), (1, st.just("")), (1, st.tuples(one, one).map("".join)))


def value(tag: str, valid: st.SearchStrategy) -> st.SearchStrategy:
    return element(tag, maybe(valid.map(str), words, p_other=6))


coordinate = st.integers(-5, 60) | st.floats(-5, 60)
box = element("bndbox", *(value(t, coordinate) for t in ("xmin", "ymin", "xmax", "ymax")))
obj = element("object", value("name", st.sampled_from(["cat", "dog"])), value("difficult", st.sampled_from([0, 1])),
              box)
size = element("size", value("width", st.sampled_from([40, 20, 0, "40.0"])),
               value("height", st.sampled_from([30, 10, -1])), value("depth", st.just(3)))
annotation = st.tuples(value("filename", st.sampled_from(FILES)), size, st.lists(obj, max_size=3).map("".join)) \
    .map(lambda parts: f"<annotation>{''.join(parts)}</annotation>")
VALID = ("<annotation><filename>a.png</filename><size><width>40</width><height>30</height></size><object><name>cat"
         "</name><difficult>0</difficult><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>12</xmax><ymax>11</ymax></bndbox>"
         "</object></annotation>")
documents = mix((6, annotation), (2, mutated(annotation, st.sampled_from(DECLARATIONS) | texts)),
                (1, mutated(VALID, st.sampled_from(DECLARATIONS))),
                (1, st.tuples(st.sampled_from(DECLARATIONS[:2]), annotation).map("".join)))
folders = st.tuples(st.lists(as_bytes(documents), min_size=1, max_size=2),
                    st.none() | st.lists(st.sampled_from(["cat", "dog", "bird"]) | texts, max_size=3),
                    st.sampled_from(POLICIES), st.booleans())


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """broken → a folder of images: without or with broken.png."""
    root = tmp_path_factory.mktemp("voc-images")
    return {False: write_images(root / "good", broken=False), True: write_images(root / "all")}


def read_voc_folder(case: tuple, images: dict[bool, Path]) -> None:
    xmls, classes, policy, broken = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "Annotations").mkdir()
        for n, data in enumerate(xmls):
            (root / "Annotations" / f"{n}.xml").write_bytes(data)
        if classes is not None:
            (root / "classes.txt").write_text("\n".join(classes), encoding="utf-8", errors="surrogatepass")
        clean(open_detection_source, root, images[broken], policy)


@SIZES
def test_voc_reader_fuzz(examples: int, images: dict[bool, Path]) -> None:
    fuzz(examples, folders, lambda case: read_voc_folder(case, images))


def _voc(root: Path, xml: str) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "a.xml").write_text(xml)
    write_images(root / "JPEGImages", broken=False)
    return root


def test_the_valid_annotation_reads(tmp_path: Path) -> None:
    source = read_voc(_voc(tmp_path, VALID))
    assert source.classes == ["cat"] and source.items[0].boxes.tolist() == [[2, 3, 12, 11]]


def test_billion_laughs_is_refused_before_any_expansion(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(CnnkitError, match="refused: the XML declares entities") as info:
            read_voc(_voc(tmp_path, BILLION_LAUGHS))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value) and "a.xml" in str(info.value)
    assert peak < 20 << 20  # 10^9 'lol's would be gigabytes


@pytest.mark.parametrize("template", [EXTERNAL, PARAMETER], ids=["external-entity", "parameter-entity"])
def test_external_entities_are_never_read(tmp_path: Path, template: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-1234")
    for target in (secret, Path("/etc/passwd")):
        root = _voc(tmp_path / f"voc-{target.name}", template.format(secret=target))
        with pytest.raises(CnnkitError, match="refused: the XML declares entities") as info:
            read_voc(root)
        assert "TOP-SECRET" not in str(info.value) and "root:" not in str(info.value)


def test_an_external_dtd_is_not_fetched(tmp_path: Path) -> None:
    """A DOCTYPE that names an external DTD (no entity declared): expat never loads it; the file reads as VOC."""
    secret = tmp_path / "secret.dtd"
    secret.write_text('<!ENTITY name "TOP-SECRET">')
    source = read_voc(_voc(tmp_path / "v", f'<!DOCTYPE annotation SYSTEM "file://{secret}">{VALID}'))
    assert source.classes == ["cat"]


# the inputs that fuzzing found, each once an unhandled exception or a silent nan
FOUND = [
    (VALID.replace("<width>40", "<width>inf"), "<width> is 'inf'; expected a number"),  # OverflowError: int(inf)
    (VALID.replace("<difficult>0", "<difficult>x"), "<difficult> is 'x'; expected a number"),  # ValueError
    (VALID.replace("<difficult>0", "<difficult>7"), "<difficult> is 7; expected 0 or 1"),
    (VALID.replace("<xmin>3", "<xmin>nan"), "<xmin> is 'nan'; expected a number"),  # a nan box, accepted
    (VALID.replace("<width>40", "<width>1e30"), "<width> is '1e30'; expected a number"),  # a 10^30-pixel image
    (VALID.replace("a.png", "**").replace("<size><width>40</width><height>30</height></size>", ""),
     "image .*\\*\\* is listed but missing"),  # ValueError: Invalid pattern '**' (glob of the stem)
    (VALID.replace("a.png", "x" * 300), "is listed but missing on disk"),  # OSError: file name too long
]


@pytest.mark.parametrize(("xml", "message"), FOUND)
def test_what_fuzzing_found_is_a_one_line_error(tmp_path: Path, xml: str, message: str) -> None:
    with pytest.raises(CnnkitError, match=message) as info:
        read_voc(_voc(tmp_path, xml))
    assert "\n" not in str(info.value) and "a.xml" in str(info.value)
