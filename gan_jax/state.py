"""The training state: one pytree of arrays, and its creation from a PRNG key and a config.

Nothing static lives here (modules, optimisers and config are bound to the step with keyword
arguments), so the state saves and restores as plain arrays, and no PRNG key is carried: the
randomness of step s is derived from (key, s), which makes resuming exact.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from gan_jax import models as models_lib
from gan_jax import optim


class TrainState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar: completed generator updates
    g_params: Any
    d_params: Any
    g_state: dict[str, Any]  # the generator's mutable collections, e.g. {"batch_stats": ...}
    d_state: dict[str, Any]
    g_opt_state: Any
    d_opt_state: Any
    g_ema_params: Any  # EMA of g_params; None when config.ema_decay == 0

    @property
    def sampling_params(self) -> Any:
        """The generator params to sample from: the EMA when kept, else the live params."""
        return self.g_params if self.g_ema_params is None else self.g_ema_params


def dummy_inputs(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array, Any]:
    """(z [1, latent], images [1, H, W, C], labels [1] or None) for shape-only initialisation."""
    z = jnp.zeros((1, config.latent_dim), jnp.float32)
    images = jnp.zeros((1, *config.image_shape), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32) if config.num_classes > 0 else None
    return z, images, labels


def create_train_state(
    key: jax.Array,
    config: ml_collections.ConfigDict,
    *,
    models: models_lib.Models | None = None,
    optimizers: optim.Optimizers | None = None,
) -> TrainState:
    """Initialises both players, their optimiser states and the EMA from `key`.

    `models` and `optimizers` default to those the config names; pass your own to train other
    architectures with the same step.
    """
    models = models or models_lib.build_models(config)
    optimizers = optimizers or optim.build_optimizers(config)
    g_key, d_key = jax.random.split(key)
    z, images, labels = dummy_inputs(config)
    g_params, g_state = models_lib.split_variables(
        models.generator.init(g_key, z, labels, train=False)
    )
    d_params, d_state = models_lib.split_variables(
        models.discriminator.init(d_key, images, labels, train=False)
    )
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_state=g_state,
        d_state=d_state,
        g_opt_state=optimizers.generator.init(g_params),
        d_opt_state=optimizers.discriminator.init(d_params),
        g_ema_params=(jax.tree.map(jnp.copy, g_params) if float(config.ema_decay) > 0.0 else None),
    )
