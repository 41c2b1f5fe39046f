"""Image quality, embedding outliers and class balance, on images written in the test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from sklearn.utils.class_weight import compute_class_weight

from cnnkit.audit.quality import class_balance, embedding_outliers, image_stats, outlier_flags, quality_issues, robust_z
from cnnkit.data.sources import from_arrays, from_folder


def texture(rng: np.random.Generator, width: int = 128, height: int = 96) -> Image.Image:
    """An ordinary colour picture: smooth random colour blobs plus fine grain."""
    coarse = Image.fromarray(rng.integers(30, 226, (height // 8, width // 8, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float64)
    grain = rng.normal(0, 12, smooth.shape)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def quality_folder(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """20 ordinary textures in ok/, and one image per issue in bad/ (file name → expected issue)."""
    root = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(0)
    (root / "ok").mkdir()
    (root / "bad").mkdir()
    for k in range(20):
        texture(rng).save(root / "ok" / f"{k:02d}.png")
    special = {
        "blurry.png": texture(rng).filter(ImageFilter.GaussianBlur(4)),
        "dark.png": Image.fromarray((np.asarray(texture(rng)) * 0.06).astype(np.uint8)),
        "bright.png": Image.fromarray((255 - np.asarray(texture(rng)) * 0.05).astype(np.uint8)),
        "tiny.png": texture(rng, 10, 10),
        "extreme_aspect.png": texture(rng, 400, 40),
        "grayscale.jpg": texture(rng).convert("L").convert("RGB"),
    }
    for name, im in special.items():
        im.save(root / "bad" / name)
    return root, {name: name.split(".")[0] for name in special}


def test_each_issue_fires_on_its_image_and_nothing_on_ordinary_ones(quality_folder) -> None:
    root, expected = quality_folder
    source = from_folder(root)
    stats = image_stats(source)
    issues = quality_issues(stats)
    by_name: dict[str, set[str]] = {}
    for issue in issues:
        by_name.setdefault(Path(source.ids[issue["index"]]).name, set()).add(issue["issue"])
        assert issue["score"] > 0
    ordinary = {n for n in by_name if n not in expected}
    assert not ordinary, {n: by_name[n] for n in ordinary}
    for name, issue in expected.items():
        assert issue in by_name.get(name, set()), (name, by_name)


def test_stats_measure_what_they_say() -> None:
    rng = np.random.default_rng(1)
    sharp = np.asarray(texture(rng, 160, 80))
    images = np.stack([sharp, np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(2))),
                       np.full_like(sharp, 51), np.repeat(sharp[..., :1], 3, axis=2)])  # (4, H, W, 3)
    stats = image_stats(from_arrays(images, np.array([0, 1, 0, 1])))
    assert stats["blur"][1] < stats["blur"][0] / 4 and stats["blur"][2] == 0
    assert stats["brightness"][2] == pytest.approx(51 / 255, abs=1e-3) and stats["contrast"][2] == 0
    grey = images[0].astype(np.float64) @ [0.299, 0.587, 0.114] / 255
    assert stats["brightness"][0] == pytest.approx(grey.mean(), abs=0.01)
    assert stats["width"].tolist() == [160] * 4 and stats["height"].tolist() == [80] * 4
    assert stats["aspect"].tolist() == [2.0] * 4
    assert stats["grayscale"].tolist() == [False, False, True, True]


def test_sizes_compare_at_the_working_size() -> None:
    """The same picture at two sizes has similar sharpness (the working size is fixed)."""
    rng = np.random.default_rng(2)
    big = texture(rng, 512, 384)
    small = big.resize((256, 192), Image.BICUBIC)
    blur = [image_stats(from_arrays(np.array(im)[None], np.array([0]), check=False))["blur"][0] for im in (big, small)]
    assert 0.7 < blur[0] / blur[1] < 1.4


def test_grayscale_is_only_flagged_in_a_mostly_colour_set() -> None:
    n = 10
    stats = {"blur": np.full(n, 100.0), "brightness": np.full(n, 0.5), "width": np.full(n, 64),
             "height": np.full(n, 64), "aspect": np.ones(n), "grayscale": np.arange(n) < 6}
    assert not [i for i in quality_issues(stats) if i["issue"] == "grayscale"]
    stats["grayscale"] = np.arange(n) < 1
    assert [i["index"] for i in quality_issues(stats) if i["issue"] == "grayscale"] == [0]


def test_robust_z() -> None:
    x = np.array([1.0, 2, 3, 4, 100])
    mad = np.median(np.abs(x - 3))
    np.testing.assert_allclose(robust_z(x), (x - 3) / (1.4826 * mad))
    assert robust_z(np.ones(5)).tolist() == [0.0] * 5


def test_embedding_outliers_rank_far_points_first() -> None:
    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    cluster = centre + 0.1 * rng.normal(size=(200, 32))
    far = rng.normal(size=(3, 32)) * 3  # random directions: far in cosine from the cluster's
    x = np.concatenate([cluster, far])
    scores = embedding_outliers(x, k=10)
    assert set(np.argsort(-scores)[:3]) == {200, 201, 202}
    flags = outlier_flags(scores)
    assert flags[200:].all() and flags[:200].sum() <= 2
    # against a direct computation for one point
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - xn @ xn[200]
    assert scores[200] == pytest.approx(np.sort(d)[1:11].mean())


def test_class_balance_weights_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(3, 300, p=[0.6, 0.3, 0.1])
    splits = rng.choice(["train", "val", "test"], 300, p=[0.7, 0.15, 0.15]).tolist()
    result = class_balance(labels, ["a", "b", "c"], splits)
    train = labels[np.asarray(splits) == "train"]
    expected = compute_class_weight("balanced", classes=np.arange(3), y=train)
    np.testing.assert_allclose(result["weights"], expected)
    assert result["weights_from"] == "train"
    assert result["counts"]["all"] == np.bincount(labels).tolist()
    assert result["counts"]["val"] == np.bincount(labels[np.asarray(splits) == "val"], minlength=3).tolist()
    assert result["imbalance_ratio"] == pytest.approx(np.bincount(labels).max() / np.bincount(labels).min())


def test_class_balance_with_an_empty_class_and_no_splits() -> None:
    labels = np.array([0, 0, 0, 2])
    result = class_balance(labels, ["a", "b", "c"])
    assert result["weights_from"] == "all" and result["imbalance_ratio"] == float("inf")
    expected = compute_class_weight("balanced", classes=np.array([0, 2]), y=labels)
    assert result["weights"][1] is None
    np.testing.assert_allclose([result["weights"][0], result["weights"][2]], expected)


def test_image_stats_of_one_channel_arrays() -> None:
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    stats = image_stats(from_arrays(x, np.array([0, 1, 0, 1, 0])))
    assert stats["grayscale"].all() and stats["width"].tolist() == [28] * 5
