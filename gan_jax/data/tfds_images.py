"""Any other TFDS image dataset (fashion_mnist, cifar10, celeb_a, ...) through TFDS's own builders.

Those builders store `Image` features, which need TensorFlow to prepare and decode, so this path
needs the optional extra: `pip install 'gan_jax[tf]'`. Images are converted with the same host
functions as MNIST (transforms.to_image_shape): uint8, resized to the requested (H, W, C).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from gan_jax.data import transforms

# Image datasets known to work through this path (any TFDS builder with an "image" feature does;
# these are the ones GAN papers use). Names are TFDS's.
TFDS_IMAGE_DATASETS = (
    "fashion_mnist",
    "kmnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "celeb_a",
)

_BATCH = 1024  # examples per tf.data batch while copying a split into numpy


class MissingTensorFlowError(ImportError):
    """A dataset needs TensorFlow, which is not installed."""


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported (checked without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


def require_tensorflow(name: str) -> None:
    """Raises MissingTensorFlowError, saying how to install it, unless TensorFlow is present."""
    if not tensorflow_available():
        raise MissingTensorFlowError(
            f"dataset {name!r} is read through TFDS's own builder, whose Image features need "
            "TensorFlow, which is not installed. Install the optional extra: "
            "pip install 'gan_jax[tf]'  (the 'mnist' and 'stacked_mnist' datasets need no "
            "TensorFlow)."
        )


def load_tfds_split(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A TFDS image dataset's split as numpy, prepared on first use (needs TensorFlow).

    Returns images uint8 [N, H, W, C] (resized to image_shape when given) and labels int32 [N]
    (the "label" feature, or zeros when the dataset has none, e.g. celeb_a). The split is copied
    batch by batch into one preallocated array, in TFDS's deterministic file order.
    """
    require_tensorflow(name)
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir or None)
    builder.download_and_prepare()
    num_examples = builder.info.splits[split].num_examples
    dataset = builder.as_dataset(split=split, shuffle_files=False, batch_size=_BATCH)
    images = labels = None
    start = 0
    for batch in tfds.as_numpy(dataset):
        block = transforms.to_image_shape(batch["image"], image_shape)
        if images is None:
            images = np.empty((num_examples, *block.shape[1:]), np.uint8)
            labels = np.zeros((num_examples,), np.int32)
        stop = start + len(block)
        images[start:stop] = block
        if "label" in batch:
            labels[start:stop] = batch["label"]
        start = stop
    if images is None or start != num_examples:
        raise ValueError(f"{name}/{split}: read {start} examples, expected {num_examples}")
    return images, labels
