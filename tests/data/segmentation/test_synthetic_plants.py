"""`synthetic-plants` (cnnkit.data.segmentation.synthetic_plants): deterministic per (seed, index), every class
present, label noise that flips the asked fraction of plants and leaves the pixels alone, checked options."""
from __future__ import annotations

import numpy as np
import pytest

from cnnkit.data.segmentation.source import open_segmentation_source
from cnnkit.data.segmentation.synthetic_plants import (
    CLASSES,
    PALETTE,
    PlantsConfig,
    make_plants_item,
    parse_plants_options,
    synthetic_plants,
)
from cnnkit.errors import CnnkitError


def test_synthetic_plants_is_deterministic_per_seed_and_index() -> None:
    a = synthetic_plants("size=48,count=6,seed=3")
    b = open_segmentation_source("synthetic-plants:size=48,count=6,seed=3")
    assert a.classes == CLASSES == ["soil", "grass", "clover", "weed"] and len(a) == 6
    assert a.palette == PALETTE == [(0, 0, 0), (0, 0, 255), (255, 0, 0), (255, 255, 0)]
    for i in (0, 5):
        (ia, ma), (ib, mb) = a.read(i), b.read(i)
        assert ia.shape == (3, 48, 48) and ia.dtype.itemsize == 1 and ma.shape == (48, 48)
        assert (ia == ib).all() and (ma == mb).all()
    other = synthetic_plants("size=48,count=6,seed=4")
    assert not (other.read(0)[0] == a.read(0)[0]).all()
    image, mask = make_plants_item(PlantsConfig(size=48, seed=3), 5)  # item 5 from (seed, 5) alone
    assert np.array_equal(image.transpose(2, 0, 1), a.read(5)[0].numpy()) and np.array_equal(mask, a.read(5)[1])


def test_synthetic_plants_shows_every_class() -> None:
    source = synthetic_plants("size=48,count=12,density=8")
    counts = sum(np.bincount(source.read(i)[1].numpy().ravel(), minlength=4) for i in range(12))
    assert (counts > 0).all() and counts[0] == counts.max()


def test_label_noise_flips_about_the_asked_fraction_of_plant_pixels() -> None:
    clean = synthetic_plants("size=48,count=40,density=8,blur=0")
    noisy = synthetic_plants("size=48,count=40,density=8,blur=0,label_noise=0.3")
    changed = plants = 0
    for i in range(40):
        (ic, mc), (inoisy, mn) = clean.read(i), noisy.read(i)
        assert (ic == inoisy).all()  # only the labels change
        plants += int((mc > 0).sum())
        changed += int(((mc != mn) & (mc > 0)).sum())
        assert ((mc == 0) == (mn == 0)).all()
    assert 0.15 < changed / plants < 0.45


@pytest.mark.parametrize("options,message", [("sise=64", "did you mean 'size'"), ("lighting=2", "0..1"),
                                             ("size=8", "size >= 16"), ("count=1.5", "integer"),
                                             ("density=0", "density > 0")])
def test_synthetic_plants_bad_options(options: str, message: str) -> None:
    with pytest.raises(CnnkitError, match=message) as info:
        parse_plants_options(options)
    assert "\n" not in str(info.value)
