"""Selective search and the region cache (cnnkit.models.detection.proposals): proposals that find the objects
of a drawn image, keys that follow the pixels and the weights, atomic entries, and one-line errors."""
from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.proposals import RegionCache, image_key, module_key, selective_search


def _drawn() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.full((3, 120, 160), 30, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 20.0, 60.0, 100.0], [90.0, 30.0, 150.0, 70.0]])
    image[0, 20:100, 10:60] = 220
    image[1, 30:70, 90:150] = 200
    return image, boxes


def test_selective_search_proposes_the_drawn_objects() -> None:
    image, truth = _drawn()
    boxes = selective_search(image, top=300)
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4 and 0 < len(boxes) <= 300
    assert (box_iou(truth, boxes).max(1).values > 0.9).all()  # each object has a proposal on it
    assert len(torch.unique(boxes, dim=0)) == len(boxes)  # no repeats
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 8).all()  # no sliver under min_side
    assert torch.equal(selective_search(image.float() / 255, top=300), boxes)  # float images: the same pixels
    assert len(selective_search(image, top=5)) == 5


def test_bad_mode_and_missing_opencv_are_one_line_errors(monkeypatch) -> None:
    image, _ = _drawn()
    with pytest.raises(CnnkitError, match="unknown selective search mode 'slow'"):
        selective_search(image, mode="slow")
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "cv2" else real_import(name, *a, **k))
    with pytest.raises(CnnkitError, match=r"pip install 'cnnkit\[proposals\]'"):
        selective_search(image)


def test_keys_follow_the_pixels_the_settings_and_the_weights() -> None:
    image, _ = _drawn()
    assert image_key(image, "a") == image_key(image.float() / 255, "a")  # stored at 8 bits either way
    assert image_key(image, "a") != image_key(image, "b")
    other = image.clone()
    other[0, 0, 0] += 1
    assert image_key(other, "a") != image_key(image, "a")
    layer = torch.nn.Linear(3, 2)
    key = module_key(layer)
    assert module_key(layer) == key
    layer.load_state_dict({"weight": layer.weight.detach() * 2, "bias": layer.bias.detach()})
    assert module_key(layer) != key
    with torch.inference_mode():  # a model loaded under inference_mode has no version counters: hashed each time
        made = torch.nn.Linear(3, 2)
        made.load_state_dict(layer.state_dict())
        assert module_key(made) == module_key(layer)


def test_the_cache_counts_hits_and_recomputes_a_damaged_entry(tmp_path: Path) -> None:
    cache = RegionCache("test", root=tmp_path)
    made = []
    make = lambda: made.append(1) or torch.arange(4.0)  # noqa: E731
    assert torch.equal(cache.get_or_make("ab12", make), torch.arange(4.0))
    assert torch.equal(cache.get_or_make("ab12", make), torch.arange(4.0))
    assert (cache.hits, cache.misses, len(made)) == (1, 1, 1)
    assert not list(tmp_path.rglob("*.tmp"))  # the temporary file was renamed into place
    cache.path("ab12").write_bytes(b"not a tensor")
    assert torch.equal(cache.get_or_make("ab12", make), torch.arange(4.0)) and len(made) == 2


def test_a_cache_that_cannot_be_written_warns_and_still_answers(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache wants a folder
    cache = RegionCache("test", root=blocker)
    with pytest.warns(UserWarning, match="region cache: cannot write"):
        assert torch.equal(cache.get_or_make("cd34", lambda: torch.ones(2)), torch.ones(2))
