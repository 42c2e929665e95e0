"""Each player's Optax optimiser, built from its config block (config.g_optimizer / d_optimizer)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gan_jax import config as config_lib
from gan_jax import schedules


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


def b2_schedule(
    opt_config: ml_collections.ConfigDict, *, burn_in_steps: int, updates_per_step: int = 1
) -> optax.Schedule | None:
    """Adam's b2 as a function of the player's update count, or None for a constant b2.

    With `opt_config.b2_start` set and a burn-in (`burn_in_steps` train steps > 0): b2_start
    rising to b2 along `schedules.cosine_ramp` (R3GAN: 0.9 -> 0.99, train.py in brownvc/R3GAN),
    counted in updates as the learning rate is (see `learning_rate_schedule`).
    """
    # None is config.LATER_KEYS' value: blocks saved before b2_start existed have no schedule.
    b2_start = opt_config.get("b2_start", None)
    if b2_start is None or burn_in_steps == 0:
        return None
    return schedules.cosine_ramp(
        float(b2_start), float(opt_config.b2), burn_in_steps * updates_per_step
    )


def build_optimizer(
    opt_config: ml_collections.ConfigDict,
    *,
    num_steps: int,
    updates_per_step: int = 1,
    burn_in_steps: int = 0,
) -> optax.GradientTransformation:
    """Adam(schedule, b1, b2), preceded by clipping to a global norm when grad_clip_norm > 0.

    `updates_per_step`: see `learning_rate_schedule`. `burn_in_steps`: the train steps of
    config.burn_in_steps, over which b2 ramps from opt_config.b2_start when that is set
    (`b2_schedule`).
    """
    learning_rate = learning_rate_schedule(
        opt_config, num_steps=num_steps, updates_per_step=updates_per_step
    )
    b2 = b2_schedule(opt_config, burn_in_steps=burn_in_steps, updates_per_step=updates_per_step)
    if b2 is None:
        adam = optax.adam(
            learning_rate,
            b1=float(opt_config.b1),
            b2=float(opt_config.b2),
            eps=float(opt_config.eps),
        )
    else:
        # inject_hyperparams evaluates b2 (and the learning rate) at its own update count and
        # keeps them in the optimiser state; plain Adam above keeps its state structure, so runs
        # without a b2 schedule, and their checkpoints, are unchanged. As in PyTorch's Adam
        # with betas changed between steps (R3GAN's loop), update t corrects its second moment
        # by 1 - b2_t ** t with the current b2_t.
        adam = optax.inject_hyperparams(optax.adam)(
            learning_rate=learning_rate, b1=float(opt_config.b1), b2=b2, eps=float(opt_config.eps)
        )
    if float(opt_config.grad_clip_norm) > 0.0:
        return optax.chain(optax.clip_by_global_norm(float(opt_config.grad_clip_norm)), adam)
    return adam


def build_optimizers(config: ml_collections.ConfigDict) -> Optimizers:
    """Both players' optimisers. The discriminator's schedule (its warmup and its decay) counts
    its n_critic updates a step."""
    config_lib.validate_config(config)
    burn_in_steps = schedules.burn_in_steps(config)
    return Optimizers(
        generator=build_optimizer(
            config.g_optimizer, num_steps=config.num_steps, burn_in_steps=burn_in_steps
        ),
        discriminator=build_optimizer(
            config.d_optimizer,
            num_steps=config.num_steps,
            updates_per_step=int(config.n_critic),
            burn_in_steps=burn_in_steps,
        ),
    )


def keeps_ema(config: ml_collections.ConfigDict) -> bool:
    """Whether the run keeps an EMA of the generator params: ema_decay > 0, or an EMA half-life
    (config.ema_half_life_images > 0)."""
    half_life = float(config_lib.setting(config, "ema_half_life_images"))
    return float(config.ema_decay) > 0.0 or half_life > 0.0


def ema_decay_of(step: jax.Array | int, *, config: ml_collections.ConfigDict):
    """The EMA decay of the generator update after `step` completed steps, as `config` sets it.

    config.ema_half_life_images = H > 0 (R3GAN's EMA, training/training_loop.py in
    brownvc/R3GAN): 0.5 ** (real_images_per_step / h), the half-life h ramping from 0 to H over
    config.burn_in_steps (`schedules.cosine_ramp`; H throughout without a burn-in). At h = 0
    the decay is 0: the EMA copies the live params. Else `ema_decay_at` with config.ema_decay
    and config.ema_rampup (the decay of runs made before half-lives existed, bit for bit).
    """
    half_life = float(config_lib.setting(config, "ema_half_life_images"))
    if half_life == 0.0:
        return ema_decay_at(
            step, decay=config.ema_decay, rampup=config_lib.setting(config, "ema_rampup")
        )
    # R3GAN counts its half-life in images seen, as the loop counts them (images/s).
    images = float(config_lib.real_images_per_step(config))
    burn_in_steps = schedules.burn_in_steps(config)
    if burn_in_steps == 0:
        return 0.5 ** (images / half_life)
    current = schedules.cosine_ramp(0.0, half_life, burn_in_steps)(step)
    # R3GAN's max(h, 1e-8): 0.5 ** (images / 1e-8) is 0, not a division by zero.
    return jnp.power(jnp.float32(0.5), images / jnp.maximum(current, 1e-8))


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
