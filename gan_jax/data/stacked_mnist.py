"""Stacked MNIST: three MNIST digits stacked as the channels of one 28x28x3 image (1,000 modes).

The mode-collapse benchmark of VEEGAN (Srivastava et al., 2017) and PacGAN (Lin et al., 2018):
each channel is an independently drawn MNIST digit and the label is 100 a + 10 b + c for digits
a, b, c in channels 0, 1, 2.

One deliberate choice: each channel first draws its digit class uniformly from 0..9 and then an
image uniformly among that class's images. Drawing images uniformly instead would inherit MNIST's
class imbalance (a "111" image would be 1.9x as frequent as a "555"), while the benchmark scores
the generated mode distribution against the uniform one (mode count, KL to uniform). With
class-first draws the 1,000 modes are equally likely.

The draws use numpy's Philox bit generator read as raw 64-bit words, whose stream numpy keeps
stable across versions (unlike Generator methods), so a seed gives the same dataset everywhere.
"""

from __future__ import annotations

import numpy as np

NUM_TRAIN = 128_000
NUM_TEST = 10_000
NUM_MODES = 1_000
IMAGE_SHAPE = (28, 28, 3)

_SPLIT_TAGS = {"train": 0, "test": 1}  # keep the splits' random streams apart


def _uniform_below(words: np.ndarray, bound: np.ndarray | int) -> np.ndarray:
    """uint64 random words -> integers in [0, bound), by the multiply-shift of their top 32 bits
    (bias below bound / 2**32, i.e. < 2e-5 for MNIST's class sizes)."""
    return (((words >> np.uint64(32)) * np.asarray(bound, np.uint64)) >> np.uint64(32)).astype(
        np.int64
    )


def stacked_indices(
    labels: np.ndarray, *, num_examples: int, seed: int, split: str = "train"
) -> np.ndarray:
    """Which MNIST image fills each channel: int64 [num_examples, 3], indices into `labels`.

    labels: int [N] digit labels of the MNIST split drawn from (all ten classes present).
    Deterministic in (seed, split, labels).
    """
    labels = np.asarray(labels)
    by_class = [np.flatnonzero(labels == k) for k in range(10)]
    if any(len(members) == 0 for members in by_class):
        raise ValueError("every digit class must be present to build Stacked MNIST")
    bit_generator = np.random.Philox(key=[seed & (2**64 - 1), _SPLIT_TAGS[split]])
    words = bit_generator.random_raw(2 * 3 * num_examples).reshape(2, num_examples, 3)
    classes = _uniform_below(words[0], 10)
    sizes = np.array([len(members) for members in by_class])
    within = _uniform_below(words[1], sizes[classes])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    members = np.concatenate(by_class)
    return members[offsets[classes] + within]


def make_stacked_mnist(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_examples: int,
    seed: int,
    split: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked MNIST from an MNIST split.

    Args:
      images: uint8 [N, 28, 28, 1] (or [N, 28, 28]) MNIST images.
      labels: int [N] their digits.
      num_examples: how many stacked images to build.
      seed: the dataset's seed; split: "train" or "test" (separate random streams).

    Returns images uint8 [num_examples, 28, 28, 3] and labels int32 [num_examples] in 0..999.
    Built channel by channel into one preallocated array (no full temporary copies).
    """
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    labels = np.asarray(labels)
    choice = stacked_indices(labels, num_examples=num_examples, seed=seed, split=split)
    out = np.empty((num_examples, *images.shape[1:], 3), np.uint8)
    block = 8192  # bounds the gather temporaries to a few MB
    for start in range(0, num_examples, block):
        rows = choice[start : start + block]
        for channel in range(3):
            out[start : start + block, ..., channel] = images[rows[:, channel]]
    digits = labels[choice].astype(np.int32)
    return out, digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
