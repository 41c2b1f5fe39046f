"""What the audit measures, section by section, into `Findings` (cnnkit.audit.run): the task family's own
audit (labels, boxes or masks, chosen by the recipe's name) and the sections every data set gets."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.audit.labels import item_name
from cnnkit.data.fingerprint import image_view
from cnnkit.data.sources import ImageSource
from cnnkit.errors import CnnkitError

log = logging.getLogger("cnnkit")
SET_WIDE = 0.5  # a quality flag on more than this share of the images describes the set (e.g. 8×8 digits: tiny)
CLOSE_SHARE = 0.01  # of random pairs within 2 × MAX_DISTANCE bits, above which pHash cannot tell images apart
SECONDS_PER_ITEM = {"classification": 6.0, "detection": 6.0, "instance segmentation": 30.0,
                    "semantic segmentation": 60.0}  # the notes' 10 items a minute; a mask costs more


def _classification(found: Any, *, folds: int, method: str, embedder: str | None, work: Path) -> None:
    from cnnkit.audit.crossfit import DEFAULT_EMBEDDER
    from cnnkit.audit.labels import label_audit
    from cnnkit.audit.quality import class_balance

    t = found.target
    result = label_audit(t.recipe, t.cfg, t.source, t.split, folds=folds, method=method,
                         embedder=embedder or DEFAULT_EMBEDDER, work=work, seed=t.cfg.train.seed)
    found.relabel, found.features = result.rows, result.features
    found.sections["label_audit"] = {"method": result.method, "folds": result.folds, "noise": result.noise}
    if t.source.targets is None:
        names = _split_of(t)
        found.sections["balance"] = class_balance(t.source.labels, t.source.classes, names)


def _refuse_label_options(found: Any, method: str, embedder: str | None) -> None:
    """--method and --embedder choose the label audit's model; boxes and masks are audited by --model."""
    if method != "auto" or embedder is not None:
        flag = "--method" if method != "auto" else "--embedder"
        raise CnnkitError(f"{flag} is not supported for a {found.target.recipe.name} audit (it chooses the label "
                          "audit's model; boxes and masks are audited by out-of-fold --model runs)")


def _detection(found: Any, *, folds: int, method: str, embedder: str | None, work: Path) -> None:
    from cnnkit.audit.boxes import audit_detection

    _refuse_label_options(found, method, embedder)
    t = found.target
    pool = np.sort(np.concatenate([t.split["train"], t.split["val"]]))
    result = audit_detection(t.recipe, t.cfg, t.source, pool, folds=folds, work=work, seed=t.cfg.train.seed)
    rows = [{**r, "path": r["path"] or _name(t.source, r["index"])} for r in result["issues"]]
    found.sections["boxes"] = rows
    found.sections["box_audit"] = {k: v for k, v in result.items() if k != "issues"}
    found.relabel = [{"path": r["path"], **box_labels(r), "score": r["score"], "issue": True} for r in rows]


def _box_text(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


def box_labels(row: dict) -> dict:
    """relabel.csv's given and suggested labels of a box issue, in words a person re-checking the image reads."""
    kind, label, box = row["kind"], row["label"], _box_text(row["box"])
    if kind == "missing":
        return {"given_label": "(no box)", "suggested_label": f"add {label} {box}"}
    if kind == "wrong_class":
        return {"given_label": f"{label} {box}", "suggested_label": f"{row['suggested']} {box}"}
    if kind == "contradicted" and row.get("suggested") is not None:
        return {"given_label": f"{label} {box}", "suggested_label": f"move to {_box_text(row['suggested'])}"}
    if kind == "contradicted":
        return {"given_label": f"{label} {box}", "suggested_label": "remove, or check: the model sees nothing"}
    return {"given_label": f"{label} {box}", "suggested_label": "check its size"}


def _segmentation(found: Any, *, folds: int, method: str, embedder: str | None, work: Path) -> None:
    from cnnkit.audit.masks import audit_segmentation

    _refuse_label_options(found, method, embedder)
    t = found.target
    pool = np.sort(np.concatenate([t.split["train"], t.split["val"]]))
    result = audit_segmentation(t.recipe, t.cfg, t.source, pool, folds=folds, work=work, seed=t.cfg.train.seed,
                                split=t.split)
    rows = [{**r, "path": r["path"] or _name(t.source, r["index"])} for r in result["issues"]]
    found.sections["masks"] = rows
    found.sections["absent_classes"] = result.get("absent", {})
    found.relabel = [{"path": r["path"], "given_label": f"mask: {r['label']}" if r.get("label") else "mask",
                      "suggested_label": f"{r['suggested']} ({r['pixels']} px)" if r.get("suggested") else
                      "check the mask", "score": r["score"], "issue": True} for r in rows]


FAMILIES = {"classification": _classification, "detection": _detection, "instance segmentation": _detection,
            "semantic segmentation": _segmentation}


def family_sections(found: Any, *, folds: int, method: str, embedder: str | None, work: Path) -> None:
    """The task family's own audit: labels (classification), boxes (detection, instance) or masks."""
    FAMILIES[found.target.recipe.name](found, folds=folds, method=method, embedder=embedder, work=work)


def _split_of(target: Any) -> list[str]:
    """Each item's split name ('train', 'val', 'test'; 'unused' for items in none)."""
    names = ["unused"] * len(target.source)
    for name, idx in target.split.items():
        for i in idx:
            names[int(i)] = name
    return names


def pixels_of(source: Any) -> Any:
    """What the hashes and quality stats read: `source` itself, or a view of a detection or segmentation set's
    images (cnnkit.data.fingerprint.image_view)."""
    return image_view(source)


def _paths(source: Any, items: list[int]) -> list[str]:
    return [_name(source, i) for i in items]


def _name(source: Any, i: int) -> str:
    """How the audit names item i: its file (or id) for every kind of source."""
    if isinstance(source, ImageSource):
        return item_name(source, int(i))
    if hasattr(source, "items"):  # DetectionSource
        path = source.items[int(i)].path
    else:  # SegmentationSource
        path = source.path(int(i))
    return str(path) if path is not None else f"{getattr(source, 'name', 'item')}/{int(i)}"


def hashes_discriminate(phashes: np.ndarray) -> bool:
    """Whether pHash tells this set's images apart: fewer than CLOSE_SHARE of random pairs within twice
    MAX_DISTANCE bits. Photos pass by far (hymenoptera: 0.03%); small grey digits do not (MNIST 4.5%, the 8×8
    digits 1.9%), and near-duplicate groups would chain thousands of different digits. True duplicates cannot
    tip it: they are a vanishing share of all pairs."""
    from cnnkit.audit.duplicates import MAX_DISTANCE, chance_pairs

    n = len(phashes)
    return n < 2 or chance_pairs(phashes, 2 * MAX_DISTANCE) / (n * (n - 1) / 2) < CLOSE_SHARE


def exact_groups(exact: list[str], names: list[str]) -> list[dict]:
    """Groups of items with equal pixel hashes, as find_duplicates gives them (leaks first, then the largest)."""
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(exact):
        by_hash.setdefault(h, []).append(i)
    groups = [{"items": items, "kind": "exact", "crosses_splits": len({names[i] for i in items}) > 1,
               "splits": sorted({names[i] for i in items}), "distance": 0}
              for items in by_hash.values() if len(items) > 1]
    return sorted(groups, key=lambda g: (not g["crosses_splits"], -len(g["items"]), g["items"][0]))


def duplicates_section(found: Any, images: Any) -> None:
    """Exact and near-duplicate groups over every item, leaks (groups across splits) first."""
    from cnnkit.audit.duplicates import find_duplicates, phash_source
    from cnnkit.data.fingerprint import pixel_hashes

    names = _split_of(found.target)
    exact = pixel_hashes(images)
    phashes = phash_source(images)
    near = hashes_discriminate(phashes) or found.features is not None  # embeddings confirm each pair
    if near:
        groups = find_duplicates(exact, phashes, names, embeddings=found.features)
    else:
        log.warning("audit: perceptual hashes cannot tell this set's images apart; only exact duplicates are listed")
        groups = exact_groups(exact, names)
    found.sections["near_duplicates_searched"] = near
    found.sections["duplicates"] = [{**g, "paths": _paths(found.target.source, g["items"])} for g in groups]


def quality_section(found: Any, images: Any) -> None:
    """Image-quality flags, and embedding outliers where embeddings were computed."""
    from cnnkit.audit.quality import embedding_outliers, image_stats, outlier_flags, quality_issues

    names = _split_of(found.target)
    rows = quality_issues(image_stats(images))
    counts = Counter(r["issue"] for r in rows)
    common = {issue for issue, n in counts.items() if n > SET_WIDE * len(images)}  # the set's, not an image's
    found.sections["quality_of_the_set"] = [{"issue": issue, "share": counts[issue] / len(images)}
                                            for issue in sorted(common)]
    found.sections["quality"] = [{**r, "path": _name(found.target.source, r["index"]), "split": names[r["index"]]}
                                 for r in rows if r["issue"] not in common]
    if found.features is not None:
        scores = embedding_outliers(found.features)
        flagged = outlier_flags(scores)
        found.sections["outliers"] = [{"index": int(i), "path": _name(found.target.source, int(i)),
                                       "split": names[int(i)], "score": float(scores[i])}
                                      for i in np.argsort(-scores) if flagged[i]]


def annotators_section(found: Any, annotators: str | Path) -> None:
    """Agreement between the label columns of the CSV `annotators` (one per annotator)."""
    from cnnkit.audit.annotators import agreement, read_annotations

    paths, matrix = read_annotations(annotators)
    result = agreement(matrix)
    for row in result["disagreements"]:
        row["path"] = paths[row["index"]]
        row["votes"] = ", ".join(f"{k}: {v}" for k, v in row["votes"].items())
    result["majority"] = [{"path": p, "majority": m, "tie": t}
                          for p, m, t in zip(paths, result["majority"], result.pop("tie"))]
    found.sections["annotators"] = {"file": str(annotators), **result}


def effort_items(found: Any) -> int:
    """What an annotator marks in the whole set: boxes (detection, instance segmentation), else images."""
    source = found.target.source
    if hasattr(source, "items"):
        return int(sum(len(item.boxes) for item in source.items))
    return len(source)


def common_sections(found: Any, *, annotators: str | Path | None, seconds_per_item: float | None,
                    images: Any) -> None:
    """Duplicates and leaks, quality and outliers, annotator agreement, the annotation effort."""
    from cnnkit.audit.effort import annotation_effort

    duplicates_section(found, images)
    quality_section(found, images)
    if annotators is not None:
        annotators_section(found, annotators)
    found.sections["effort"] = annotation_effort(effort_items(found), seconds_per_item or
                                                 SECONDS_PER_ITEM[found.target.recipe.name])
