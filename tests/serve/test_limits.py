"""The server's limits: the defaults the CLI documents, a bad value refused in one line naming its flag."""
from __future__ import annotations

import pytest

from cnnkit.errors import CnnkitError
from cnnkit.serve.limits import MB, Limits, content_type_of, flag, megabytes, megapixels


def test_the_defaults() -> None:
    limits = Limits()
    assert limits.max_request_bytes == 20 * MB and limits.max_image_pixels == 40_000_000
    assert limits.max_images == 16 and limits.max_batch == 16 and limits.max_wait_s == 0.005
    assert limits.as_dict()["max_queued"] == 256 and limits.timeout_s == 120


@pytest.mark.parametrize(("options", "fragment"), [
    ({"max_images": 0}, "--max-images must be a positive integer"),
    ({"max_request_bytes": 1.5}, "--max-request-bytes must be a positive integer"),
    ({"max_wait_s": -0.001}, "--max-wait-ms must be zero or more"),
    ({"timeout_s": 0}, "--timeout must be positive"),
    ({"max_queued": 4, "max_images": 8}, "--max-queued (4) must hold at least one request's images"),
])
def test_a_bad_limit_is_one_line_naming_its_flag(options: dict, fragment: str) -> None:
    with pytest.raises(CnnkitError, match="^" + fragment.replace("(", r"\(").replace(")", r"\)")):
        Limits(**options)


def test_helpers() -> None:
    assert flag("max_image_pixels") == "--max-image-pixels"
    assert content_type_of("Image/PNG; charset=x") == "image/png" and content_type_of(None) == ""
    assert megabytes(20 * MB) == "20 MB" and megapixels(400_000_000) == "400 Mpx"
