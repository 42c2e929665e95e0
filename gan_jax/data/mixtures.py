"""The 2-D Gaussian mixtures of the mode-collapse benchmarks: "ring" and "grid".

PacGAN (Lin et al., NeurIPS 2018), after VEEGAN (Srivastava et al., 2017), trains on a fixed
set of 100,000 points drawn from an equal-weight mixture of isotropic Gaussians:

- ring: 8 modes evenly spaced on the unit circle (the first at angle 0), std 0.01;
- grid: 25 modes at {-4, -2, 0, 2, 4}^2, std 0.05 (row-major: x varies slowest).

The label of a point is the index of the mode it was drawn from. The draws use numpy's Philox bit
generator read as raw 64-bit words (mode: multiply-shift of the top 32 bits; noise: Box-Muller
from two 53-bit uniforms), whose stream numpy keeps stable across versions, so a seed gives the
same points everywhere. The splits ("train", "test") have separate streams.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gan_jax.data.stacked_mnist import _uniform_below

NUM_TRAIN = 100_000  # PacGAN's fixed training set
NUM_TEST = 10_000
POINT_SHAPE = (2,)

_SPLIT_TAGS = {"train": 0, "test": 1}


class Mixture(NamedTuple):
    """An equal-weight mixture of isotropic 2-D Gaussians."""

    means: np.ndarray  # float64 [K, 2]
    std: float  # each coordinate's standard deviation, every mode


def _ring_means(num_modes: int = 8, radius: float = 1.0) -> np.ndarray:
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid_means(coordinates=(-4.0, -2.0, 0.0, 2.0, 4.0)) -> np.ndarray:
    xs, ys = np.meshgrid(coordinates, coordinates, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


MIXTURES = {
    "ring": Mixture(means=_ring_means(), std=0.01),
    "grid": Mixture(means=_grid_means(), std=0.05),
}


def mixture(name: str) -> Mixture:
    """The mixture called `name` ("ring" or "grid")."""
    if name not in MIXTURES:
        raise ValueError(f"unknown mixture {name!r}; available: {sorted(MIXTURES)}")
    return MIXTURES[name]


def _unit_interval(words: np.ndarray) -> np.ndarray:
    """uint64 words -> float64 in (0, 1]: the top 53 bits, shifted off zero (log is finite)."""
    return ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53


def make_points(
    name: str, *, num_examples: int, seed: int, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Points of mixture `name`: float32 [num_examples, 2] and their modes, int32 [num_examples].

    Deterministic in (name, num_examples, seed, split); the first n points of a longer draw are
    not the points of a shorter one (the words are drawn in blocks per quantity).
    """
    if split not in _SPLIT_TAGS:
        raise ValueError(f"the mixtures' splits are {sorted(_SPLIT_TAGS)}, got {split!r}")
    means, std = mixture(name)
    bit_generator = np.random.Philox(key=[seed & (2**64 - 1), _SPLIT_TAGS[split]])
    words = bit_generator.random_raw(3 * num_examples).reshape(3, num_examples)
    modes = _uniform_below(words[0], len(means))
    # Box-Muller: two independent standard normals from two uniforms.
    radius = np.sqrt(-2.0 * np.log(_unit_interval(words[1])))
    angle = 2.0 * np.pi * _unit_interval(words[2])
    noise = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    points = means[modes] + std * noise
    return points.astype(np.float32), modes.astype(np.int32)
