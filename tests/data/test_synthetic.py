"""synthetic-shapes: seeded, balanced, with boxes and masks that agree with the pixels."""
from __future__ import annotations

import numpy as np
import pytest

from cnnkit.config import parse_key_values
from cnnkit.data.builtin import open_source
from cnnkit.data.synthetic import SHAPES, ShapesConfig, make_shapes
from cnnkit.errors import CnnkitError


def shapes(**options):
    return make_shapes(ShapesConfig(**options))


def test_same_seed_same_arrays_other_seed_other_arrays():
    a = shapes(n=30, size=16, seed=3)
    b = shapes(n=30, size=16, seed=3)
    c = shapes(n=30, size=16, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[3], c[3])


def test_shapes_and_dtypes():
    images, labels, boxes, masks = shapes(n=12, size=20)
    assert images.shape == (12, 3, 20, 20) and images.dtype == np.uint8
    assert labels.shape == (12,) and boxes.shape == (12, 4) and masks.shape == (12, 20, 20) and masks.dtype == bool


@pytest.mark.parametrize("n", [3, 10, 11, 300])
def test_classes_are_balanced(n):
    _, labels, _, _ = shapes(n=n, size=8)
    counts = np.bincount(labels, minlength=3)
    assert counts.sum() == n and counts.max() - counts.min() <= (0 if n % 3 == 0 else 1)


def test_boxes_tightly_enclose_the_masks():
    _, _, boxes, masks = shapes(n=60, size=24, seed=1)
    for box, mask in zip(boxes, masks):
        ys, xs = np.nonzero(mask)
        assert len(xs) > 0
        x1, y1, x2, y2 = box
        # every mask pixel lies inside [x1, x2) × [y1, y2), and each edge of the box touches the mask
        assert xs.min() == x1 and ys.min() == y1 and xs.max() + 1 == x2 and ys.max() + 1 == y2
        assert mask[:, int(x1)].any() and mask[:, int(x2) - 1].any()
        assert mask[int(y1)].any() and mask[int(y2) - 1].any()


def test_masks_agree_with_pixels():
    """Without noise, the shape's pixels are its colour (each channel >= 0.5) and the rest the dark background."""
    images, _, _, masks = shapes(n=45, size=24, noise=0.0, seed=2)
    background = int(0.1 * 255 + 0.5)
    for img, mask in zip(images, masks):
        assert (img[:, ~mask] == background).all()
        assert (img[:, mask] >= 127).all()
        assert (img[:, mask] == img[:, mask][:, :1]).all()  # one colour per shape


def test_masks_stand_out_from_noisy_background():
    images, _, _, masks = shapes(n=30, size=24, seed=5, background="noise")
    for img, mask in zip(images, masks):
        assert img[:, mask].mean() > img[:, ~mask].mean() + 40


def test_shape_geometry():
    """Circles fill about π/4 of their box, squares all of it, triangles about half."""
    _, labels, boxes, masks = shapes(n=90, size=64, seed=6, min_scale=0.5, max_scale=0.7)
    fill = masks.sum((1, 2)) / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    for k, kind in enumerate(SHAPES):
        mean = fill[labels == k].mean()
        expected = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}[kind]
        assert abs(mean - expected) < 0.06, (kind, mean)
    square = labels == SHAPES.index("square")
    w, h = boxes[square, 2] - boxes[square, 0], boxes[square, 3] - boxes[square, 1]
    assert np.abs(w - h).max() <= 1


@pytest.mark.parametrize("colour", ["white", "class"])
def test_colour_options(colour):
    images, labels, _, masks = shapes(n=30, size=16, noise=0.0, colour=colour)
    for img, label, mask in zip(images, labels, masks):
        pixel = img[:, mask][:, 0]
        if colour == "white":
            assert pixel.tolist() == [255, 255, 255]
        else:
            ref = [[1.0, 0.3, 0.3], [0.3, 1.0, 0.3], [0.3, 0.5, 1.0]][label]
            assert pixel.tolist() == [int(c * 255 + 0.5) for c in ref]


def test_source_carries_boxes_and_masks():
    src = open_source("synthetic-shapes:n=12,size=16,seed=7")
    images, labels, boxes, masks = shapes(n=12, size=16, seed=7)
    assert src.classes == list(SHAPES) and src.name == "synthetic-shapes"
    np.testing.assert_array_equal(src.arrays.numpy(), images)
    np.testing.assert_array_equal(src.labels, labels)
    np.testing.assert_array_equal(np.stack(src.extras["boxes"]), boxes)
    np.testing.assert_array_equal(np.stack(src.extras["masks"]), masks)


def testparse_key_values():
    assert parse_key_values("n=600,size=32") == {"n": 600, "size": 32}
    assert parse_key_values(" noise = 0.5 ,colour=white,,") == {"noise": 0.5, "colour": "white"}
    assert parse_key_values("") == {}
    src = open_source("synthetic-shapes:n=9,size=12,colour=class,background=random,min_scale=0.5")
    assert len(src) == 9 and src.arrays.shape == (9, 3, 12, 12)


def test_several_shapes_per_image_give_multilabel_targets():
    src = open_source("synthetic-shapes:n=60,size=48,count=3")
    assert src.problem == "multilabel" and src.classes == list(SHAPES)
    counts = [len(k) for k in src.extras["box_labels"]]
    assert min(counts) >= 1 and max(counts) == 3
    for present, kinds, boxes in zip(src.targets, src.extras["box_labels"], src.extras["boxes"]):
        assert present.tolist() == [float(k in kinds) for k in range(3)]  # the kinds drawn, nothing else
        assert boxes.shape == (len(kinds), 4)
    again = open_source("synthetic-shapes:n=60,size=48,count=3")
    assert np.array_equal(again.arrays.numpy(), src.arrays.numpy())  # seeded


def test_geometry_targets_are_the_centre_and_size_of_the_box():
    src = open_source("synthetic-shapes:n=12,target=geometry")
    boxes = np.stack(src.extras["boxes"])
    assert src.problem == "regression" and src.classes == ["x", "y", "size"]
    np.testing.assert_allclose(src.targets[:, 0], (boxes[:, 0] + boxes[:, 2]) / 2)
    np.testing.assert_allclose(src.targets[:, 1], (boxes[:, 1] + boxes[:, 3]) / 2)
    np.testing.assert_allclose(src.targets[:, 2], boxes[:, 2] - boxes[:, 0])
    masks = np.stack(src.extras["masks"])
    assert (masks.any(1).sum(1) == src.targets[:, 2]).all()  # the size is the shape's width in pixels


@pytest.mark.parametrize("spec, message", [
    ("synthetic-shapes:count=2,target=class", "several shapes in an image: use target=labels"),
    ("synthetic-shapes:target=boxes", "target is class|labels|geometry"),
    ("synthetic-shapes:sise=12", "unknown synthetic-shapes option 'sise'; did you mean 'size'"),
    ("synthetic-shapes:colur=white", "did you mean 'colour'"),
    ("synthetic-shapes:n", "bad option 'n'; write key=value"),
    ("synthetic-shapes:n=2", "need n >= 3"),
    ("synthetic-shapes:size=4", "size >= 8"),
    ("synthetic-shapes:colour=purple", "colour is random|white|class"),
    ("synthetic-shapes:min_scale=0.9,max_scale=0.5", "min_scale <= max_scale"),
    ("synthetic-shapes:n=ten", "synthetic-shapes:"),
])
def test_option_errors(spec, message):
    with pytest.raises(CnnkitError) as err:
        open_source(spec)
    assert message in str(err.value)
