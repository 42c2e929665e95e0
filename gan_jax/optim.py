"""Each player's Optax optimiser, built from its config block (config.g_optimizer / d_optimizer)."""

from __future__ import annotations

from typing import NamedTuple

import ml_collections
import optax

from gan_jax import config as config_lib


class Optimizers(NamedTuple):
    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation


def learning_rate_schedule(
    opt_config: ml_collections.ConfigDict, *, num_steps: int
) -> optax.Schedule:
    """The learning rate as a function of the player's update count."""
    peak = float(opt_config.learning_rate)
    if opt_config.schedule == "constant":
        return optax.constant_schedule(peak)
    if opt_config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, decay_steps=num_steps)
    if opt_config.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup_steps=int(opt_config.warmup_steps), decay_steps=num_steps
        )
    if opt_config.schedule == "linear":
        return optax.linear_schedule(peak, 0.0, transition_steps=num_steps)
    raise ValueError(f"unknown schedule {opt_config.schedule!r}")


def build_optimizer(
    opt_config: ml_collections.ConfigDict, *, num_steps: int
) -> optax.GradientTransformation:
    """Adam(schedule, b1, b2), preceded by clipping to a global norm when grad_clip_norm > 0."""
    adam = optax.adam(
        learning_rate_schedule(opt_config, num_steps=num_steps),
        b1=float(opt_config.b1),
        b2=float(opt_config.b2),
        eps=float(opt_config.eps),
    )
    if float(opt_config.grad_clip_norm) > 0.0:
        return optax.chain(optax.clip_by_global_norm(float(opt_config.grad_clip_norm)), adam)
    return adam


def build_optimizers(config: ml_collections.ConfigDict) -> Optimizers:
    """Both players' optimisers. The discriminator's schedule counts its n_critic updates a step."""
    config_lib.validate_config(config)
    return Optimizers(
        generator=build_optimizer(config.g_optimizer, num_steps=config.num_steps),
        discriminator=build_optimizer(
            config.d_optimizer, num_steps=config.num_steps * config.n_critic
        ),
    )
