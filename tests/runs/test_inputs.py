"""Images to predict on: batches preprocessed as the card says, decoded one batch at a time; an unreadable file is
skipped into `skipped` (image_batches) or one warning (readable_images); none readable is a one-line error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import random_image, write_image

from cnnkit.data.images import read_image
from cnnkit.errors import CnnkitError
from cnnkit.runs.card import ModelCard
from cnnkit.runs.inputs import image_batches, readable_images


def _images(folder: Path, n: int, bad: tuple[int, ...] = ()) -> list[Path]:
    """n files 0.png ... ; those in `bad` hold bytes that are no image."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        if i in bad:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not a png at all")
        else:
            write_image(path, random_image(rng, size=10 + i))
        paths.append(path)
    return paths


CARD = ModelCard("lenet5", "multiclass", ["a", "b"], [1, 16, 16], [0.5], [0.25])


def test_image_batches_shapes_values_and_skipped(tmp_path: Path) -> None:
    paths = _images(tmp_path, 5, bad=(1,))
    skipped: list[str] = []
    batches = list(image_batches(paths, CARD, 2, skipped))
    assert [kept for kept, _ in batches] == [[paths[0]], [paths[2], paths[3]], [paths[4]]]
    assert [images.shape for _, images in batches] == [(1, 1, 16, 16), (2, 1, 16, 16), (1, 1, 16, 16)]
    assert len(skipped) == 1 and skipped[0].startswith(f"{paths[1]} (")
    transform = CARD.transform()
    for kept, images in batches:
        for path, image in zip(kept, images):  # each is the card's preprocessing of the decoded grey image
            torch.testing.assert_close(image, transform(read_image(path, 1)))


def test_image_batches_yields_nothing_for_a_batch_of_unreadable_files(tmp_path: Path) -> None:
    paths = _images(tmp_path, 4, bad=(0, 1))
    skipped: list[str] = []
    batches = list(image_batches(paths, CARD, 2, skipped))
    assert [kept for kept, _ in batches] == [[paths[2], paths[3]]]
    assert len(skipped) == 2


def test_readable_images_skips_with_one_warning(tmp_path: Path) -> None:
    paths = _images(tmp_path, 3, bad=(1,))
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\)") as seen:
        read = list(readable_images(paths))
    ours = [w for w in seen if "unreadable" in str(w.message)]
    assert len(ours) == 1 and str(paths[1]) in str(ours[0].message)
    assert [p for p, _ in read] == [paths[0], paths[2]]
    for path, image in read:
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert torch.equal(image, read_image(path, 3))


def test_readable_images_none_readable_is_a_one_line_error(tmp_path: Path) -> None:
    paths = _images(tmp_path, 2, bad=(0, 1))
    with pytest.warns(UserWarning), pytest.raises(CnnkitError, match="no readable images to predict") as err:
        list(readable_images(paths))
    assert "\n" not in str(err.value)


def test_worker_processes_read_the_same_batches_in_order(tmp_path: Path) -> None:
    paths = _images(tmp_path, 7, bad=(2, 5))
    by_main: list[str] = []
    expected = list(image_batches(paths, CARD, 2, by_main, workers=0))
    by_workers: list[str] = []
    got = list(image_batches(paths, CARD, 2, by_workers, workers=2))
    assert [k for k, _ in got] == [k for k, _ in expected] and by_workers == by_main and len(by_main) == 2
    for (_, a), (_, b) in zip(got, expected):
        assert torch.equal(a, b)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable"):
        assert [p for p, _ in readable_images(paths, workers=2)] == [p for i, p in enumerate(paths) if i not in (2, 5)]


def test_read_workers_follow_the_cores(monkeypatch) -> None:
    from cnnkit.runs import inputs

    for cores, batches, expected in ((16, 10, 8), (4, 10, 3), (2, 10, 1), (1, 10, 0), (16, 1, 0)):
        monkeypatch.setattr(inputs, "cores", lambda n=cores: n)
        assert inputs.read_workers(batches) == expected
