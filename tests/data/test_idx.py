"""IDX files (cnnkit.data.idx): every type code read as torchvision reads it, and every fault of a file — a
header claiming 2^31 items, a wrong magic, type or dimension count, a file cut short or too long — a one-line
error, found before anything is allocated."""
from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.data.idx import DTYPES, read_idx, read_idx_images, read_idx_labels
from cnnkit.errors import CnnkitError


def write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> Path:
    """LeCun's layout: 00 00 <type> <dims>, big-endian uint32 sizes, big-endian values."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.dtype(DTYPES[code])).tobytes())
    return path


@pytest.mark.parametrize("code", sorted(DTYPES))
def test_every_type_reads_as_torchvision_reads_it(tmp_path: Path, code: int) -> None:
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    rng = np.random.default_rng(code)
    array = rng.integers(-100, 100, (3, 4, 5)).astype(np.dtype(DTYPES[code]).newbyteorder("="))
    if code == 0x08:
        array = rng.integers(0, 256, (3, 4, 5)).astype(np.uint8)
    path = write_idx(tmp_path / "x-idx3", array, code)
    ours, theirs = read_idx(path), read_sn3_pascalvincent_tensor(str(path), strict=False)
    assert ours.dtype.isnative and ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours, theirs.numpy())
    np.testing.assert_array_equal(ours, array)


def test_images_and_labels_are_torchvisions(tmp_path: Path) -> None:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    rng = np.random.default_rng(0)
    images = write_idx(tmp_path / "images-idx3-ubyte", rng.integers(0, 256, (7, 28, 28)).astype(np.uint8))
    labels = write_idx(tmp_path / "labels-idx1-ubyte", rng.integers(0, 10, 7).astype(np.uint8))
    assert torch.equal(torch.from_numpy(read_idx_images(images)), read_image_file(str(images)))
    assert torch.equal(torch.from_numpy(read_idx_labels(labels)).long(), read_label_file(str(labels)))


def test_a_header_claiming_2_31_items_allocates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x0E, 1, 2**31) + bytes(80))  # 2^31 float64s: 16 GiB
    tracemalloc.start()
    try:
        with pytest.raises(CnnkitError, match=r"shape \(2147483648,\) of 8-byte values, 17179869192 bytes in all, "
                                              "but the file has 88") as info:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value) and peak < 1 << 20


@pytest.mark.parametrize(("data", "message"), [
    (b"", "not an IDX file"),
    (b"\x00\x01\x08\x01", "not an IDX file"),
    (b"\x00\x00\x07\x01", "IDX type code 0x07 is unknown"),
    (b"\x00\x00\x08\x00", "gives 0 dimensions"),
    (b"\x00\x00\x08\x09", "gives 9 dimensions"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "header is cut short"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03ab", "but the file has 10"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01ab", "but the file has 10"),
    (b"\x00\x00\x08\x02\xff\xff\xff\xff\xff\xff\xff\xff",
     r"shape \(4294967295, 4294967295\) of 1-byte values, 18446744065119617037 bytes"),
])
def test_damaged_files_are_one_line_errors(tmp_path: Path, data: bytes, message: str) -> None:
    (tmp_path / "f").write_bytes(data)
    with pytest.raises(CnnkitError, match=message) as info:
        read_idx(tmp_path / "f")
    assert "\n" not in str(info.value) and str(tmp_path / "f") in str(info.value)


def test_images_must_be_bytes_of_three_dimensions(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "l", np.zeros(4, np.uint8))
    with pytest.raises(CnnkitError, match=r"holds uint8 \(N, H, W\); this one holds uint8 of shape \(4,\)"):
        read_idx_images(labels)
    floats = write_idx(tmp_path / "f", np.zeros(4), 0x0D)
    with pytest.raises(CnnkitError, match=r"holds uint8 \(N,\); this one holds float32"):
        read_idx_labels(floats)
    with pytest.raises(CnnkitError, match="cannot read the IDX file"):
        read_idx(tmp_path / "missing")
