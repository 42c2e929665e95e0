"""Datasets by name: `load_split(name, split)` -> uint8 images and int32 labels on the host.

"mnist" and "stacked_mnist" need no TensorFlow and no network (see mnist_sources); every name in
tfds_images.TFDS_IMAGE_DATASETS, or "tfds:<builder name>" for any other TFDS image dataset, goes
through TFDS's own builders and needs `pip install 'gan_jax[tf]'`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from gan_jax.data import stacked_mnist, tfds_images, transforms
from gan_jax.data.mnist_builder import GanJaxMnist

DATASET_NAMES = ("mnist", "stacked_mnist", *tfds_images.TFDS_IMAGE_DATASETS)
TFDS_PREFIX = "tfds:"  # "tfds:<name>" reaches any TFDS builder not listed in DATASET_NAMES

_READ_BLOCK = 1024  # records decoded per read; bounds the temporaries to about 1 MB


def check_name(name: str) -> None:
    """Raises ValueError listing the available names unless `name` is one."""
    if name in DATASET_NAMES or (name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX)):
        return
    raise ValueError(
        f"unknown dataset {name!r}; available: {', '.join(DATASET_NAMES)}, "
        f"or '{TFDS_PREFIX}<name>' for any other TFDS image dataset"
    )


def mnist_builder(
    *,
    data_dir: str | os.PathLike | None = None,
    mnist_dir: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
) -> GanJaxMnist:
    """The MNIST builder, prepared (from the first source that has the data) if it was not.

    data_dir: the TFDS data directory (None or "": TFDS's default, $TFDS_DATA_DIR or
    ~/tensorflow_datasets). mnist_dir, cache: see mnist_sources.find_mnist_files.
    """
    builder = GanJaxMnist(data_dir=data_dir or None, mnist_dir=mnist_dir, cache=cache)
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


def _mnist(split: str, *, data_dir, mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise ValueError(f"MNIST splits are 'train' and 'test', got {split!r}")
    builder = mnist_builder(data_dir=data_dir, mnist_dir=mnist_dir)
    return read_data_source(builder.as_data_source(split=split))


def load_split(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_shape: tuple[int, int, int] | None = None,
    seed: int = 0,
    mnist_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One split of a dataset, as host arrays, preparing the dataset on first use.

    Args:
      name: one of DATASET_NAMES, or "tfds:<name>".
      split: "train" or "test" (TFDS split names for TFDS datasets).
      data_dir: TFDS data directory; None or "" uses TFDS's default.
      image_shape: (H, W, C) to resize / convert channels to (transforms.to_image_shape);
        None keeps the dataset's own: (28, 28, 1) MNIST, (28, 28, 3) Stacked MNIST.
      seed: Stacked MNIST's construction seed (other datasets ignore it).
      mnist_dir: a directory of the four canonical MNIST IDX files, tried first when MNIST has
        to be prepared; None reads $GAN_JAX_MNIST_DIR.

    Returns images uint8 [N, H, W, C] and labels int32 [N]: digits 0..9 for MNIST, 100a + 10b + c
    (0..999) for Stacked MNIST (128,000 train / 10,000 test), the dataset's labels or zeros
    otherwise.
    """
    check_name(name)
    if name == "mnist":
        images, labels = _mnist(split, data_dir=data_dir, mnist_dir=mnist_dir)
    elif name == "stacked_mnist":
        digits, digit_labels = _mnist(split, data_dir=data_dir, mnist_dir=mnist_dir)
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
