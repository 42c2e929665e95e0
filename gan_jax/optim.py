"""Each player's Optax optimiser, built from its config block (config.g_optimizer / d_optimizer)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gan_jax import config as config_lib


class Optimizers(NamedTuple):
    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation


def learning_rate_schedule(
    opt_config: ml_collections.ConfigDict, *, num_steps: int, updates_per_step: int = 1
) -> optax.Schedule:
    """The learning rate as a function of the player's update count.

    `num_steps` and `opt_config.warmup_steps` count train steps; a player that updates
    `updates_per_step` times a step (the discriminator, n_critic) has both scaled, so that its
    schedule at update `updates_per_step * t` is the other player's at step t.
    """
    peak = float(opt_config.learning_rate)
    num_steps = num_steps * updates_per_step
    if opt_config.schedule == "constant":
        return optax.constant_schedule(peak)
    if opt_config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, decay_steps=num_steps)
    if opt_config.schedule == "warmup_cosine":
        warmup = int(opt_config.warmup_steps) * updates_per_step
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup_steps=warmup, decay_steps=num_steps
        )
    if opt_config.schedule == "linear":
        return optax.linear_schedule(peak, 0.0, transition_steps=num_steps)
    raise ValueError(f"unknown schedule {opt_config.schedule!r}")


def build_optimizer(
    opt_config: ml_collections.ConfigDict, *, num_steps: int, updates_per_step: int = 1
) -> optax.GradientTransformation:
    """Adam(schedule, b1, b2), preceded by clipping to a global norm when grad_clip_norm > 0.

    `updates_per_step`: see `learning_rate_schedule`.
    """
    adam = optax.adam(
        learning_rate_schedule(opt_config, num_steps=num_steps, updates_per_step=updates_per_step),
        b1=float(opt_config.b1),
        b2=float(opt_config.b2),
        eps=float(opt_config.eps),
    )
    if float(opt_config.grad_clip_norm) > 0.0:
        return optax.chain(optax.clip_by_global_norm(float(opt_config.grad_clip_norm)), adam)
    return adam


def build_optimizers(config: ml_collections.ConfigDict) -> Optimizers:
    """Both players' optimisers. The discriminator's schedule (its warmup and its decay) counts
    its n_critic updates a step."""
    config_lib.validate_config(config)
    return Optimizers(
        generator=build_optimizer(config.g_optimizer, num_steps=config.num_steps),
        discriminator=build_optimizer(
            config.d_optimizer,
            num_steps=config.num_steps,
            updates_per_step=int(config.n_critic),
        ),
    )


def ema_decay_at(step: jax.Array | int, *, decay: float, rampup: bool) -> jax.Array | float:
    """The EMA decay of the update after `step` completed generator updates.

    With `rampup`, min(decay, (1 + step) / (10 + step)), the num_updates ramp of TensorFlow's
    ExponentialMovingAverage: early updates forget the random initialisation fast, and the
    initialisation's weight after N updates is prod_{t<N} decay_t <= 9! N! / (N + 9)!
    (1.1e-5 after 10, 1.0e-7 after 20), where a constant 0.995 leaves 37% after 200. Without,
    `decay` (a Python float: the arithmetic of runs made before the ramp existed).
    """
    if not rampup:
        return decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))
