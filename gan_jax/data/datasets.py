"""Datasets by name: `load_split(name, split)` -> uint8 images (float32 points for the 2-D
mixtures) and int32 labels on the host.

"mnist" and "stacked_mnist" need no TensorFlow and no network (see mnist_sources), nor do "ring"
and "grid", which are generated (see mixtures); every name in
tfds_images.TFDS_IMAGE_DATASETS, or "tfds:<builder name>" for any other TFDS image dataset, goes
through TFDS's own builders and needs `pip install 'gan_jax[tf]'`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from gan_jax import paths
from gan_jax.config import POINT_DATASETS, ConfigError
from gan_jax.data import mixtures, stacked_mnist, tfds_images, transforms
from gan_jax.data.mnist_builder import GanJaxMnist

DATASET_NAMES = ("mnist", "stacked_mnist", *POINT_DATASETS, *tfds_images.TFDS_IMAGE_DATASETS)
TFDS_PREFIX = "tfds:"  # "tfds:<name>" reaches any TFDS builder not listed in DATASET_NAMES

_READ_BLOCK = 1024  # records decoded per read; bounds the temporaries to about 1 MB


def check_name(name: str) -> None:
    """Raises ConfigError (a ValueError) listing the available names unless `name` is one."""
    if name in DATASET_NAMES or (name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX)):
        return
    raise ConfigError(
        f"config.dataset: unknown dataset {name!r}; available: {', '.join(DATASET_NAMES)}, "
        f"or '{TFDS_PREFIX}<name>' for any other TFDS image dataset"
    )


class DamagedDatasetError(ValueError):
    """A prepared dataset's files cannot be read; the message names the directory and the fix."""


class _Unreadable(Exception):
    """Internal: the prepared MNIST at `directory` failed to open or read, for `reason`."""

    def __init__(self, directory: str, reason: str):
        super().__init__(reason)
        self.directory, self.reason = directory, reason


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _prepared_dir(data_dir: str | None) -> str:
    """Where GanJaxMnist keeps its prepared files for `data_dir` (TFDS's default when None)."""
    root = data_dir or tfds.core.constants.DATA_DIR
    return os.path.join(root, GanJaxMnist.name, str(GanJaxMnist.VERSION))


def _open_mnist_builder(
    *, data_dir: str | None, mnist_dir: str | None, cache: str | None
) -> GanJaxMnist:
    try:
        return GanJaxMnist(data_dir=data_dir or None, mnist_dir=mnist_dir, cache=cache)
    except MemoryError:
        raise
    except Exception as error:  # TFDS reads dataset_info.json here: a damaged one fails
        raise _Unreadable(_prepared_dir(data_dir), _describe(error)) from error


def mnist_builder(
    *,
    data_dir: str | os.PathLike | None = None,
    mnist_dir: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
) -> GanJaxMnist:
    """The MNIST builder, prepared (from the first source that has the data) if it was not.

    data_dir: the TFDS data directory (None or "": TFDS's default, $TFDS_DATA_DIR or
    ~/tensorflow_datasets); relative and `~` paths are resolved here, as are mnist_dir and
    cache (see mnist_sources.find_mnist_files).

    Raises DamagedDatasetError when a prepared copy's metadata cannot be read (see load_split
    for the repair).
    """
    data_dir, mnist_dir, cache = (paths.resolve(p) for p in (data_dir, mnist_dir, cache))
    try:
        return _prepared_mnist_builder(data_dir=data_dir, mnist_dir=mnist_dir, cache=cache)
    except _Unreadable as unreadable:
        raise DamagedDatasetError(_damaged_message(unreadable)) from unreadable.__cause__


def _prepared_mnist_builder(
    *, data_dir: str | None, mnist_dir: str | None, cache: str | None
) -> GanJaxMnist:
    builder = _open_mnist_builder(data_dir=data_dir, mnist_dir=mnist_dir, cache=cache)
    if not builder.is_prepared():
        # Statistics are skipped: TFDS computes them with TensorFlow.
        config = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
        builder.download_and_prepare(download_config=config)
    logging.info(
        "MNIST at %s, prepared from: %s",
        builder.data_dir,
        builder.info.metadata.get("source_description", "unknown source"),
    )
    return builder


def _damaged_message(unreadable: _Unreadable, *, moved_to: str | None = None) -> str:
    again = (
        f" It was moved aside to {moved_to} and prepared again, and the new copy cannot be read "
        "either: check the disk and the sources (config.mnist_dir / $GAN_JAX_MNIST_DIR)."
        if moved_to
        else ""
    )
    return (
        f"The prepared MNIST in {unreadable.directory} cannot be read ({unreadable.reason}).{again}"
        f" Move that directory aside (mv {unreadable.directory} "
        f"{unreadable.directory}.damaged) and rerun: MNIST is then prepared again from its "
        "sources, or pass another --config.data_dir."
    )


def read_data_source(source: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """A TFDS data source of {"image", "label"} records -> (uint8 [N, ...], int32 [N]).

    Decodes block by block into preallocated arrays, so memory peaks at one copy of the split
    plus a block.
    """
    num = len(source)
    first = source[0]
    images = np.empty((num, *np.shape(first["image"])), np.uint8)
    labels = np.empty((num,), np.int32)
    for start in range(0, num, _READ_BLOCK):
        stop = min(num, start + _READ_BLOCK)
        records = source.__getitems__(range(start, stop))
        for i, record in enumerate(records):
            images[start + i] = record["image"]
            labels[start + i] = record["label"]
    return images, labels


# Decoded MNIST splits of this process, by (prepared directory, split): TFDS decodes each of
# the 60,000 training records on its own (a PNG each, about 2-5 s on 2 cores), and a process that
# trains several runs (tests, notebooks, sweeps) would pay that on every run. An entry is reused
# only while the directory's files keep their names, sizes and modification times, so a copy
# prepared again or damaged on disk is read afresh. The arrays are read-only: every caller shares
# them.
_DECODED: dict[tuple[str, str], tuple[tuple, np.ndarray, np.ndarray]] = {}
_DECODED_MAX_ENTRIES = 4  # MNIST's train and test splits of two directories: about 110 MB


def _directory_signature(directory: str) -> tuple:
    with os.scandir(directory) as entries:
        stats = [(e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file()]
    return tuple(sorted(stats))


def _read_mnist(split: str, *, data_dir, mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    builder = _prepared_mnist_builder(data_dir=data_dir, mnist_dir=mnist_dir, cache=None)
    directory = os.fspath(builder.data_dir)
    try:
        signature = _directory_signature(directory)
        cached = _DECODED.get((directory, split))
        if cached is not None and cached[0] == signature:
            return cached[1], cached[2]
        images, labels = read_data_source(builder.as_data_source(split=split))
    except MemoryError:
        raise
    except Exception as error:  # array_record / TFDS raise RuntimeError, KeyError, OSError, ...
        raise _Unreadable(directory, _describe(error)) from error
    images.setflags(write=False)
    labels.setflags(write=False)
    while len(_DECODED) >= _DECODED_MAX_ENTRIES:
        del _DECODED[next(iter(_DECODED))]
    _DECODED[(directory, split)] = (signature, images, labels)
    return images, labels


def _move_aside(directory: str) -> str:
    """Renames a damaged prepared copy to `<directory>.damaged-<UTC time>` (never deletes it);
    TFDS ignores the new name, which is not a version."""
    target = f"{directory}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    os.rename(directory, target)
    return target


def _mnist(split: str, *, data_dir, mnist_dir, repair: bool) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise ValueError(f"MNIST splits are 'train' and 'test', got {split!r}")
    try:
        return _read_mnist(split, data_dir=data_dir, mnist_dir=mnist_dir)
    except _Unreadable as unreadable:
        if not repair or not os.path.isdir(unreadable.directory):
            raise DamagedDatasetError(_damaged_message(unreadable)) from unreadable.__cause__
        try:
            moved_to = _move_aside(unreadable.directory)
        except OSError as error:
            raise DamagedDatasetError(_damaged_message(unreadable)) from error
        logging.warning(
            "The prepared MNIST in %s cannot be read (%s); moved it aside to %s and preparing "
            "MNIST again.",
            unreadable.directory,
            unreadable.reason,
            moved_to,
        )
    try:
        return _read_mnist(split, data_dir=data_dir, mnist_dir=mnist_dir)
    except _Unreadable as again:
        raise DamagedDatasetError(_damaged_message(again, moved_to=moved_to)) from again.__cause__


def load_split(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_shape: tuple[int, int, int] | None = None,
    seed: int = 0,
    mnist_dir: str | None = None,
    repair: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One split of a dataset, as host arrays, preparing the dataset on first use.

    Args:
      name: one of DATASET_NAMES, or "tfds:<name>".
      split: "train" or "test" (TFDS split names for TFDS datasets).
      data_dir: TFDS data directory (relative and `~` paths allowed); None or "" uses TFDS's
        default.
      image_shape: (H, W, C) to resize / convert channels to (transforms.to_image_shape);
        None keeps the dataset's own: (28, 28, 1) MNIST, (28, 28, 3) Stacked MNIST.
      seed: the construction seed of Stacked MNIST and the mixtures (other datasets ignore it).
      mnist_dir: a directory of the four canonical MNIST IDX files, tried first when MNIST has
        to be prepared; None reads $GAN_JAX_MNIST_DIR.
      repair: when the prepared MNIST cannot be read (truncated or missing files), move it aside
        to `<dir>.damaged-<time>` and prepare it again, once, logging both. Pass False where
        several processes share the directory (they would race); DamagedDatasetError then says
        what to do.

    Returns images uint8 [N, H, W, C] and labels int32 [N]: digits 0..9 for MNIST, 100a + 10b + c
    (0..999) for Stacked MNIST (128,000 train / 10,000 test), the dataset's labels or zeros
    otherwise. The mixtures ("ring", "grid") return float32 points [N, 2] (100,000 train /
    10,000 test) and each point's mode index; image_shape must be None or (2,). MNIST's arrays
    at its own shape are read-only: the process keeps the decoded split and returns it to every
    caller (copy them to write).

    Raises:
      DamagedDatasetError: the prepared MNIST cannot be read (and, with `repair`, neither can a
        fresh copy); the message names the directory and how to rebuild it.
    """
    check_name(name)
    if name in POINT_DATASETS:
        if image_shape is not None and tuple(image_shape) != mixtures.POINT_SHAPE:
            raise ConfigError(
                f"config.image_shape: {name!r} holds 2-D points; set image_shape to (2,), got "
                f"{tuple(image_shape)}"
            )
        num = mixtures.NUM_TRAIN if split == "train" else mixtures.NUM_TEST
        return mixtures.make_points(name, num_examples=num, seed=seed, split=split)
    data_dir, mnist_dir = paths.resolve(data_dir), paths.resolve(mnist_dir)
    if name == "mnist":
        images, labels = _mnist(split, data_dir=data_dir, mnist_dir=mnist_dir, repair=repair)
    elif name == "stacked_mnist":
        digits, digit_labels = _mnist(split, data_dir=data_dir, mnist_dir=mnist_dir, repair=repair)
        num = stacked_mnist.NUM_TRAIN if split == "train" else stacked_mnist.NUM_TEST
        images, labels = stacked_mnist.make_stacked_mnist(
            digits, digit_labels, num_examples=num, seed=seed, split=split
        )
        del digits
    else:
        tfds_name = name.removeprefix(TFDS_PREFIX)
        return tfds_images.load_tfds_split(
            tfds_name, split, data_dir=data_dir, image_shape=image_shape
        )
    return transforms.to_image_shape(images, image_shape), labels
