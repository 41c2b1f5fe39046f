"""Labelled image sources for classification: a folder of class folders, a CSV, arrays, or a built-in name.

Every source becomes an `ImageSource`: stable ids (written to split.json), integer labels, class names,
and either file paths or an in-memory uint8 tensor. Multilabel and regression sources add float `targets`
(multi-hot rows, or values); detection and segmentation sources add `extras` (boxes, masks) beside the ids.
"""
from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cnnkit.data.images import check_image, is_image_file, read_image, rgb_to_grey
from cnnkit.errors import CnnkitError, brief, listed

log = logging.getLogger("cnnkit")
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class ImageSource:
    """A labelled image set. `paths` or `arrays` holds the pixels; `ids[i]` names item i for good."""

    name: str
    ids: list[str]
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    paths: list[Path] | None = None
    arrays: torch.Tensor | None = None  # (N, C, H, W) uint8
    presplit: dict[str, np.ndarray] = field(default_factory=dict)  # given splits: name → indices
    extras: dict[str, list] = field(default_factory=dict)  # per-item boxes, masks, ...
    # multilabel: (N, K) multi-hot over `classes`; regression: (N, D) values named by `classes`; else None
    targets: np.ndarray | None = None
    problem: str | None = None  # 'multilabel' or 'regression' when `targets` holds them; None: single label

    def __len__(self) -> int:
        return len(self.ids)

    def target_tensor(self, indices: np.ndarray) -> torch.Tensor:
        """What the loss compares with for `indices`: (n,) int64 labels, or (n, K) float32 targets."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.targets is not None:
            return torch.as_tensor(self.targets[indices], dtype=torch.float32)
        return torch.as_tensor(self.labels[indices])

    def label_text(self, i: int) -> str:
        """Item i's label as text for split hashes: the class index, or the targets joined by ';'."""
        if self.targets is None:
            return str(int(self.labels[i]))
        return ";".join(f"{v:.7g}" for v in self.targets[i])

    def load(self, i: int, channels: int) -> torch.Tensor:
        """Item i as (channels, H, W) uint8."""
        if self.arrays is not None:
            img = self.arrays[i]
            if img.shape[0] == channels:
                return img
            if channels == 3 and img.shape[0] == 1:
                return img.expand(3, -1, -1)
            return rgb_to_grey(img)  # as PIL's convert('L'), and as read_image does for files
        return read_image(self.paths[i], channels)


def check_labels(source: ImageSource) -> None:
    """At least two classes, each with at least one item; for targets, see `check_targets`."""
    if source.targets is not None:
        return check_targets(source)
    if len(source.classes) < 2:
        raise CnnkitError(
            f"{source.name}: only one class ({source.classes[0]!r}); a classifier needs at least two classes"
            if source.classes else f"{source.name}: no classes found"
        )
    counts = np.bincount(source.labels, minlength=len(source.classes))
    empty = [c for c, n in zip(source.classes, counts) if n == 0]
    if empty:
        raise CnnkitError(f"{source.name}: class {empty[0]!r} has no images; add images or remove the class")


def check_targets(source: ImageSource) -> None:
    """Multilabel: every label occurs at least once. Regression: finite values that are not all equal."""
    t = source.targets
    if t.ndim != 2 or len(t) != len(source.ids) or t.shape[1] != len(source.classes):
        raise CnnkitError(f"{source.name}: targets of shape {t.shape} do not match {len(source.ids)} items "
                          f"and {len(source.classes)} names")
    if source.problem == "multilabel":
        absent = [c for c, n in zip(source.classes, t.sum(0)) if n == 0]
        if absent:
            raise CnnkitError(f"{source.name}: label {absent[0]!r} is on no image; add images or remove the label")
        return
    if not np.isfinite(t).all():
        raise CnnkitError(f"{source.name}: regression targets must be finite numbers (found nan or inf)")
    constant = [c for c, col in zip(source.classes, t.T) if len(col) > 1 and np.ptp(col) == 0]
    if constant:
        raise CnnkitError(f"{source.name}: target {constant[0]!r} has the same value on every image; "
                          "there is nothing to learn")


_SCANS: dict[int, list[str | None]] = {}  # check_image of a set of files, by their (path, size, mtime): once a process


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return str(path), -1, -1
    return str(path), st.st_size, st.st_mtime_ns


def _scan(paths: list[Path]) -> tuple[list[str | None], bool]:
    """(check_image of every file, whether this process had scanned the same unchanged files before): the run,
    its report and its verdict open the data several times, and the decode-level scan is done once."""
    key = hash(tuple(map(_stamp, paths)))
    if key in _SCANS:
        return _SCANS[key], True
    with ThreadPoolExecutor(max_workers=4) as pool:
        reasons = list(pool.map(check_image, paths))
    if len(_SCANS) > 8:
        _SCANS.clear()
    _SCANS[key] = reasons
    return reasons, False


def drop_bad_images(source: ImageSource, max_bad_fraction: float) -> ImageSource:
    """Scan every file (once a process: `_scan`); skip corrupt ones with a warning naming them (once), or fail
    above `max_bad_fraction`."""
    if source.paths is None:
        return source
    reasons, seen = _scan(list(source.paths))
    bad = [i for i, r in enumerate(reasons) if r is not None]
    if not bad:
        return source
    names = "; ".join(f"{source.ids[i]} ({reasons[i]})" for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
    fraction = len(bad) / len(source)
    if fraction > max_bad_fraction:
        raise CnnkitError(
            f"{len(bad)} of {len(source)} images are unreadable ({fraction:.0%} > max_bad_fraction "
            f"{max_bad_fraction:.0%}): {names}"
        )
    (log.debug if seen else log.warning)("skipping %d unreadable image(s): %s", len(bad), names)
    kept = subset(source, np.setdiff1d(np.arange(len(source)), bad))
    check_labels(kept)  # skipping may have emptied a class
    return kept


def subset(source: ImageSource, keep: np.ndarray) -> ImageSource:
    """The same source restricted to `keep` (sorted indices); presplit indices are remapped."""
    remap = -np.ones(len(source), dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    presplit = {k: remap[v][remap[v] >= 0] for k, v in source.presplit.items()}
    return ImageSource(
        name=source.name,
        ids=[source.ids[i] for i in keep],
        labels=source.labels[keep],
        classes=source.classes,
        paths=None if source.paths is None else [source.paths[i] for i in keep],
        arrays=None if source.arrays is None else source.arrays[torch.as_tensor(keep)],
        presplit=presplit,
        extras={k: [v[i] for i in keep] for k, v in source.extras.items()},
        targets=None if source.targets is None else source.targets[keep],
        problem=source.problem,
    )


def _class_folders(root: Path) -> dict[str, Path]:
    """Class name (readable_name of the folder's) → folder, hidden folders left out."""
    return {readable_name(p.name): p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def readable_name(name: str) -> str:
    """`name` as valid Unicode: bytes of a file name that are not UTF-8 (surrogate escapes on Linux) become
    '\\xNN', so that ids and class names can be hashed, printed and written to split.json."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def _identity(path: str | Path) -> tuple[int, int]:
    """(device, inode) of what `path` leads to: the same for a folder and every link to it."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _images_in(folder: Path, unusable: list[Path]) -> list[Path]:
    """Image files under `folder`, hidden names left out. Symlinked files and folders are followed, but each folder
    is walked once however many links lead to it, so a link loop ends. Entries named like images that are not
    regular files (a broken link, a pipe: reading one would hang) and folders that cannot be listed go to
    `unusable`."""
    found: list[Path] = []
    seen = {_identity(p) for p in folder.resolve().parents}  # a link up to an ancestor is a loop too
    for top, folders, files in os.walk(folder, followlinks=True, onerror=lambda e: unusable.append(Path(e.filename))):
        if _identity(top) in seen:
            folders.clear()
            continue
        seen.add(_identity(top))
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in files:
            path = Path(top, name)
            if not name.startswith(".") and is_image_file(path):
                (found if path.is_file() else unusable).append(path)
    return sorted(found)


def _warn_names(renamed: list[str], unusable: list[str]) -> None:
    def some(names: list[str]) -> str:
        return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")

    if renamed:
        log.warning("%d file name(s) are not UTF-8; read, with the bad bytes escaped in their ids: %s",
                    len(renamed), some(renamed))
    if unusable:
        log.warning("skipping %d path(s) named like images that are not regular files (a broken link, a pipe) "
                    "or folders that cannot be listed: %s", len(unusable), some(unusable))


def from_folder(root: str | Path) -> ImageSource:
    """A folder with one sub-folder per class, or `train/`, `val/` (and `test/`) folders of class folders.

    Ids are the files' paths relative to `root` (readable_name'd); hidden files and folders are left out; links
    are followed without looping (_images_in); what cannot be read as a file is skipped with a warning."""
    root = Path(root)
    if not root.is_dir():
        raise CnnkitError(f"data folder not found: {root}")
    splits = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    parts = [(s, _class_folders(root / s)) for s in splits] if "train" in splits else [("", _class_folders(root))]
    classes = sorted({name for _, folders in parts for name in folders})
    if not classes:
        raise CnnkitError(f"no class sub-folders in {root}; expected {root}/<class>/<image files>")
    ids, labels, paths, presplit, renamed, unusable = [], [], [], {}, [], []
    for split, folders in parts:
        start = len(ids)
        for label, name in enumerate(classes):
            for p in _images_in(folders[name], unusable) if name in folders else []:
                ids.append(readable_name(p.relative_to(root).as_posix()))
                renamed += [ids[-1]] if ids[-1] != p.relative_to(root).as_posix() else []
                labels.append(label)
                paths.append(p)
        if split:
            presplit[split] = np.arange(start, len(ids))
    _warn_names(renamed, [readable_name(os.path.relpath(p, root)) for p in unusable])
    if not ids:
        raise CnnkitError(f"no image files in {root} (looked for {', '.join(('.jpg', '.png', '.bmp', '...'))})")
    source = ImageSource(root.name, ids, np.asarray(labels, dtype=np.int64), classes, paths, presplit=presplit)
    check_labels(source)
    return source


def _read_csv(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not csv_path.is_file():
        raise CnnkitError(f"CSV file not found: {csv_path}")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets often write a BOM
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:  # not UTF-8, a field over csv's 128 KiB limit, ...
        raise CnnkitError(f"{csv_path}: not a readable CSV ({err})") from None
    if "" in columns:
        raise CnnkitError(f"{csv_path}: column {columns.index('') + 1} of the header has no name; name every column "
                          "('path,label' or 'path,<target>,...')")
    if "path" not in columns or len(columns) < 2:
        raise CnnkitError(
            f"{csv_path}: the header must be 'path,label' (classes; 'a;b' for several labels) or 'path,<target>,...' "
            f"(numbers, for regression); it has: {listed(columns) or 'nothing'}"
        )
    if not rows:
        raise CnnkitError(f"{csv_path}: no rows under the header")
    return columns, rows


def _csv_number(csv_path: Path, row: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise CnnkitError(f"{csv_path}: row {row}, column {brief(column)}: {brief(text)} is not a finite number; "
                          "regression columns hold numbers (a 'label' column makes the CSV a classification one)")
    return value


def _is_file(path: Path) -> bool:
    """Path.is_file, False (not an OSError) for a name too long for the file system."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def from_csv(csv_path: str | Path) -> ImageSource:
    """A CSV whose paths are relative to the CSV's folder, with one of three layouts:
    `path,label` (one class per image), `path,label` with `a;b` cells (multilabel; an empty cell is no label),
    or `path,<target1>,<target2>...` of numbers (regression, scalar or vector)."""
    csv_path = Path(csv_path)
    columns, rows = _read_csv(csv_path)
    paths = [csv_path.parent / r["path"] for r in rows]
    absent = [r["path"] for r, p in zip(rows, paths) if not _is_file(p)]
    if absent:
        raise CnnkitError(f"{csv_path}: {len(absent)} listed file(s) do not exist, e.g. {brief(absent[0])} (paths are "
                          "relative to the CSV)")
    ids, zeros = [r["path"] for r in rows], np.zeros(len(rows), dtype=np.int64)
    if "label" not in columns:  # regression: every other column is a target
        names = [c for c in columns if c != "path"]
        values = [[_csv_number(csv_path, n + 2, c, r[c]) for c in names] for n, r in enumerate(rows)]
        source = ImageSource(csv_path.stem, ids, zeros, names, paths, targets=np.asarray(values, np.float32),
                             problem="regression")
    elif any(";" in r["label"] for r in rows):  # multilabel
        sets = [{t.strip() for t in r["label"].split(";") if t.strip()} for r in rows]
        classes = sorted(set().union(*sets))
        if not classes:
            raise CnnkitError(f"{csv_path}: every 'label' cell is empty; write the labels of each image as 'a;b'")
        index = {c: i for i, c in enumerate(classes)}
        hot = np.zeros((len(rows), len(classes)), dtype=np.float32)
        for n, labels in enumerate(sets):
            hot[n, [index[c] for c in labels]] = 1.0
        source = ImageSource(csv_path.stem, ids, zeros, classes, paths, targets=hot, problem="multilabel")
    else:
        classes = sorted({r["label"] for r in rows})
        index = {c: i for i, c in enumerate(classes)}
        labels = np.asarray([index[r["label"]] for r in rows], dtype=np.int64)
        source = ImageSource(csv_path.stem, ids, labels, classes, paths)
    check_labels(source)
    return source


PROBLEMS = ("binary", "multiclass", "multilabel", "regression")


def infer_problem(source: ImageSource) -> str:
    """The notes' problem type of the data: its targets' kind, or binary for two classes, else multiclass."""
    return source.problem or ("binary" if len(source.classes) == 2 else "multiclass")


def as_problem(source: ImageSource, problem: str) -> ImageSource:
    """The source with targets for `problem`: single labels become one-hot rows for multilabel, or numbers
    (class names read as values) for regression; multilabel or regression data cannot become single-label."""
    if problem not in PROBLEMS:
        from cnnkit.errors import unknown_name

        raise unknown_name("task", problem, PROBLEMS)
    have = infer_problem(source)
    if problem == have or (problem, have) == ("multiclass", "binary"):  # two classes may use a softmax too
        return source
    if source.problem is not None:
        raise CnnkitError(f"{source.name} holds {source.problem} targets; train it with --task {source.problem} "
                          f"(not {problem})")
    if problem == "binary":
        raise CnnkitError(f"--task binary needs exactly 2 classes, {source.name} has {len(source.classes)}; "
                          "use --task multiclass")
    if problem == "multilabel":
        hot = np.eye(len(source.classes), dtype=np.float32)[source.labels]
        return replace(source, targets=hot, problem="multilabel")
    try:
        values = np.asarray([float(c) for c in source.classes], dtype=np.float32)[source.labels]
    except ValueError:
        raise CnnkitError(f"--task regression needs numeric labels; {source.name} has classes such as "
                          f"{source.classes[0]!r}. Write a CSV 'path,<target>' of numbers") from None
    return replace(source, classes=["label"], targets=values[:, None], problem="regression")


def from_arrays(
    images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, classes: list[str] | None = None,
    name: str = "arrays", check: bool = True, problem: str | None = None,
) -> ImageSource:
    """In-memory images: (N, H, W), (N, C, H, W) or (N, H, W, C) uint8 or float in [0, 1]; integer labels,
    or with `problem` 'multilabel' (N, K) 0/1 rows, or 'regression' (N,) or (N, D) values."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise CnnkitError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)  # channels-last → channels-first
    if len(x) != len(y):
        raise CnnkitError(f"{len(x)} images but {len(y)} labels; give one label per image")
    if problem in ("multilabel", "regression"):
        y = _array_targets(y, problem)
    elif y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise CnnkitError("labels must be a 1-D array of non-negative integer class indices; for several labels "
                          "per image or numbers, give problem='multilabel' or 'regression'")
    if x.numel() and x.is_floating_point() and (x.min() < 0 or x.max() > 1):
        raise CnnkitError(f"float images must be in [0, 1], got values in [{float(x.min()):g}, {float(x.max()):g}]; "
                          "divide by 255, or give uint8")
    if x.numel() and not x.is_floating_point() and x.dtype != torch.uint8 and (x.min() < 0 or x.max() > 255):
        raise CnnkitError(f"integer images must be in [0, 255], got values in [{int(x.min())}, {int(x.max())}]; "
                          "scale them to uint8")
    if x.is_floating_point():
        x = (x * 255).round()
    x = x[:, :3].to(torch.uint8).contiguous()
    if y.ndim == 2:  # multilabel or regression targets
        names = list(classes) if classes else [str(i) for i in range(y.shape[1])]
        if len(names) != y.shape[1]:
            raise CnnkitError(f"targets have {y.shape[1]} columns but {len(names)} names were given")
        source = ImageSource(name, [f"#{i}" for i in range(len(x))], np.zeros(len(y), dtype=np.int64), names,
                             arrays=x, targets=y, problem=problem)
        if check:
            check_labels(source)
        return source
    n_classes = int(y.max()) + 1 if len(y) else 0
    classes = classes or [str(i) for i in range(n_classes)]
    if len(classes) < n_classes:
        raise CnnkitError(f"labels go up to {n_classes - 1} but only {len(classes)} class names were given")
    source = ImageSource(name, [f"#{i}" for i in range(len(x))], y.astype(np.int64), list(classes), arrays=x)
    if check:  # training data needs two classes; data to evaluate or predict on need not
        check_labels(source)
    return source


def _array_targets(y: np.ndarray, problem: str) -> np.ndarray:
    """(N,) or (N, D) numbers as float32 (N, D); multilabel rows must be 0/1."""
    if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
        raise CnnkitError(f"{problem} targets must be a numeric (N, K) array, got {y.dtype} of shape {y.shape}")
    y = y.astype(np.float32).reshape(len(y), -1)
    if problem == "multilabel" and not np.isin(y, (0.0, 1.0)).all():
        raise CnnkitError("multilabel targets must be 0/1 rows (N, K): 1 where the image has the label")
    return y


def problem_source(task: str, source: ImageSource) -> tuple[str, ImageSource]:
    """The problem type (`task`, or inferred from the data when 'auto'; 'classify' is multiclass, as runs
    written before the problem types had names say) and the source's targets for it."""
    problem = infer_problem(source) if task == "auto" else {"classify": "multiclass"}.get(task, task)
    return problem, as_problem(source, problem)
