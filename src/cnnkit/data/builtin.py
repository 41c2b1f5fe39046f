"""Built-in datasets by name, and `open_source`, which turns any SOURCE string into an ImageSource."""
from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from cnnkit.config import parse_key_values
from cnnkit.data.idx import read_idx_images, read_idx_labels
from cnnkit.data.sources import ImageSource, drop_bad_images, from_arrays, from_csv, from_folder
from cnnkit.data.synthetic import SHAPES, ShapesConfig, make_multi_shapes, make_shapes
from cnnkit.errors import CnnkitError, did_you_mean

BUILTINS = ("digits", "mnist", "synthetic-shapes")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MAX_IDX_BYTES = 8 << 30  # one unpacked IDX file; EMNIST's largest is under 1 GiB


def digits() -> ImageSource:
    """scikit-learn's 1,797 real 8×8 handwritten digits (UCI), grey levels 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    return from_arrays(images, d.target, [str(i) for i in range(10)], name="digits")


def _mnist_raw_dir(root: Path) -> Path:
    """The folder holding the four un-gzipped IDX files, decompressing into a cache when only .gz exist."""
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        if all((folder / f).is_file() for f in MNIST_FILES):
            return folder
        if all((folder / f"{f}.gz").is_file() for f in MNIST_FILES):
            # one cache per folder and file version: Fashion-MNIST, KMNIST, ... use the very same file names
            stats = [(folder / f"{f}.gz").stat() for f in MNIST_FILES]
            key = repr([str(folder.resolve())] + [(s.st_size, s.st_mtime_ns) for s in stats])
            cache = Path(os.environ.get("CNNKIT_CACHE", Path.home() / ".cache" / "cnnkit")) / "mnist"
            cache = cache / hashlib.sha256(key.encode()).hexdigest()[:16]
            cache.mkdir(parents=True, exist_ok=True)
            for f in MNIST_FILES:
                if not (cache / f).is_file():
                    _gunzip(folder / f"{f}.gz", cache / f)
            return cache
    raise CnnkitError(f"no MNIST IDX files in {root}; expected {MNIST_FILES[0]}(.gz) and the other three there")


def _gunzip(src: Path, dst: Path) -> None:
    """Decompress SRC into DST (through a per-process temporary file: torchrun ranks unpack at once); a damaged
    or oversized .gz is a one-line CnnkitError."""
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
    try:
        with gzip.open(src) as f, tmp.open("wb") as out:
            while chunk := f.read(1 << 20):
                if out.tell() + len(chunk) > MAX_IDX_BYTES:
                    raise CnnkitError(f"{src}: unpacks to over {MAX_IDX_BYTES >> 30} GiB; not an MNIST-like file")
                out.write(chunk)
        tmp.replace(dst)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise CnnkitError(f"{src}: cannot unpack ({err})") from None
    finally:
        tmp.unlink(missing_ok=True)


def mnist(root: str | Path) -> ImageSource:
    """MNIST from a local folder, read with cnnkit.data.idx (checked headers, as torchvision reads the values);
    the official 10k test set is the test split."""
    root = Path(root)
    if not root.is_dir():
        raise CnnkitError(f"MNIST folder not found: {root}; give --data mnist:PATH with the four IDX files in PATH")
    raw = _mnist_raw_dir(root)
    x_train, x_test = read_idx_images(raw / MNIST_FILES[0]), read_idx_images(raw / MNIST_FILES[2])
    y_train, y_test = read_idx_labels(raw / MNIST_FILES[1]), read_idx_labels(raw / MNIST_FILES[3])
    for x_part, y_part, names in ((x_train, y_train, MNIST_FILES[:2]), (x_test, y_test, MNIST_FILES[2:])):
        if len(x_part) != len(y_part):
            raise CnnkitError(f"{raw}: {names[0]} holds {len(x_part)} images but {names[1]} {len(y_part)} labels; "
                              "the files must come from one data set")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise CnnkitError(f"{raw}: the train images are {x_train.shape[2]}×{x_train.shape[1]} but the test images "
                          f"{x_test.shape[2]}×{x_test.shape[1]}; the files must come from one data set")
    x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]).astype(np.int64)
    source = from_arrays(x, y, [str(i) for i in range(10)], name="mnist")
    n = len(x_train)  # 60,000 for MNIST; the IDX variants (EMNIST, ...) have other sizes
    source.presplit = {"train": np.arange(n), "test": np.arange(n, len(x))}
    return source


def synthetic_shapes(options: str = "") -> ImageSource:
    """Seeded circles, squares and triangles; each item keeps its shapes' boxes (and masks) in `extras`.
    target=class: one shape, its kind; count=K (target=labels): up to K shapes, the kinds present (multilabel);
    target=geometry: one shape, its centre x, y and size in pixels (regression).
    Detection (--task detect) reads the same options: cnnkit.data.detection.source.synthetic_detection."""
    fields = ShapesConfig.__dataclass_fields__
    opts = parse_key_values(options, example="synthetic-shapes:n=600,size=32")
    for key in opts:
        if key not in fields:
            raise CnnkitError(f"unknown synthetic-shapes option {key!r}{did_you_mean(key, fields)}")
    try:
        cfg = ShapesConfig(**opts)
        if cfg.kind == "labels":  # several shapes: which kinds each image holds (multilabel)
            images, present, boxes, kinds = make_multi_shapes(cfg)
        else:
            images, labels, boxes, masks = make_shapes(cfg)
    except (TypeError, ValueError) as err:
        raise CnnkitError(f"synthetic-shapes: {err}") from None
    if cfg.kind == "labels":
        source = from_arrays(images, present, list(SHAPES), name="synthetic-shapes", problem="multilabel")
        source.extras = {"boxes": boxes, "box_labels": kinds}
    elif cfg.kind == "geometry":  # regression: the shape's centre and size in pixels, from its exact box
        geometry = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                             boxes[:, 2] - boxes[:, 0]], axis=1)  # (N, 3): x, y, size
        source = from_arrays(images, geometry, ["x", "y", "size"], name="synthetic-shapes", problem="regression")
        source.extras = {"boxes": list(boxes), "masks": list(masks)}
    else:
        source = from_arrays(images, labels, list(SHAPES), name="synthetic-shapes")
        source.extras = {"boxes": list(boxes), "masks": list(masks)}
    return source


def open_source(spec: str, max_bad_fraction: float = 0.1) -> ImageSource:
    """SOURCE string → ImageSource: a built-in name (`digits`, `mnist:PATH`, `synthetic-shapes[:k=v,...]`),
    a CSV file of path,label, or a folder of class sub-folders."""
    name, _, arg = spec.partition(":")
    if name == "digits":
        return digits()
    if name == "mnist":
        return mnist(arg or os.environ.get("CNNKIT_MNIST", ""))
    if name == "synthetic-shapes":
        return synthetic_shapes(arg)
    path = Path(spec)
    if path.suffix.lower() == ".csv":
        return drop_bad_images(from_csv(path), max_bad_fraction)
    if path.is_dir():
        return drop_bad_images(from_folder(path), max_bad_fraction)
    if path.exists():
        raise CnnkitError(f"data source {spec!r} is a file but not a .csv; give a folder, a CSV or a built-in name")
    hint = did_you_mean(name, BUILTINS) if "/" not in spec and "." not in spec else ""
    raise CnnkitError(
        f"data not found: {spec!r} is neither a folder, a CSV file nor a built-in dataset"
        + (hint or " (built-ins: digits, mnist:PATH, synthetic-shapes)")
    )
