"""Shared by the serve tests: one tiny trained run, real image files of several formats, a PNG bomb, and one
live server on a free loopback port (in a thread of this process, so its batcher's counters can be read)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """LeNet-5 trained for one epoch on 2 classes × 6 random 12×12 PNGs (a couple of seconds)."""
    from cnnkit import api
    from cnnkit.config import load_config

    root = tmp_path_factory.mktemp("serve_data") / "tiny"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    cfg = load_config(overrides={"data": {"source": str(root)}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 1, "batch_size": 4},
                                 "out": str(tmp_path_factory.mktemp("serve_runs") / "tiny")})
    return api.train(cfg).run_dir


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    """Real image files: PNG (RGB, grey), JPEG, BMP, WebP, GIF, of assorted sizes."""
    folder = tmp_path_factory.mktemp("serve_images")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    files = {"rgb.png": rgb, "grey.png": rng.integers(0, 256, (30, 30), dtype=np.uint8),
             "photo.jpg": rng.integers(0, 256, (64, 48, 3), dtype=np.uint8), "bitmap.bmp": rgb[:20],
             "web.webp": rgb[:, :32], "anim.gif": rgb[:16, :16]}
    out = {}
    for name, array in files.items():
        Image.fromarray(array).save(folder / name)
        out[name] = folder / name
    return out


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@pytest.fixture(scope="session")
def png_bomb(tmp_path_factory) -> Path:
    """A valid 20000×20000 black PNG (1-bit grey): a few KB on disk, 400 MB once decoded by PIL. Written row by
    row through one zlib stream, so making it needs no memory."""
    width = height = 20000
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + width // 8)  # filter byte 0, then 2500 bytes of black pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def truncated_png(tmp_path_factory) -> Path:
    """A PNG of noise cut in the middle of its compressed data (no IEND)."""
    path = tmp_path_factory.mktemp("truncated") / "cut.png"
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


@pytest.fixture(scope="session")
def service(tiny_run: Path):
    """The tiny run served on 127.0.0.1, a free port, default limits, in a background thread."""
    from cnnkit.serve.server import Service

    with Service(tiny_run, port=0, log_level="warning") as running:
        yield running
