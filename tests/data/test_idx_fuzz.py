"""Fuzzing the IDX reader (cnnkit.data.idx): headers of every magic, type code, dimension count and size (up to
2^32 - 1 a dimension), bodies of the right length or not, cut-short valid files and raw bytes. Each is an array
whose shape the header gave, or a one-line error; nothing is allocated from a header's claim."""
from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from tests.fuzzing import SIZES, clean, fuzz, mix

from cnnkit.data.idx import DTYPES, read_idx, read_idx_images, read_idx_labels

dimension = mix((8, st.integers(0, 6)), (1, st.integers(0, 2**32 - 1)), (1, st.sampled_from([2**31, 2**32 - 1])))


@st.composite
def idx_file(draw: st.DrawFn) -> bytes:
    """00 00 <type> <dims>, the sizes, then a body as long as they say, or a little shorter or longer."""
    magic = draw(mix((12, st.just(b"\0\0")), (1, st.binary(min_size=2, max_size=2))))
    code = draw(mix((10, st.sampled_from(sorted(DTYPES))), (1, st.integers(0, 255))))
    ndim = draw(mix((10, st.integers(1, 3)), (1, st.integers(0, 255))))
    dims = draw(st.lists(dimension, min_size=min(ndim, 5), max_size=min(ndim, 5)))
    header = magic + bytes([code, ndim]) + struct.pack(f">{len(dims)}I", *dims)
    size = int(np.prod(dims, dtype=object) or 0) * (np.dtype(DTYPES[code]).itemsize if code in DTYPES else 1)
    length = draw(mix((8, st.just(size)), (2, st.integers(max(size - 3, 0), size + 3)), (1, st.integers(0, 64))))
    body = draw(st.binary(min_size=min(length, 4096), max_size=min(length, 4096)))
    cut = draw(mix((10, st.none()), (1, st.integers(0, len(header) + len(body)))))
    return (header + body)[:cut]


files = mix((12, idx_file()), (1, st.binary(max_size=64)))


def read(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data-idx"
        path.write_bytes(data)
        array = clean(read_idx, path)
        if array is not None:
            dims = struct.unpack(f">{data[3]}I", data[4:4 + 4 * data[3]])
            assert array.shape == dims and array.dtype.isnative and array.nbytes == len(data) - 4 - 4 * data[3]
        clean(read_idx_images, path)
        clean(read_idx_labels, path)


@SIZES
def test_idx_reader_fuzz(examples: int) -> None:
    fuzz(examples, files, read)
