"""What the detection, instance and segmentation recipes share: a split by image index, and reading it back.

Their split.json is {"task", "seed", "fractions", "count", "splits": {name: [image indices]}}: the sources
(COCO, VOC, YOLO, Penn-Fudan, mask folders, built-ins) have no class label per image to stratify on.

    split = index_split(cfg, source, source.presplit)
    record = index_record(cfg, source, split)
    val = read_index_split(source, record, "val")
"""
from __future__ import annotations

import numpy as np

from cnnkit.config import Config
from cnnkit.data.split import make_split
from cnnkit.errors import CnnkitError


class _SplitView:
    """What make_split reads of a source: its length, labels to stratify on (none here), given splits."""

    def __init__(self, n: int, presplit: dict | None = None):
        self.labels, self.presplit = np.zeros(n, dtype=np.int64), dict(presplit or {})

    def __len__(self) -> int:
        return len(self.labels)


def index_split(cfg: Config, source, presplit: dict | None = None) -> dict[str, np.ndarray]:
    """A seeded split by image (the test share locked); `presplit` keeps given train/val/test indices."""
    return make_split(_SplitView(len(source), presplit), cfg.data.val, cfg.data.test, cfg.train.seed)


def index_record(cfg: Config, source, split: dict) -> dict:
    return {"task": cfg.task, "seed": cfg.train.seed, "fractions": {"val": cfg.data.val, "test": cfg.data.test},
            "count": len(source), "splits": {k: [int(i) for i in v] for k, v in split.items()}}


def read_index_split(source, record: dict, name: str) -> np.ndarray:
    """Split `name`'s image indices from a split.json record; data that changed since training is an error."""
    if len(source) != record["count"]:
        raise CnnkitError(f"the data holds {len(source)} images, but the run was split on {record['count']}; "
                          "the data changed since training")
    return np.asarray(record["splits"][name], dtype=np.int64)
