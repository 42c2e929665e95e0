"""The IDX file format of the canonical MNIST files: read (whole or streamed) and write.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order. MNIST uses type 0x08 (uint8) only.
Files whose name ends in .gz are decompressed on the fly.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from gan_jax.data import files

_UINT8 = 0x08


def read_header(stream: BinaryIO) -> tuple[int, ...]:
    """Reads an IDX header from `stream` and returns the shape; only uint8 files are accepted."""
    magic = stream.read(4)
    if len(magic) != 4 or magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"not an IDX file (magic {magic!r})")
    if magic[2] != _UINT8:
        raise ValueError(f"IDX type code {magic[2]:#04x} is not uint8 (0x08)")
    ndim = magic[3]
    return struct.unpack(f">{ndim}I", stream.read(4 * ndim))


def read(path: str | os.PathLike) -> np.ndarray:
    """The whole array in an IDX file (raw or .gz) as uint8 of the shape its header gives."""
    with files.open_maybe_gzip(path) as stream:
        shape = read_header(stream)
        data = stream.read()
    count = int(np.prod(shape))
    if len(data) != count:
        raise ValueError(f"{os.fspath(path)}: header says {count} values, found {len(data)}")
    return np.frombuffer(data, np.uint8).reshape(shape)


def iter_rows(path: str | os.PathLike, *, chunk: int = 4096) -> Iterator[np.ndarray]:
    """Streams an IDX file's leading-axis rows in blocks of up to `chunk`.

    Yields uint8 arrays [n <= chunk, *shape[1:]]; never holds more than one block, so a split can
    be converted to another format without a full copy of it in memory.
    """
    with files.open_maybe_gzip(path) as stream:
        shape = read_header(stream)
        row_size = int(np.prod(shape[1:]))
        remaining = shape[0]
        while remaining:
            n = min(chunk, remaining)
            data = stream.read(n * row_size)
            if len(data) != n * row_size:
                raise ValueError(f"{os.fspath(path)}: truncated IDX file")
            yield np.frombuffer(data, np.uint8).reshape((n, *shape[1:]))
            remaining -= n


def write(stream: BinaryIO, array: np.ndarray) -> None:
    """Writes a uint8 array as an (uncompressed) IDX file to `stream`."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX writing supports uint8 only, got {array.dtype}")
    stream.write(bytes([0, 0, _UINT8, array.ndim]))
    stream.write(struct.pack(f">{array.ndim}I", *array.shape))
    stream.write(np.ascontiguousarray(array).tobytes())
