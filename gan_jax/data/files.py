"""File helpers for datasets: the cache directory, sha256 checks, atomic writes.

Everything that lands in the cache is written to a temporary name in the same directory and
renamed into place only once complete, so an interrupted run never leaves a file that a later
run would mistake for a good one.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gan_jax import paths

ENV_CACHE_DIR = "GAN_JAX_CACHE_DIR"

_HASH_BLOCK = 1 << 20  # bytes read per update while hashing: large enough to be I/O bound


class ChecksumError(ValueError):
    """A file's sha256 is not the expected one."""


def cache_dir() -> Path:
    """The directory for downloads, absolute: $GAN_JAX_CACHE_DIR (`~` and relative paths
    allowed), else $XDG_CACHE_HOME/gan_jax, else ~/.cache/gan_jax. Not created here."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(paths.resolve(os.environ[ENV_CACHE_DIR]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(paths.resolve(base)) / "gan_jax"


def open_maybe_gzip(path: str | os.PathLike) -> BinaryIO:
    """Opens `path` for binary reading, decompressing on the fly when its name ends in .gz."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def sha256_of_stream(stream: BinaryIO) -> str:
    """Hex sha256 of everything left in `stream`, read in 1 MiB blocks (constant memory)."""
    digest = hashlib.sha256()
    while block := stream.read(_HASH_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def sha256_of_file(path: str | os.PathLike, *, decompress: bool = False) -> str:
    """Hex sha256 of a file's bytes, or of its decompressed bytes when `decompress` and the name
    ends in .gz (how an IDX file's identity survives being re-compressed)."""
    with open_maybe_gzip(path) if decompress else open(path, "rb") as stream:
        return sha256_of_stream(stream)


def check_sha256(actual: str, *, expected: str, path: str | os.PathLike, what: str = "") -> None:
    """Raises ChecksumError naming the file and both hashes unless `actual == expected`."""
    if actual != expected:
        detail = f" ({what})" if what else ""
        raise ChecksumError(
            f"sha256 mismatch for {os.fspath(path)}{detail}: expected {expected}, got {actual}. "
            "The file is corrupt, truncated or not the expected one; delete it and retry."
        )


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yields a binary file to write `path` through; renames it into place only on success.

    The temporary file lives in the same directory (so the rename is atomic) and is removed if
    the body raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
