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

from gan_jax import config as config_lib
from gan_jax import models as models_lib
from gan_jax import optim, packing

# The randomness of the EMA generator's standing statistics: a fixed stream of the run's seed,
# so a grid or an evaluation is a function of the state alone (and the same after a resume).
STANDING_STATS_STREAM = 0x5354414E  # "STAN"


class TrainState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar: completed generator updates
    g_params: Any
    d_params: Any
    g_state: dict[str, Any]  # the generator's mutable collections, e.g. {"batch_stats": ...}
    d_state: dict[str, Any]
    g_opt_state: Any
    d_opt_state: Any
    g_ema_params: Any  # EMA of g_params; None without one (optim.keeps_ema)

    @property
    def sampling_params(self) -> Any:
        """The generator params to sample from: the EMA when kept, else the live params.

        Sample with `sampling_variables`, which pairs them with their BatchNorm statistics."""
        return self.g_params if self.g_ema_params is None else self.g_ema_params


def sampling_variables(
    state: TrainState,
    *,
    models: models_lib.Models,
    config: ml_collections.ConfigDict,
    key: jax.Array | None = None,
) -> tuple[Any, dict[str, Any]]:
    """(params, mutable collections) of the generator to sample from, in inference mode.

    The EMA params when the run keeps them, with BatchNorm statistics of their own: standing
    statistics recomputed from the EMA params (`models.standing_statistics`, over
    config.ema_standing_stats_batches batches of the generator's training batch, batch_size x
    pack latents, drawn from `key`, default a fixed stream of config.seed). The live generator's
    running averages belong to other params (and lag them), so sampling the EMA with them
    measures the mismatch. Without EMA, or with ema_standing_stats_batches == 0, or for
    generators without BatchNorm: the sampling params with `state.g_state` as it is.

    Pure and jit-able; the training loop's sample grids and `evaluate.sampler_from_state` both
    sample with it. Pass one device's copy of a pmap-replicated state.
    """
    num_batches = int(config_lib.setting(config, "ema_standing_stats_batches"))
    if state.g_ema_params is None or num_batches == 0 or "batch_stats" not in state.g_state:
        return state.sampling_params, state.g_state
    if key is None:
        key = jax.random.fold_in(jax.random.key(int(config.seed)), STANDING_STATS_STREAM)
    g_state = models_lib.standing_statistics(
        models.generator,
        state.g_ema_params,
        state.g_state,
        key,
        num_batches=num_batches,
        batch_size=int(config.batch_size) * int(config_lib.setting(config, "pack")),
        latent_dim=int(config.latent_dim),
        num_classes=int(config.num_classes),
    )
    return state.g_ema_params, g_state


def dummy_inputs(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array, Any]:
    """(z [1, latent], images [1, H, W, C * pack], labels [1] or None) for shape-only
    initialisation; `images` is one discriminator input: a pack of config.pack images."""
    z = jnp.zeros((1, config.latent_dim), jnp.float32)
    m = int(config_lib.setting(config, "pack"))
    images = jnp.zeros((1, *packing.packed_shape(tuple(config.image_shape), m)), jnp.float32)
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
        g_ema_params=(jax.tree.map(jnp.copy, g_params) if optim.keeps_ema(config) else None),
    )
