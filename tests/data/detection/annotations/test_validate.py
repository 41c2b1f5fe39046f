"""Checks of detection annotations (cnnkit.data.detection.annotations.validate): each kind of bad box fixed,
dropped or fatal as the policy says, always counted and reported, the fatal ones a one-line error."""
from __future__ import annotations

import logging

import pytest

from cnnkit.data.detection.annotations.coco import read_coco
from cnnkit.data.detection.annotations.validate import ValidationPolicy, parse_policy, validate
from cnnkit.errors import CnnkitError


@pytest.fixture
def check(tmp_path, coco_file):
    def run(boxes, policy=None, **kw):
        return validate(read_coco(coco_file(tmp_path, boxes, **kw)), policy)
    return run


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_parse_policy_accepts_every_form():
    assert parse_policy(None) == ValidationPolicy()
    assert parse_policy("outside=drop,unknown_class=fix") == ValidationPolicy(outside="drop", unknown_class="fix")
    assert parse_policy({"empty_image": "keep"}).empty_image == "keep"
    policy = ValidationPolicy(duplicate="fatal")
    assert parse_policy(policy) is policy


def test_bad_policy():
    with pytest.raises(CnnkitError, match="unknown annotation check 'outsde'; did you mean 'outside'"):
        parse_policy("outsde=drop")
    with pytest.raises(CnnkitError, match="--policy outside=keep: choose one of fix, drop, fatal"):
        parse_policy({"outside": "keep"})


def test_clean_data_reports_no_problems(check, good_boxes, caplog):
    with caplog.at_level(logging.INFO, logger="cnnkit"):
        source, report = check(good_boxes)
    assert report.problems == 0 and source.num_boxes == 2 and source.report is report
    assert "checked 2 images, 2 boxes: no problems" in caplog.text


def test_box_outside_the_image(check, caplog):
    boxes = [(1, "cat", [30, 20, 20, 20]), (2, "dog", [1, 1, 5, 5])]  # x2 = 50 > 40, y2 = 40 > 30
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(boxes)  # default: fix = clip
    assert source.items[0].boxes.tolist() == [[30, 20, 40, 30]]
    assert report.counts["outside"] == 1
    assert "1 box(es) outside the image: clipped to the image; e.g. " in caplog.text
    assert "img1.png box [30, 20, 50, 40] in a 40×30 image" in caplog.text
    source, _ = check(boxes, "outside=drop")
    assert len(source.items[0].boxes) == 0
    with pytest.raises(CnnkitError) as err:
        check(boxes, {"outside": "fatal"})
    assert one_line(err).startswith("1 box(es) outside the image, first: ")
    assert "img1.png box [30, 20, 50, 40]" in str(err.value) and "--policy outside=fix (or drop)" in str(err.value)


def test_float_noise_beyond_the_edge_is_clipped_silently(check):
    source, report = check([(1, "cat", [0, 0, 40.0004, 30]), (2, "dog", [1, 1, 5, 5])])
    assert report.problems == 0 and source.items[0].boxes.tolist() == [[0, 0, 40, 30]]


def test_box_with_zero_or_negative_area(check, caplog):
    boxes = [(1, "cat", [5, 5, 0, 4]), (1, "cat", [20, 10, -5, 5]), (2, "dog", [1, 1, 5, 5])]
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(boxes)  # default: drop
    assert report.counts["zero_area"] == 2 and len(source.items[0].boxes) == 0
    assert "2 box(es) with zero or negative area: dropped; e.g. " in caplog.text and "box [5, 5, 5, 9]" in caplog.text
    source, _ = check(boxes, "zero_area=fix")  # reversed corners swapped, the empty box dropped
    assert source.items[0].boxes.tolist() == [[15, 10, 20, 15]]
    with pytest.raises(CnnkitError) as err:
        check(boxes, "zero_area=fatal")
    assert one_line(err).startswith("2 box(es) with zero or negative area, first: ")
    assert "correct the box's corners, or set --policy zero_area=fix (or drop)" in str(err.value)


def test_unknown_class(check, caplog):
    boxes = [(1, "cat", [1, 1, 5, 5]), (2, 7, [2, 2, 6, 6])]  # category id 7 is not in the categories
    with pytest.raises(CnnkitError) as err:
        check(boxes)  # default: fatal
    message = one_line(err)
    assert message.startswith("1 box(es) of a class not in the class list, first: ")
    assert "img2.png class '7' box [2, 2, 8, 8]" in message and "--policy unknown_class=fix (or drop)" in message
    source, _ = check(boxes, "unknown_class=fix")
    assert source.classes == ["cat", "dog", "7"] and source.items[1].labels.tolist() == [2]
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(boxes, "unknown_class=drop")
    assert source.classes == ["cat", "dog"] and len(source.items[1].boxes) == 0 and report.counts["empty_image"] == 1
    assert "of a class not in the class list: dropped" in caplog.text


def test_image_without_annotations(check, caplog):
    boxes = [(1, "cat", [1, 1, 5, 5])]  # image 2 has none
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(boxes)  # default: keep as a negative image, reported
    assert len(source) == 2 and report.counts["empty_image"] == 1
    assert "1 image(s) without annotations: kept as negative images; e.g. " in caplog.text and "img2.png" in caplog.text
    source, _ = check(boxes, "empty_image=drop")
    assert len(source) == 1 and source.items[0].image_id == 1
    with pytest.raises(CnnkitError) as err:
        check(boxes, "empty_image=fatal")
    assert one_line(err).startswith("1 image(s) without annotations, first: ")
    assert "--policy empty_image=keep (or drop)" in str(err.value)


def test_duplicate_boxes(check, caplog):
    boxes = [(1, "cat", [2, 2, 20, 20]), (1, "cat", [2, 2, 20, 20]), (1, "cat", [2, 2, 20, 20.2]),
             (1, "dog", [2, 2, 20, 20]), (2, "dog", [1, 1, 5, 5])]  # the dog box has another class: kept
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(boxes)  # default: drop the later copies
    assert report.counts["duplicate"] == 2 and source.items[0].labels.tolist() == [0, 1]
    assert "2 duplicate box(es) (same class, IoU > 0.95): dropped" in caplog.text
    with pytest.raises(CnnkitError) as err:
        check(boxes, "duplicate=fatal")
    assert one_line(err).startswith("2 duplicate box(es) (same class, IoU > 0.95), first: ")
    assert "remove the repeated box, or set --policy duplicate=fix (or drop)" in str(err.value)


def test_report_examples_are_capped(check):
    boxes = [(1, "cat", [1, 1, 0, 0])] * 10 + [(2, "dog", [1, 1, 5, 5])]
    _, report = check(boxes)
    assert report.counts["zero_area"] == 10 and len(report.examples["zero_area"]) == 3
    assert report.summary()[0] == "checked 2 images, 11 boxes: 11 problem(s)"  # 10 zero-area + 1 empty image
