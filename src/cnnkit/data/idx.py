"""IDX files (LeCun's MNIST format), read safely: the header is checked against the file's length before a
single item is read, so a hostile or truncated file is a one-line CnnkitError, never an assertion, a hang or
a 2^31-item allocation.

    images = read_idx_images(Path("train-images-idx3-ubyte"))   # uint8 (N, H, W)
    labels = read_idx_labels(Path("train-labels-idx1-ubyte"))   # uint8 (N,)

The layout: two zero bytes, a type code, the number of dimensions D, D big-endian uint32 sizes, then the
values, big-endian, row-major. The arrays are what torchvision's reader returns (in native byte order).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnkit.errors import CnnkitError

# type code → big-endian numpy dtype (torchvision.datasets.mnist.SN3_PASCALVINCENT_TYPEMAP)
DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_DIMS = 4  # MNIST and its variants use 1 (labels) or 3 (images)


def read_idx(path: Path) -> np.ndarray:
    """The array of an IDX file, in native byte order; any fault of the file is a one-line CnnkitError."""
    try:
        with path.open("rb") as f:
            header = f.read(4)
            if len(header) < 4 or header[:2] != b"\0\0":
                raise CnnkitError(f"{path}: not an IDX file (its first bytes are {header[:4]!r}, not 00 00 <type> "
                                  "<dims>)")
            code, ndim = header[2], header[3]
            if code not in DTYPES:
                raise CnnkitError(f"{path}: IDX type code 0x{code:02x} is unknown; expected one of "
                                  f"{', '.join(f'0x{c:02x}' for c in DTYPES)}")
            if not 1 <= ndim <= MAX_DIMS:
                raise CnnkitError(f"{path}: the IDX header gives {ndim} dimensions; expected 1 to {MAX_DIMS}")
            raw = f.read(4 * ndim)
            if len(raw) < 4 * ndim:
                raise CnnkitError(f"{path}: the IDX header is cut short (its {ndim} sizes are missing)")
            shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4"))
            dtype = np.dtype(DTYPES[code])
            expected = 4 + 4 * ndim + int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow
            size = os.fstat(f.fileno()).st_size
            if size != expected:  # checked before reading: a header claiming 2^31 items allocates nothing
                raise CnnkitError(f"{path}: the IDX header gives shape {shape} of {dtype.itemsize}-byte values, "
                                  f"{expected} bytes in all, but the file has {size}; it is damaged or not IDX")
            body = f.read()
    except OSError as err:
        raise CnnkitError(f"{path}: cannot read the IDX file ({err.strerror or err})") from None
    if len(body) != expected - 4 - 4 * ndim:  # the file changed while it was read
        raise CnnkitError(f"{path}: the IDX file changed while it was read; read it again")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 (N, H, W) images, as torchvision's read_image_file."""
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise CnnkitError(f"{path}: an IDX image file holds uint8 (N, H, W); this one holds {array.dtype} of shape "
                          f"{array.shape}")
    return array


def read_idx_labels(path: Path) -> np.ndarray:
    """uint8 (N,) labels, as torchvision's read_label_file (which returns them as int64)."""
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != 1:
        raise CnnkitError(f"{path}: an IDX label file holds uint8 (N,); this one holds {array.dtype} of shape "
                          f"{array.shape}")
    return array
