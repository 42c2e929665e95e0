"""PacGAN packing (Lin et al., NeurIPS 2018): the discriminator judges packs of m samples.

With `config.pack = m`, a train step draws m * batch_size real images and m * batch_size
generator samples (`config.batch_size` counts packs), and the discriminator sees each group of m
consecutive samples concatenated in order along the last axis: channels for images, features
for vectors. Only the discriminator's first layer grows (Flax infers its input size); every
other width stays. m = 1 leaves the samples as they are.

Consecutive samples make a pack so that a data-parallel split of the leading axis, which keeps
each device's rows contiguous, keeps whole packs on one device: the packs, and therefore the
step, do not depend on the number of devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pack(samples: jax.Array, m: int) -> jax.Array:
    """[P * m, ..., C] -> [P, ..., m * C]: pack p is samples p*m .. p*m + m - 1, concatenated
    along the last axis in that order (sample j of the pack fills channels j*C .. j*C + C - 1)."""
    if m == 1:
        return samples
    count, *inner, channels = samples.shape
    if count % m:
        raise ValueError(
            f"{count} samples do not make packs of {m}: the number of samples must be a "
            "multiple of config.pack"
        )
    grouped = samples.reshape(count // m, m, *inner, channels)
    # Move the pack's member axis next to the channels, then merge the two.
    grouped = jnp.moveaxis(grouped, 1, -2)
    return grouped.reshape(count // m, *inner, m * channels)


def packed_shape(sample_shape: tuple[int, ...], m: int) -> tuple[int, ...]:
    """The shape of one pack of m samples of `sample_shape` (the discriminator's input)."""
    *inner, channels = sample_shape
    return (*inner, m * channels)
