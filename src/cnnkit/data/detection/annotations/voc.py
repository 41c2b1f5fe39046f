"""Pascal VOC: Annotations/*.xml beside JPEGImages/. VOC corners are 1-based and inclusive: (xmin, ymin,
xmax, ymax) becomes (xmin - 1, ymin - 1, xmax, ymax) in cnnkit's 0-based, x2-exclusive boxes, and back.
`difficult` is kept as `iscrowd` (both mean: ignore this box when scoring)."""
from __future__ import annotations

import glob
import math
import xml.etree.ElementTree as ET  # writing only: every file read goes through defusedxml
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as SafeET

from cnnkit.data.detection.annotations.source import (
    MAX_SIDE,
    DetectionSource,
    checked_size,
    export_images,
    image_size,
    is_file,
    make_item,
)
from cnnkit.data.images import is_image_file
from cnnkit.errors import CnnkitError, brief, shown

MAX_COORD = 1e9  # pixels: a corner beyond this is a typo or a hostile file


def is_voc(folder: Path) -> bool:
    return (folder / "Annotations").is_dir()


def read_class_list(folder: Path) -> list[str] | None:
    """classes.txt (one name a line), when the folder has one."""
    file = folder / "classes.txt"
    if not file.is_file():
        return None
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CnnkitError(f"{file}: cannot read the class list ({err})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _number(text: str) -> float:
    """A finite number within ±MAX_COORD; ValueError otherwise (nan, inf, 1e400, words)."""
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_COORD:
        raise ValueError(text)
    return value


def _whole(text: str) -> int:
    """A whole number within ±MAX_SIDE (some tools write 500.0); ValueError otherwise."""
    value = _number(text)
    if not value.is_integer() or abs(value) > MAX_SIDE:
        raise ValueError(text)
    return int(value)


def _text(node: ET.Element, tag: str, xml: Path, cast=str):
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise CnnkitError(f"{xml}: <{node.tag}> lacks <{tag}>")
    try:
        return cast(child.text.strip())
    except ValueError:
        raise CnnkitError(f"{xml}: <{tag}> is {brief(child.text.strip())}; expected a number") from None


def _parse(xml: Path) -> tuple[str, int | None, int | None, list[tuple[str, list[float], int]]]:
    try:  # defusedxml: no entity expansion (billion laughs), no external entity or DTD fetched
        root = SafeET.parse(xml).getroot()
    except ET.ParseError as err:
        raise CnnkitError(f"{xml}: XML parse error: {err}") from None
    except defusedxml.DefusedXmlException as err:
        raise CnnkitError(f"{xml}: refused: the XML declares entities or a DTD ({type(err).__name__}); VOC files "
                          "need neither") from None
    filename = _text(root, "filename", xml)
    size = root.find("size")
    width = _text(size, "width", xml, _whole) if size is not None else None
    height = _text(size, "height", xml, _whole) if size is not None else None
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            raise CnnkitError(f"{xml}: an <object> lacks <bndbox>")
        x1, y1, x2, y2 = (_text(box, t, xml, _number) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = obj.find("difficult")
        flag = _text(obj, "difficult", xml, _whole) if difficult is not None and (difficult.text or "").strip() else 0
        if flag not in (0, 1):
            raise CnnkitError(f"{xml}: <difficult> is {flag}; expected 0 or 1")
        objects.append((_text(obj, "name", xml), [x1 - 1, y1 - 1, x2, y2], flag))
    return filename, width, height, objects


def read_voc(folder: str | Path, images: str | Path | None = None) -> DetectionSource:
    """A VOC folder → DetectionSource. Classes come from classes.txt when present (other names are then
    unknown), else the sorted names found."""
    folder = Path(folder)
    image_dir = Path(images) if images is not None else folder / "JPEGImages"
    xmls = sorted((folder / "Annotations").glob("*.xml"))
    if not xmls:
        raise CnnkitError(f"{folder}/Annotations holds no .xml files; a VOC folder has Annotations/*.xml and "
                          "JPEGImages/")
    parsed = [(xml, *_parse(xml)) for xml in xmls]
    classes = read_class_list(folder) or sorted({name for *_, objects in parsed for name, _, _ in objects})
    index = {name: i for i, name in enumerate(classes)}
    items = []
    for n, (xml, filename, width, height, objects) in enumerate(parsed):
        file = image_dir / filename
        if not is_file(file):  # VOC files often name the image by its stem only
            found = [p for p in _glob(image_dir, f"{glob.escape(Path(filename).stem)}.*") if is_image_file(p)]
            file = found[0] if found else file
        if width is None or height is None or width <= 0 or height <= 0:
            width, height = image_size(file, str(xml))
        else:
            width, height = checked_size(width, height, str(xml))
            if not is_file(file):
                raise CnnkitError(f"{xml}: image {shown(file)} is listed but missing on disk; fix <filename> or give "
                                  "--images DIR")
        unknown = {k: name for k, (name, _, _) in enumerate(objects) if name not in index}
        items.append(make_item(n + 1, file, width, height, [b for _, b, _ in objects],
                               [index.get(name, -1) for name, _, _ in objects],
                               iscrowd=[d for *_, d in objects], unknown=unknown))
    return DetectionSource(folder.name, classes, items)


def _glob(folder: Path, pattern: str) -> list[Path]:
    try:
        return sorted(folder.glob(pattern))
    except (OSError, ValueError):  # a name too long for the file system, a NUL
        return []


def _fmt(v: float) -> str:
    return str(int(round(v))) if abs(v - round(v)) < 1e-6 else f"{v:.2f}"


def write_voc(source: DetectionSource, folder: str | Path) -> Path:
    """Write FOLDER/Annotations/*.xml, the images in FOLDER/JPEGImages/ (kept in their own format) and
    FOLDER/classes.txt. Returns FOLDER."""
    folder = Path(folder)
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    names = export_images(source, folder / "JPEGImages")
    (folder / "classes.txt").write_text("".join(f"{c}\n" for c in source.classes), encoding="utf-8")
    for item, name in zip(source.items, names):
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "JPEGImages"
        ET.SubElement(root, "filename").text = name
        size = ET.SubElement(root, "size")
        for tag, value in (("width", item.width), ("height", item.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        crowd = item.iscrowd if item.iscrowd is not None else [0] * len(item.boxes)
        for (x1, y1, x2, y2), label, c in zip(item.boxes.tolist(), item.labels.tolist(), list(crowd)):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = source.classes[label]
            ET.SubElement(obj, "difficult").text = str(int(c))
            box = ET.SubElement(obj, "bndbox")
            for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                ET.SubElement(box, tag).text = _fmt(value)
        ET.indent(root)
        ET.ElementTree(root).write(folder / "Annotations" / f"{Path(name).stem}.xml", encoding="utf-8")
    return folder
